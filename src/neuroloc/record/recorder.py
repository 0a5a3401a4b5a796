"""The batched recorder: run texts through the hooked model and pool each site on the fly.

Only pooled rows leave the hooks (never a full batch × tokens × units tensor per site), texts are
length-sorted to cut padding, and the forward pass stops after the last layer needed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..errors import NeurolocError
from ..models.hooks import hooks, run_forward
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..stimuli.base import StimulusSet
from .accumulators import ConditionStats
from .pooling import WORD_POOLINGS, PoolPlan, check_pooling, head_norms, pool, text_plan, word_plan


@dataclass
class PooledBatch:
    """Pooled rows of one batch: `rows[i]` = (text index, word index or -1) of row i of every site.

    With `token_sums`, `token_sums[site][j]` is the sum over text j's real tokens of the raw hooked
    coordinates (float64) and `token_counts[j]` its token count, j following `texts` (batch order).
    """

    rows: list[tuple[int, int]]
    features: dict[Site, torch.Tensor]
    texts: list[int] = field(default_factory=list)
    token_sums: dict[Site, torch.Tensor] = field(default_factory=dict)
    token_counts: torch.Tensor | None = None


def tokenize(lm: LoadedModel, texts: Sequence[str], *, padding_side: str = "right",
             max_tokens: int | None = None, offsets: bool = False) -> dict:
    """Tokenize a batch with the model's tokenizer, padded on `padding_side`."""
    return lm.tokenizer(
        list(texts), return_tensors="pt", padding=True, padding_side=padding_side,
        truncation=max_tokens is not None, max_length=max_tokens,
        return_offsets_mapping=offsets, return_special_tokens_mask=offsets,
    )


def model_inputs(lm: LoadedModel, encoded: dict) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and (when the model takes them) position ids counted over real
    tokens only, so left padding cannot shift positions."""
    device = lm.device
    mask = encoded["attention_mask"].to(device)
    batch = {"input_ids": encoded["input_ids"].to(device), "attention_mask": mask}
    if "position_ids" in inspect.signature(lm.model.forward).parameters:
        batch["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return batch


class Recorder:
    """Pool the activations of `sites` for many texts, in batches.

    pooling: "last" | "mean" (one row per text) or "word-first" | "word-last" | "word-mean" |
    "word-predict" (one row per word; needs word spans; "word-predict" is the token before the word,
    whose next-token prediction produces it). Attention-head units pool their output norm unless
    `coordinates` asks for the raw head × head_dim coordinates.
    """

    def __init__(self, lm: LoadedModel, sites: Sequence[Site], *, pooling: str = "last", batch_size: int = 32,
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
        self.padding_side = padding_side
        self.coordinates = coordinates
        self.progress = progress
        self.description = description

    # -- batching --------------------------------------------------------------------------------
    def _order(self, texts: Sequence[str]) -> list[int]:
        lengths = [len(ids) for ids in self.lm.tokenizer(list(texts))["input_ids"]]
        return sorted(range(len(texts)), key=lambda i: (-lengths[i], i))

    def _word_plan(self, encoded: dict, spans: Sequence[Sequence[tuple[int, int]]],
                   indices: Sequence[int]) -> tuple[PoolPlan, list[tuple[int, int]]]:
        from ..text.alignment import align_words

        mask = encoded["attention_mask"].bool()
        per_row, rows = [], []
        for b, text_index in enumerate(indices):
            real = torch.nonzero(mask[b]).flatten()
            start = int(real[0])
            offsets = [tuple(o) for o in encoded["offset_mapping"][b][real].tolist()]
            special = encoded["special_tokens_mask"][b][real].tolist()
            aligned = align_words(offsets, spans[b], special_mask=special)
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
        return word_plan(per_row, mask.shape[1], self.lm.device), rows

    def iter_batches(self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]] | None = None,
                     *, token_sums: bool = False) -> Iterator[PooledBatch]:
        """Yield pooled batches (in length-sorted order; `rows` says which text each row is)."""
        words = self.pooling in WORD_POOLINGS
        if words and word_spans is None:
            raise NeurolocError(f"pooling {self.pooling!r} needs word spans (e.g. from a CoNLL-U treebank)")
        if not texts:
            raise NeurolocError("no texts to record")
        if any(not t.strip() for t in texts):
            raise NeurolocError(f"text {next(i for i, t in enumerate(texts) if not t.strip())} is empty")
        order = self._order(texts)
        layout = self.lm.layout
        with progress_bar(self.description, len(texts), self.progress) as advance, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                indices = order[start:start + self.batch_size]
                encoded = tokenize(self.lm, [texts[i] for i in indices], padding_side=self.padding_side,
                                   max_tokens=self.max_tokens, offsets=words)
                batch = model_inputs(self.lm, encoded)
                if words:
                    plan, rows = self._word_plan(encoded, [word_spans[i] for i in indices], indices)
                else:
                    plan, rows = text_plan(batch["attention_mask"], self.pooling), [(i, -1) for i in indices]
                mask = batch["attention_mask"].bool()
                features: dict[Site, torch.Tensor] = {}
                sums: dict[Site, torch.Tensor] = {}

                def observer(site: Site):
                    def observe(value: torch.Tensor) -> None:
                        if token_sums:
                            sums[site] = (value.double() * mask[..., None]).sum(1).cpu()
                        if site.kind == "attn" and not self.coordinates:
                            value = head_norms(value, layout.n_heads)
                        features[site] = pool(value, plan)
                    return observe

                with hooks(layout, observe={s: observer(s) for s in self.sites},
                           stop_after_layer=max(s.layer for s in self.sites)):
                    run_forward(self.lm.model, **batch)
                missing = [s.name for s in self.sites if s not in features]
                if missing:
                    raise NeurolocError(f"sites never ran during the forward pass: {missing}")
                yield PooledBatch(rows, features, list(indices), sums, mask.sum(1).cpu())
                advance(len(indices))

    def accumulate(self, stimuli: StimulusSet, stats: ConditionStats | None = None) -> ConditionStats:
        """Stream `stimuli` into per-condition, per-site moments (created or extended)."""
        stats = stats if stats is not None else ConditionStats()
        for batch in self.iter_batches(stimuli.texts, stimuli.word_spans):
            text_indices = torch.tensor([r[0] for r in batch.rows])
            for condition in sorted({stimuli.conditions[i] for i, _ in batch.rows}):
                picks = torch.nonzero(torch.tensor(
                    [stimuli.conditions[i] == condition for i in text_indices.tolist()])).flatten()
                for site, values in batch.features.items():
                    stats.update(condition, site.name, values[picks.to(values.device)])
        return stats
