"""Stream a labelled stimulus set through a Recorder into a `StatsStore`, by label and site."""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.layout import Site
from ..stimuli.base import StimulusSet
from .recorder import PooledBatch, Recorder
from .stats import StatsStore

KINDS = ("moments", "tokens", "rows")


def _side_by_side(values: dict[Site, torch.Tensor]) -> list[tuple[list[str], list[int], list[Site]]]:
    """Sites grouped by the device their values are on (one group unless the model spans devices), with
    their names and widths, for `StatsStore.update_sites`."""
    groups: dict[torch.device, list[Site]] = {}
    for site, value in values.items():
        groups.setdefault(value.device, []).append(site)
    return [([s.name for s in group], [values[s].shape[1] for s in group], group) for group in groups.values()]


def _joined(values: dict[Site, torch.Tensor], group: list[Site]) -> torch.Tensor:
    return torch.cat([values[s] for s in group], dim=1)


def _label_rows(labels: Sequence[str]) -> dict[str, list[int]]:
    """Label → the positions holding it, labels in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        rows.setdefault(label, []).append(i)
    return rows


def _pick(values: torch.Tensor, rows: list[int], n: int) -> torch.Tensor:
    return values if len(rows) == n else values.index_select(0, torch.tensor(rows, device=values.device))


def add_batch(store: StatsStore, batch: PooledBatch, labels: Sequence[str], kinds: Sequence[str]) -> None:
    """Route one reduced batch into `store`; `labels[i]` is text i's label. The sites of a device go
    in side by side (`StatsStore.update_sites`): a few tensor operations per label, whatever the sites."""
    row_labels = _label_rows([labels[text] for text, _ in batch.rows])
    for names, widths, group in _side_by_side(batch.features):
        joined = _joined(batch.features, group)
        for label, rows in row_labels.items():
            chosen = _pick(joined, rows, joined.shape[0])
            for kind in ("moments", "rows"):
                if kind in kinds:
                    store.update_sites(kind, label, names, widths, chosen)
    if "tokens" in kinds and batch.token_sums:
        text_labels = _label_rows([labels[text] for text in batch.texts])
        counts = batch.token_counts.tolist()
        for names, widths, group in _side_by_side(batch.token_sums):
            per_text = [_joined(values, group) for values in
                        (batch.token_positive, batch.token_sums, batch.token_positive_sums)]
            for label, texts in text_labels.items():
                store.update_sites("tokens", label, names, widths, sum(counts[j] for j in texts),
                                   *(_pick(values, texts, len(counts)).sum(0) for values in per_text))


def collect(recorder: Recorder, stimuli: StimulusSet, store: StatsStore | None = None, *,
            kinds: Sequence[str] = ("moments", "tokens")) -> StatsStore:
    """Record `stimuli` into `store` (created when None): the statistic kinds asked for, per label."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown statistic kinds {unknown}; choose from {KINDS}")
    store = store if store is not None else StatsStore()
    for batch in recorder.iter_batches(stimuli.texts, stimuli.word_spans, token_stats="tokens" in kinds,
                                       count_from=stimuli.count_from):
        add_batch(store, batch, stimuli.conditions, kinds)
    return store
