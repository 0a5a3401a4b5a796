"""Per-token log-probabilities of texts under a causal LM: the one scorer every benchmark shares.

Every token of a text is scored by conditioning on a leading BOS token (the tokenizer's BOS, else its
EOS), as lm-evaluation-harness does for an empty context. Texts are sorted by length so that a batch
pads little, padded on the right with an explicit attention mask, and the original order restored:
padding never changes an answer beyond float noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import NeurolocError


@dataclass(frozen=True)
class TextScore:
    """One text's tokens, their log-probabilities (nats, float64) and (start, end) character offsets.

    `logprobs[i]` is ln p(token i | BOS, tokens before i); `offsets[i]` locates token i in `text`.
    """

    text: str
    token_ids: np.ndarray
    logprobs: np.ndarray
    offsets: np.ndarray

    @property
    def total(self) -> float:
        """Log-probability of the whole text (nats)."""
        return float(self.logprobs.sum())

    def __len__(self) -> int:
        return len(self.logprobs)


def token_logprobs(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    prepend_bos: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[TextScore]:
    """Score every token of every text, in the order given.

    With `prepend_bos=False` the first token only conditions the rest and is left out of the score.
    `progress(n_done)` is called after each batch with the number of texts scored so far. The model
    may carry hooks (lesions); it is only called, never changed. log p is computed as
    logit(target) - logsumexp(logits) in float32 on the real (unpadded) positions, so a bfloat16 model
    never has a full-vocabulary log_softmax materialised.
    """
    texts = list(texts)
    if batch_size < 1:
        raise NeurolocError(f"batch_size must be at least 1, got {batch_size}")
    if not texts:
        return []
    ids, offsets = _encode(tokenizer, texts)
    context = [_bos_id(tokenizer)] if prepend_bos else []
    sequences = [context + row for row in ids]
    skip = 0 if prepend_bos else 1  # tokens that are context only
    _check_length(model, sequences)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = 0 if pad_id is None else pad_id
    device = model.get_input_embeddings().weight.device

    results: list[TextScore | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(sequences[i]))  # longest first: OOM shows early
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            scores = _score_batch(model, [sequences[i] for i in batch], pad_id, device)
            for i, lp in zip(batch, scores):
                results[i] = TextScore(
                    text=texts[i],
                    token_ids=np.asarray(ids[i][skip:], dtype=np.int64),
                    logprobs=lp,
                    offsets=np.asarray(offsets[i][skip:], dtype=np.int64).reshape(-1, 2),
                )
            if progress is not None:
                progress(start + len(batch))
    return results


def _score_batch(model: torch.nn.Module, sequences: list[list[int]], pad_id: int,
                 device: torch.device) -> list[np.ndarray]:
    """Log-probabilities of tokens 1.. of each sequence, one right-padded forward pass."""
    lengths = [len(seq) for seq in sequences]
    width = max(lengths)
    if width < 2:
        return [np.zeros(0, dtype=np.float64) for _ in sequences]
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    valid = mask[:, 1:].bool()
    picked = logits[:, :-1][valid.to(logits.device)].float()  # (real positions, vocab)
    targets = input_ids[:, 1:][valid].to(picked.device)
    logprobs = picked.gather(-1, targets[:, None]).squeeze(-1) - picked.logsumexp(-1)
    flat = logprobs.double().cpu().numpy()
    return np.split(flat, np.cumsum([max(n - 1, 0) for n in lengths])[:-1])


def _encode(tokenizer, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and character offsets of each text, without special tokens."""
    try:
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise NeurolocError(
            f"{type(tokenizer).__name__} cannot report character offsets; load a fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))"
        ) from err
    return encoded["input_ids"], encoded["offset_mapping"]


def _bos_id(tokenizer) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise NeurolocError(
        f"{type(tokenizer).__name__} has neither a BOS nor an EOS token to condition the first token on; "
        "set tokenizer.bos_token, or pass prepend_bos=False to leave each text's first token unscored"
    )


def _check_length(model: torch.nn.Module, sequences: list[list[int]]) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
    if isinstance(limit, int) and len(sequences[longest]) > limit:
        raise NeurolocError(
            f"text {longest} is {len(sequences[longest])} tokens long (with BOS) but the model takes at most "
            f"{limit} positions; split long texts into sentences or paragraphs"
        )
