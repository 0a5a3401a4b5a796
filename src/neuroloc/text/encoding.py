"""One tokenization path for every consumer: recorder, scorer, attribution, features.

The BOS policy is explicit and recorded in manifests:

- ``prepend`` (default): the tokenizer's BOS token (else its EOS) in front of every text, the text itself
  without special tokens — what lm-evaluation-harness does for an empty context, so the first word is
  conditioned on something and every position sees the same kind of sequence start;
- ``tokenizer``: the tokenizer's own defaults (with or without a BOS depending on the tokenizer) — what
  neuroloc 0.1's localizer, brain-score and the LangNet code do;
- ``none``: the text's tokens only.

Batches are length-sorted (longest first, so memory errors show early), carry the example ids of their
rows, and position ids counted over real tokens, so neither padding side nor batch size changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import NeurolocError
from ..settings import BOS_POLICIES


def check_bos(policy: str) -> str:
    if policy not in BOS_POLICIES:
        raise NeurolocError(f"unknown BOS policy {policy!r}; choose one of {', '.join(BOS_POLICIES)}")
    return policy


def prepends_bos(policy: str) -> bool:
    """Whether the policy puts a BOS token of neuroloc's own before every text (so the first token
    of a sequence is never the text's)."""
    return check_bos(policy) == "prepend"


def bos_id(tokenizer) -> int:
    """The token that starts every sequence under the `prepend` policy: BOS, else EOS."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise NeurolocError(
        f"{type(tokenizer).__name__} has neither a BOS nor an EOS token to start sequences with; "
        "set tokenizer.bos_token, or use the BOS policy 'none' (--bos none)"
    )


@dataclass(frozen=True)
class Encoded:
    """Token ids of each text, with (start, end) character offsets and a special-token flag per token.

    `n_prefix[i]` counts the tokens in front of text i's first own token (the prepended BOS, or the
    tokenizer's own leading special tokens).
    """

    input_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]
    policy: str

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(tokenizer, texts: Sequence[str], *, bos: str, max_tokens: int | None = None) -> Encoded:
    """Tokenize `texts` under a BOS policy; `max_tokens` truncates each text's own tokens."""
    check_bos(bos)
    texts = list(texts)
    try:
        raw = tokenizer(texts, add_special_tokens=bos == "tokenizer", return_offsets_mapping=True,
                        return_special_tokens_mask=True, truncation=max_tokens is not None, max_length=max_tokens)
    except NotImplementedError as error:
        raise NeurolocError(
            f"{type(tokenizer).__name__} cannot report character offsets; load a fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))"
        ) from error
    ids = [list(row) for row in raw["input_ids"]]
    offsets = [[tuple(o) for o in row] for row in raw["offset_mapping"]]
    special = [list(row) for row in raw["special_tokens_mask"]]
    if prepends_bos(bos):
        first = bos_id(tokenizer)
        ids = [[first, *row] for row in ids]
        offsets = [[(0, 0), *row] for row in offsets]
        special = [[1, *row] for row in special]
    return Encoded(ids, offsets, special, bos)


def check_readable(encoded: Encoded, texts: Sequence[str], tokenizer, context: int | None) -> None:
    """Refuse what a model cannot read: a text longer than its `context` (positions beyond it are
    extrapolated, not read; naming the text and the way out), or texts whose own tokens are mostly the
    tokenizer's unknown token (statistics of one token say nothing about the texts)."""
    lengths = encoded.lengths()
    if isinstance(context, int) and context > 0 and lengths and max(lengths) > context:  # ≤ 0: no limit (XLNet)
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        start = texts[longest][:40] + ("…" if len(texts[longest]) > 40 else "")
        raise NeurolocError(f"text {longest} ({start!r}) is {lengths[longest]} tokens long but the model reads at "
                            f"most {context} positions; give --max-tokens {context} to truncate, or split long texts")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    own = [token for ids, special in zip(encoded.input_ids, encoded.special)
           for token, flag in zip(ids, special) if not flag]
    unknown = sum(token == unk for token in own)
    if own and unknown * 2 > len(own):
        raise NeurolocError(f"the tokenizer maps {unknown / len(own):.0%} of the texts' tokens to its unknown token "
                            f"{tokenizer.unk_token!r}; use a model whose vocabulary covers these texts")


@dataclass
class Batch:
    """One padded batch: model inputs plus the example ids (positions in the encoded list) of its rows.
    `own` marks the texts' own tokens: real (not padding) and not special (not a prepended BOS)."""

    example_ids: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]
    padding_side: str
    own: torch.Tensor

    def inputs(self, device: torch.device | str | None = None, *, position_ids: bool = True) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward, on `device`."""
        batch = {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device)}
        if position_ids:
            batch["position_ids"] = self.position_ids.to(device)
        return batch

    def real_positions(self, row: int) -> torch.Tensor:
        """Column indices of row `row`'s real (unpadded) tokens."""
        return torch.nonzero(self.attention_mask[row]).flatten()


def pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def length_order(encoded: Encoded) -> list[int]:
    """Example ids sorted longest first (ties by id), so batches pad little."""
    lengths = encoded.lengths()
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def batches(encoded: Encoded, batch_size: int, *, pad: int, padding_side: str = "right",
            order: Sequence[int] | None = None) -> Iterator[Batch]:
    """Padded batches in length-sorted order (or `order`), with real-token position ids."""
    if batch_size < 1:
        raise NeurolocError(f"batch size must be ≥ 1, got {batch_size}")
    if padding_side not in ("left", "right"):
        raise NeurolocError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    order = length_order(encoded) if order is None else list(order)
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        width = max(len(encoded.input_ids[i]) for i in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        own = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, i in enumerate(ids):
            tokens = encoded.input_ids[i]
            columns = slice(0, len(tokens)) if padding_side == "right" else slice(width - len(tokens), width)
            tokens_and_flags = torch.tensor([tokens, encoded.special[i]], dtype=torch.long)
            input_ids[row, columns] = tokens_and_flags[0]
            own[row, columns] = tokens_and_flags[1] == 0
            mask[row, columns] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        yield Batch(ids, input_ids, mask, positions, [encoded.offsets[i] for i in ids],
                    [encoded.special[i] for i in ids], padding_side, own)
