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
    in side by side (`StatsStore.update_sites`): a few tensor operations per label, whatever the sites.
    Expert sites, which see only their routed rows and tokens, go in a layer at a time (`_add_routed`)."""
    row_labels = _label_rows([labels[text] for text, _ in batch.rows])
    full = {site: value for site, value in batch.features.items() if site not in batch.present}
    for names, widths, group in _side_by_side(full):
        joined = _joined(full, group)
        for label, rows in row_labels.items():
            chosen = _pick(joined, rows, joined.shape[0])
            for kind in ("moments", "rows"):
                if kind in kinds:
                    store.update_sites(kind, label, names, widths, chosen)
    _add_routed(store, batch, labels, kinds)
    if "tokens" in kinds and batch.token_sums:
        text_labels = _label_rows([labels[text] for text in batch.texts])
        counts = batch.token_counts.tolist()
        sums = {site: value for site, value in batch.token_sums.items() if site not in batch.routed_counts}
        for names, widths, group in _side_by_side(sums):
            per_text = [_joined(values, group) for values in
                        (batch.token_positive, batch.token_sums, batch.token_positive_sums)]
            for label, texts in text_labels.items():
                store.update_sites("tokens", label, names, widths, sum(counts[j] for j in texts),
                                   *(_pick(values, texts, len(counts)).sum(0) for values in per_text))


def _add_routed(store: StatsStore, batch: PooledBatch, labels: Sequence[str], kinds: Sequence[str]) -> None:
    """Expert sites, a layer's experts side by side (`StatsStore.update_stacked`): each label's rows among
    those each expert saw, and token statistics over the tokens routed to it, counted by `routed` — so a
    statistic's count is the expert's own count (an expert no text of a label reached has count 0).
    Entries are made outside inference mode (the recorder's batches arrive inside it), so they can be
    merged later."""
    if not batch.routed:
        return
    with torch.inference_mode(False):
        row_labels = _label_rows([labels[text] for text, _ in batch.rows])
        text_labels = _label_rows([labels[text] for text in batch.texts])
        picks: dict[tuple[str, str, torch.device], torch.Tensor | None] = {}

        def pick(values: torch.Tensor, which: str, label: str) -> torch.Tensor:
            """`values` (sites, rows or texts, ...) at the rows (texts) of `label`."""
            positions = (row_labels if which == "rows" else text_labels)[label]
            if len(positions) == values.shape[1]:
                return values
            key = (which, label, values.device)
            if key not in picks:
                picks[key] = torch.tensor(positions, dtype=torch.long, device=values.device)
            return values.index_select(1, picks[key])

        for group in batch.routed:
            names = [site.name for site in group.sites]
            for label in text_labels:  # every label of the batch's texts, even where an expert saw none
                if group.pooled is not None and ("moments" in kinds or "rows" in kinds):
                    has_rows = label in row_labels
                    values = pick(group.pooled, "rows", label) if has_rows else group.pooled[:, :0]
                    seen = pick(group.seen, "rows", label) if has_rows else group.seen[:, :0]
                    if "moments" in kinds:
                        store.update_stacked("moments", label, names, values, seen)
                    if "rows" in kinds:
                        for i, name in enumerate(names):
                            store.update("rows", label, name, values[i][seen[i]])
                if "tokens" in kinds and group.sums is not None:
                    store.update_stacked("tokens", label, names, pick(group.routed, "texts", label).sum(1),
                                         *(pick(v, "texts", label).sum(1)
                                           for v in (group.positive, group.sums, group.positive_sums)))


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
