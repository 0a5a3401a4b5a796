"""Stream a labelled stimulus set through a Recorder into a `StatsStore`, by label and site."""

from __future__ import annotations

from typing import Sequence

import torch

from ..stimuli.base import StimulusSet
from .recorder import PooledBatch, Recorder
from .stats import StatsStore

KINDS = ("moments", "tokens", "rows")


def add_batch(store: StatsStore, batch: PooledBatch, labels: Sequence[str], kinds: Sequence[str]) -> None:
    """Route one reduced batch into `store`; `labels[i]` is text i's label."""
    row_labels = [labels[text] for text, _ in batch.rows]
    for label in dict.fromkeys(row_labels):
        picks = [i for i, lab in enumerate(row_labels) if lab == label]
        for site, values in batch.features.items():
            chosen = values[torch.tensor(picks, device=values.device)]
            for kind in ("moments", "rows"):
                if kind in kinds:
                    store.update(kind, label, site.name, chosen)
    if "tokens" in kinds and batch.token_sums:
        text_labels = [labels[text] for text in batch.texts]
        for label in dict.fromkeys(text_labels):
            picks = torch.tensor([j for j, lab in enumerate(text_labels) if lab == label])
            n_tokens = int(batch.token_counts[picks.to(batch.token_counts.device)].sum())
            for site, sums in batch.token_sums.items():
                rows = picks.to(sums.device)
                store.update("tokens", label, site.name, n_tokens, batch.token_positive[site][rows].sum(0),
                             sums[rows].sum(0))


def collect(recorder: Recorder, stimuli: StimulusSet, store: StatsStore | None = None, *,
            kinds: Sequence[str] = ("moments", "tokens")) -> StatsStore:
    """Record `stimuli` into `store` (created when None): the statistic kinds asked for, per label."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown statistic kinds {unknown}; choose from {KINDS}")
    store = store if store is not None else StatsStore()
    for batch in recorder.iter_batches(stimuli.texts, stimuli.word_spans, token_stats="tokens" in kinds):
        add_batch(store, batch, stimuli.conditions, kinds)
    return store
