"""The batched recorder: run texts through the hooked model and reduce each site on the fly.

Only pooled rows and per-text token statistics leave the hooks (never a full batch × tokens × units
tensor per site), texts are encoded once through `neuroloc.text.encoding` (one BOS policy for every
consumer) and length-sorted to cut padding, and the forward pass stops after the last layer needed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..errors import NeurolocError
from ..models.batching import MicroBatcher
from ..models.hooks import HookContext, hooks, run_forward
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..text.alignment import align_words
from ..text.encoding import Batch, batches, check_bos, check_readable, encode, length_order, pad_id
from .pooling import WORD_POOLINGS, PoolPlan, check_pooling, head_norms, pool, text_plan, word_plan
from .routed import RoutedGroup, RoutedRows


@dataclass
class PooledBatch:
    """One batch's reductions. `rows[i]` = (text index, word index or -1) of row i of every site's
    `features`; `texts` lists the batch's text indices, which index the per-text token statistics over
    each text's counted tokens (its own tokens — never padding, nor special tokens such as a prepended BOS
    — from its `count_from` offset on): `token_positive[site][j]` counts text j's tokens with activation
    > 0 per coordinate, `token_sums[site][j]` sums its activations and `token_positive_sums[site][j]`
    their positive parts (float64), `token_counts[j]` counts its tokens.

    `expert` sites see only the tokens routed to their expert: `present[site]` (bool over `rows`) says
    which rows the expert saw (a row pools the routed tokens of its span), `features[site]` holds those
    rows only, and `routed_counts[site][j]` counts text j's counted tokens routed there (what its token
    statistics count instead of `token_counts`); `routed` holds the same, a layer's experts side by side
    (`record.routed.RoutedGroup`), as the store takes them."""

    rows: list[tuple[int, int]]
    features: dict[Site, torch.Tensor]
    texts: list[int] = field(default_factory=list)
    token_positive: dict[Site, torch.Tensor] = field(default_factory=dict)
    token_sums: dict[Site, torch.Tensor] = field(default_factory=dict)
    token_positive_sums: dict[Site, torch.Tensor] = field(default_factory=dict)
    token_counts: torch.Tensor | None = None
    present: dict[Site, torch.Tensor] = field(default_factory=dict)
    routed_counts: dict[Site, torch.Tensor] = field(default_factory=dict)
    routed: list[RoutedGroup] = field(default_factory=list)


def takes_position_ids(model: torch.nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def takes_use_cache(model: torch.nn.Module) -> bool:
    return "use_cache" in inspect.signature(model.forward).parameters


def counted_tokens(batch: Batch, count_from: Sequence[int] | None) -> torch.Tensor:
    """The tokens token statistics count (batch, tokens): each text's own tokens, and with `count_from`
    (a character offset per text, indexed by example id) only those ending after it — a response after
    its prompt, a token straddling the two counting as response."""
    if count_from is None:
        return batch.own
    counted = batch.own.clone()
    for row, text in enumerate(batch.example_ids):
        if count_from[text] > 0:
            ends = torch.tensor([end for _, end in batch.offsets[row]])
            counted[row, batch.real_positions(row)] &= ends > count_from[text]
    return counted


class Recorder:
    """Pool the activations of `sites` for many texts, in batches.

    pooling: "last" | "mean" (one row per text), "word-first" | "word-last" | "word-mean" |
    "word-predict" (one row per word; needs word spans; "word-predict" is the token before the word,
    whose next-token prediction produces it), or "tokens" (no pooled rows: only the per-text token
    statistics, e.g. for activation probabilities). Attention-head units pool their output norm unless
    `coordinates` asks for the raw head × head_dim coordinates. `bos` is the BOS policy
    (`neuroloc.text.encoding`).
    """

    def __init__(self, lm: LoadedModel, sites: Sequence[Site], *, batch_size: int, bos: str, pooling: str = "last",
                 max_tokens: int | None = None, padding_side: str = "right", coordinates: bool = False,
                 progress: bool = False, description: str = "recording") -> None:
        if not sites:
            raise NeurolocError("no sites to record")
        if batch_size < 1:
            raise NeurolocError(f"batch size must be ≥ 1, got {batch_size}")
        if padding_side not in ("left", "right"):
            raise NeurolocError(f"padding side must be 'left' or 'right', got {padding_side!r}")
        self.lm = lm
        self.sites = sorted(lm.layout.check(s) for s in sites)
        self.pooling = check_pooling(pooling)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        # A model that takes no position ids counts positions from the start of the row, so left padding
        # would shift its texts; pooling reads the mask, so right padding gives every model the same answer.
        self.padding_side = padding_side if takes_position_ids(lm.model) else "right"
        self.coordinates = coordinates
        self.bos = check_bos(bos)
        self.progress = progress
        self.description = description
        self.batcher = MicroBatcher(batch_size, what="recording batch")  # halves the batch on out-of-memory

    def _word_plan(self, batch: Batch, spans: Sequence[Sequence[tuple[int, int]]],
                   device: torch.device) -> tuple[PoolPlan, list[tuple[int, int]]]:
        per_row, rows = [], []
        for b, text_index in enumerate(batch.example_ids):
            real = batch.real_positions(b)
            start = int(real[0])
            aligned = align_words(batch.offsets[b], spans[b], special_mask=batch.special[b])
            chosen = []
            for w, word in enumerate(aligned):
                if self.pooling == "word-predict":
                    if word.predict is None:
                        continue
                    span = (word.predict, word.predict)
                else:
                    span = {"word-first": (word.first, word.first), "word-last": (word.last, word.last),
                            "word-mean": (word.first, word.last)}[self.pooling]
                chosen.append((span[0] + start, span[1] + start))
                rows.append((text_index, w))
            per_row.append(chosen)
        return word_plan(per_row, batch.attention_mask.shape[1], device), rows

    def iter_batches(self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]] | None = None,
                     *, token_stats: bool = False, count_from: Sequence[int] | None = None, completed: int = 0,
                     total: int | None = None) -> Iterator[PooledBatch]:
        """Yield reduced batches in length-sorted order (`rows` and `texts` say which texts they hold).
        With `token_stats`, per-text counts of activations > 0 and sums over real tokens come too (only
        over the tokens after each text's `count_from` character offset, when given). A resumed
        recording shows its progress as `completed` of `total` texts before these."""
        words = self.pooling in WORD_POOLINGS
        if words and word_spans is None:
            raise NeurolocError(f"pooling {self.pooling!r} needs word spans (e.g. from a CoNLL-U treebank)")
        if not texts:
            raise NeurolocError("no texts to record")
        if any(not t.strip() for t in texts):
            raise NeurolocError(f"text {next(i for i, t in enumerate(texts) if not t.strip())} is empty")
        if count_from is not None and len(count_from) != len(texts):
            raise NeurolocError(f"count_from has {len(count_from)} offsets for {len(texts)} texts")
        token_stats = token_stats or self.pooling == "tokens"
        encoded = encode(self.lm.tokenizer, texts, bos=self.bos, max_tokens=self.max_tokens)
        context = getattr(self.lm.model.config, "max_position_embeddings", None)
        check_readable(encoded, texts, self.lm.tokenizer, context)
        pad = pad_id(self.lm.tokenizer)

        def forward(ids: Sequence[int]) -> PooledBatch:
            batch = next(batches(encoded, len(ids), pad=pad, padding_side=self.padding_side, order=ids))
            return self._reduce(batch, word_spans, token_stats, count_from)

        with progress_bar(self.description, total or len(texts), self.progress, completed=completed) as advance, \
                torch.inference_mode():
            for ids, reduced in self.batcher.map(length_order(encoded), forward):
                yield reduced
                advance(len(ids))

    def _reduce(self, batch: Batch, word_spans, token_stats: bool, count_from) -> PooledBatch:
        """One forward pass over `batch`, reduced to pooled rows and per-text token statistics."""
        layout = self.lm.layout
        inputs = batch.inputs(self.lm.device, position_ids=takes_position_ids(self.lm.model))
        if takes_use_cache(self.lm.model):
            inputs["use_cache"] = False  # nothing to generate: no key/value cache to fill
        mask = inputs["attention_mask"].bool()
        if self.pooling in WORD_POOLINGS:
            plan, rows = self._word_plan(batch, [word_spans[i] for i in batch.example_ids], mask.device)
        elif self.pooling == "tokens":
            plan, rows = None, []
        else:
            plan, rows = text_plan(mask, self.pooling), [(i, -1) for i in batch.example_ids]
        counted = counted_tokens(batch, count_from)  # the texts' own tokens: no padding, no BOS
        reduced = PooledBatch(rows, {}, list(batch.example_ids), token_counts=counted.sum(1))  # CPU: no sync
        counted = counted.to(mask.device)

        def observer(site: Site):
            def observe(value: torch.Tensor, context: HookContext) -> None:
                if value.numel() != mask.numel() * value.shape[-1]:
                    raise NeurolocError(f"site {site.name} holds a {tuple(value.shape)} tensor, not one row of "
                                        f"{value.shape[-1]} per token of this {tuple(mask.shape)} batch: neuroloc "
                                        "cannot pool it (e.g. layers that carry several residual streams)")
                value = value.reshape(*mask.shape, value.shape[-1])  # some models flatten tokens
                if context.routed is not None:  # an expert: reduced with its layer's other experts below
                    routed_rows.add(site, value, context.routed.reshape(mask.shape).to(value.device))
                    return
                if token_stats:
                    real = counted.to(value.device)[..., None]
                    reduced.token_positive[site] = ((value > 0) & real).sum(1)
                    values = value.double() * real
                    reduced.token_sums[site] = values.sum(1)
                    reduced.token_positive_sums[site] = values.clamp(min=0).sum(1)
                if plan is not None:
                    heads = site.kind == "attn" and not self.coordinates
                    reduced.features[site] = pool(head_norms(value, layout.parts(site.layer).n_heads) if heads
                                                  else value, plan.to(value.device))
            if site.kind == "expert":  # the hooks hand an expert's routed rows over as they are
                observe.routed_rows = lambda rows, tokens: routed_rows.add_rows(site, rows, tokens)
            return observe

        routed_rows = RoutedRows()
        with hooks(layout, observe={s: observer(s) for s in self.sites},
                   stop_after_layer=max(s.layer for s in self.sites)):
            run_forward(self.lm.model, example_ids=batch.example_ids, **inputs)
        routed_rows.reduce(reduced, plan, counted, token_stats)
        ran = reduced.features if plan is not None else reduced.token_sums
        missing = [s.name for s in self.sites if s not in ran]
        if missing:
            raise NeurolocError(f"sites never ran during the forward pass: {missing}")
        return reduced
