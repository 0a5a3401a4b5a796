"""Statistics per fold from one recording pass, and the stimuli's pooled rows for permutations.

`record_folds` runs every stimulus through the model once and routes each batch into one `StatsStore`
per bucket (`neuroloc.stimuli.folds`: buckets are the finest partition; folds, training sets and
"the first f of the stimuli" are unions of buckets). Any of those is then a merge of copies
(`FoldStats.merged`): nothing is recorded twice, and a merge is exact, so the statistics of all buckets
equal those of a plain recording.

With `rows=True` the pooled rows of every stimulus are kept too (a `Rows` statistic, float32, bounded by
`ROWS_LIMIT_BYTES`, returned in stimulus order as `StimulusRows`): a permutation null or a confound check
reshuffles labels over them without running the model again. The buckets' moments are then computed from
the kept rows once, after the pass, rather than batch by batch (the same values, fewer small updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..interrupts import Interrupted, protected
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..stimuli.folds import FoldAssignment
from .checkpoint import Checkpoint
from .collect import KINDS, add_batch
from .recorder import PooledBatch, Recorder
from .stats import ROWS_LIMIT_BYTES, StatsStore

__all__ = ["FoldStats", "StimulusRows", "record_folds"]


@dataclass
class StimulusRows:
    """Pooled rows of every stimulus, sites side by side (`sites`, `widths`), rows in stimulus order;
    `texts[r]` is the stimulus of row r (one row per text, or one per word for word poolings)."""

    sites: list[str]
    widths: list[int]
    values: torch.Tensor
    texts: np.ndarray

    def columns(self, sites: Sequence[str]) -> torch.Tensor:
        """The rows restricted to `sites`, in that order: (rows, units)."""
        if list(sites) == self.sites:
            return self.values
        starts = dict(zip(self.sites, np.cumsum([0, *self.widths[:-1]]).tolist()))
        widths = dict(zip(self.sites, self.widths))
        missing = [s for s in sites if s not in starts]
        if missing:
            raise NeurolocError(f"the kept rows hold no site(s) {missing}; they hold {self.sites}")
        return torch.cat([self.values[:, starts[s]:starts[s] + widths[s]] for s in sites], dim=1)

    def store(self, labels: Sequence[str], sites: Sequence[str], *, keep: np.ndarray | None = None,
              kinds: Sequence[str] = ("moments",)) -> StatsStore:
        """A `StatsStore` of `sites` built from these rows with `labels[i]` as stimulus i's label (moments
        and/or rows), over the stimuli where `keep` is true: a localizer fitted on it equals one fitted
        on a recording of those stimuli with those labels."""
        unknown = [k for k in kinds if k not in ("moments", "rows")]
        if unknown:
            raise NeurolocError(f"statistics {unknown} cannot be rebuilt from pooled rows (token statistics "
                                "need every token); use a score that needs moments or rows")
        values = self.columns(sites)
        widths = [self.widths[self.sites.index(s)] for s in sites]
        row_labels = np.asarray(labels, dtype=object)[self.texts]
        chosen = np.ones(len(self.texts), dtype=bool) if keep is None else np.asarray(keep)[self.texts]
        store = StatsStore()
        for label in sorted(set(row_labels[chosen])):
            picked = torch.from_numpy(np.flatnonzero(chosen & (row_labels == label))).to(values.device)
            for kind in kinds:
                store.update_sites(kind, label, list(sites), widths, values.index_select(0, picked))
        return store


@dataclass
class FoldStats:
    """One `StatsStore` per bucket of a fold assignment (`n_buckets` a multiple of its K), and the
    stimuli's pooled rows when kept. `buckets[i]` is stimulus i's bucket."""

    assignment: FoldAssignment
    stores: list[StatsStore]
    buckets: np.ndarray
    rows: StimulusRows | None = None

    @property
    def k(self) -> int:
        return self.assignment.k

    @property
    def n_buckets(self) -> int:
        return len(self.stores)

    def merged(self, buckets: Iterable[int]) -> StatsStore:
        """A new store: the statistics of these buckets merged (the stores themselves are untouched)."""
        total = StatsStore()
        for b in buckets:
            total.merge(self.stores[b])
        return total

    def fold_of_bucket(self, bucket: int) -> int:
        return bucket * self.k // self.n_buckets

    def fold(self, k: int) -> StatsStore:
        """The statistics of fold k."""
        return self.merged(b for b in range(self.n_buckets) if self.fold_of_bucket(b) == k)

    def train(self, k: int) -> StatsStore:
        """The statistics of every fold but k."""
        return self.merged(b for b in range(self.n_buckets) if self.fold_of_bucket(b) != k)

    def full(self) -> StatsStore:
        """The statistics of every stimulus (equal to a plain recording's)."""
        return self.merged(range(self.n_buckets))

    def first(self, fraction: float) -> StatsStore:
        """The statistics of the stimuli whose position lies below `fraction` (a union of buckets)."""
        edge = fraction * self.n_buckets
        if abs(edge - round(edge)) > 1e-9:
            raise NeurolocError(f"fraction {fraction} is not a union of the {self.n_buckets} recorded buckets; "
                                "record with it among the stability fractions")
        return self.merged(range(int(round(edge))))

    def first_mask(self, fraction: float) -> np.ndarray:
        """Which stimuli `first(fraction)` holds."""
        return self.buckets < round(fraction * self.n_buckets)


_KEPT = "~kept"  # the scratch store's label of the kept pooled rows (fold labels are "bucket:label")


class _RowKeeper:
    """Collects every batch's pooled rows (sites side by side) and the stimulus of each row into the
    recording's store (kind "rows", label `_KEPT`: saved with its checkpoint), within `ROWS_LIMIT_BYTES`."""

    def __init__(self, store: StatsStore, sites: list[Site], widths: list[int]) -> None:
        self.store, self.sites, self.widths = store, sites, widths
        self.n = store.count(_KEPT, "rows")  # rows kept so far (a resumed recording's included)

    def add(self, batch: PooledBatch, stimulus: Sequence[int]) -> None:
        """Keep `batch`'s rows; `stimulus[j]` is the stimulus index of the batch's text j."""
        device = batch.features[self.sites[0]].device
        values = torch.cat([batch.features[s].detach().to(device) for s in self.sites], dim=1)
        self.n += values.shape[0]
        if sum(self.widths) * 4 * self.n > ROWS_LIMIT_BYTES:
            raise NeurolocError(
                f"the pooled rows kept for permutations and confound checks exceed "
                f"{ROWS_LIMIT_BYTES / 2**30:.1f} GiB: restrict --site or --layers, use fewer stimuli, or turn "
                "the permutation null and confound checks off")
        texts = torch.tensor([[float(stimulus[text])] for text, _ in batch.rows], device=device)
        # side by side (update_sites), so the recording's blocks of statistics are never split per batch
        self.store.update_sites("rows", _KEPT, ["values"], [values.shape[1]], values)
        self.store.update_sites("rows", _KEPT, ["stimulus"], [1], texts)

    def result(self) -> StimulusRows:
        values = self.store.get("rows", _KEPT, "values").values()
        texts = self.store.get("rows", _KEPT, "stimulus").values()[:, 0].cpu().numpy().astype(np.int64)
        order = np.argsort(texts, kind="stable")  # stimulus order; a text's words stay in order
        values = values.index_select(0, torch.from_numpy(order).to(values.device))
        return StimulusRows([s.name for s in self.sites], self.widths, values, texts[order])


def _move(source: StatsStore, stores: list[StatsStore]) -> None:
    """Statistics keyed by "bucket:label" → the bucket's store, keyed by label (kept rows stay)."""
    for (kind, key, site), stat in source.entries.items():
        if key == _KEPT:
            continue
        bucket, _, label = key.partition(":")
        stores[int(bucket)].entry(kind, label, site, stat.width).merge(stat)


def record_folds(lm: LoadedModel, stimuli: StimulusSet, assignment: FoldAssignment, *, sites: Sequence[Site],
                 pooling: str, kinds: Sequence[str], n_buckets: int, rows: bool, settings: RunSettings,
                 description: str = "recording", checkpoint: Checkpoint | None = None) -> FoldStats:
    """Record `stimuli` once into one `StatsStore` per bucket (`n_buckets`, a multiple of the
    assignment's K) with the statistic `kinds` asked for, and their pooled rows when `rows`. With a
    `checkpoint` (whose key must cover the assignment and `rows`), the recording is saved every few batches
    and on an interrupt, and a rerun resumes from it (a finished one runs no model)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown statistic kinds {unknown}; choose from {KINDS}")
    if n_buckets % assignment.k:
        raise ValueError(f"{n_buckets} buckets do not split into {assignment.k} folds")
    if len(assignment) != len(stimuli):
        raise NeurolocError(f"the fold assignment covers {len(assignment)} stimuli but {stimuli.name!r} has "
                            f"{len(stimuli)}: assign folds to this stimulus set")
    if rows and pooling == "tokens":
        raise NeurolocError("pooling 'tokens' keeps no pooled rows, so permutations and confound checks cannot "
                            "run; use pooling last or mean")
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=settings.batch_size, max_tokens=settings.max_tokens,
                        bos=settings.bos, progress=settings.progress, description=description)
    buckets = assignment.buckets(n_buckets)
    keys = [f"{int(b)}:{label}" for b, label in zip(buckets, stimuli.conditions)]  # one routing per batch
    scratch = StatsStore()
    widths = [lm.layout.width(s.kind) for s in recorder.sites]
    done = checkpoint.restore(scratch, len(stimuli)) if checkpoint is not None else None
    keeper = _RowKeeper(scratch, recorder.sites, widths) if rows else None
    # moments from the kept rows at the end; expert sites keep only their routed rows, so they go per batch
    derived = rows and "moments" in kinds and all(s.kind != "expert" for s in recorder.sites)
    batch_kinds = [k for k in kinds if not (derived and k == "moments")]
    pending = [i for i in range(len(stimuli)) if done is None or not done[i]]
    if pending:
        texts = [stimuli.texts[i] for i in pending]
        spans = None if stimuli.word_spans is None else [stimuli.word_spans[i] for i in pending]
        count_from = None if stimuli.count_from is None else [stimuli.count_from[i] for i in pending]
        labels = [keys[i] for i in pending]
        completed = checkpoint.resumed_from if checkpoint is not None else 0
        try:
            for batch in recorder.iter_batches(texts, spans, token_stats="tokens" in kinds, count_from=count_from,
                                               completed=completed, total=len(stimuli)):
                with protected():  # a batch is folded in and marked done, or neither
                    add_batch(scratch, batch, labels, batch_kinds)
                    if keeper is not None:
                        keeper.add(batch, pending)
                    if checkpoint is not None:
                        checkpoint.step(scratch, [pending[j] for j in batch.texts])
        except Interrupted:
            if checkpoint is not None:
                with protected():
                    checkpoint.save(scratch)
            raise
        if checkpoint is not None:
            with protected():
                checkpoint.save(scratch)
    stores = [StatsStore() for _ in range(n_buckets)]
    _move(scratch, stores)
    kept = keeper.result() if keeper is not None else None
    if derived:
        _move(kept.store(keys, kept.sites), stores)
    return FoldStats(assignment, stores, buckets, kept)
