"""Attribution scores of task units and the culture-neuron recipe (CULNIG; Yamamoto et al.).

1. Per item, the attribution of ln p(answer | prompt) to every unit (`gradxact` or `ig`; reduced over
   positions by max or sum; optionally weighted by p(answer | prompt), so items the model answers
   count most), averaged per label: S[label, unit].
2. The same mean over a control set (the answers without the target content) is subtracted, so units
   that merely produce answers of that form do not count.
3. Units in the top `nuisance_percent` % of the nuisance set's mean attribution (e.g. units that merely
   read country names) are removed.
4. Label-specific units: the z-score of S[·, unit] across labels must reach `z0`; among the surviving
   units with a positive score, each label keeps its `k` best (ties: lower flat index first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...errors import NeurolocError
from ...localize.attribution import Completeness, iter_answer_attributions
from ...models.layout import Site
from ...models.loading import LoadedModel
from ...stimuli.prompts import PromptSet, encode_continuations

__all__ = ["ATTRIBUTION_SCORES", "AttributionMeans", "attribution_means", "culnig_select", "label_zscores"]

ATTRIBUTION_SCORES = ("gradxact", "ig")


@dataclass
class AttributionMeans:
    """Per label (rows, `label_names` order) the mean attribution of every unit; `logprob` per item."""

    label_names: list[str]
    means: np.ndarray
    counts: np.ndarray
    logprob: np.ndarray
    completeness: Completeness | None

    def overall(self) -> np.ndarray:
        """The mean over all items, whatever their label (for control and nuisance sets)."""
        return (self.means * self.counts[:, None]).sum(0) / self.counts.sum()


def attribution_means(lm: LoadedModel, items: PromptSet, sites: Sequence[Site], *, method: str = "gradxact",
                      reduce: str = "max", weight_by_p: bool = False, steps: int = 16, batch_size: int = 16,
                      bos: str = "prepend", progress: bool = False) -> AttributionMeans:
    """Stream attributions of `items` into per-label sums (memory: labels × units)."""
    sites = sorted(sites)
    names = items.label_names
    row_of = {label: r for r, label in enumerate(names)}
    label_rows = np.array([row_of[label] for label in items.labels])
    encoded = encode_continuations(lm.tokenizer, items.prompts, items.answers, bos=bos)
    sums = None
    counts = np.bincount(label_rows, minlength=len(names)).astype(np.float64)
    logprob = np.full(len(items), np.nan)
    completeness = Completeness([s.name for s in sites]) if method == "ig" else None
    for batch in iter_answer_attributions(lm, encoded, method=method, sites=sites, reduce=reduce, steps=steps,
                                          batch_size=batch_size, items_per_group=batch_size,
                                          skip_first=bos == "prepend", progress=progress):
        scores = batch.scores.double()
        if weight_by_p:
            scores = scores * torch.from_numpy(np.exp(batch.logprob))[:, None]
        if sums is None:
            sums = torch.zeros(len(names), scores.shape[1], dtype=torch.float64)
        sums.index_add_(0, torch.from_numpy(label_rows[batch.items]), scores)
        logprob[batch.items] = batch.logprob
        if completeness is not None and batch.site_deltas is not None:
            completeness.update(batch.site_totals, batch.site_deltas)
    if sums is None:
        raise NeurolocError(f"{items.name}: no items to attribute")
    return AttributionMeans(names, (sums.numpy() / counts[:, None]), counts, logprob, completeness)


def label_zscores(scores: np.ndarray) -> np.ndarray:
    """z-score of every unit's scores across labels (rows); a unit scoring the same everywhere gets 0."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std(0)
    return np.where(spread > 0, (scores - scores.mean(0)) / np.where(spread > 0, spread, 1.0), 0.0)


def culnig_select(label_scores: np.ndarray, label_names: Sequence[str], k: int, *, control: np.ndarray | None = None,
                  nuisance: np.ndarray | None = None, nuisance_percent: float = 1.0, z0: float | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Apply the recipe to (labels, units) mean attributions. Returns (per label the selected flat
    unit indices, best first; and the tables `score` (after the control), `z`, `nuisance` (bool per
    unit) and `selected` (labels × units bool))."""
    scores = np.asarray(label_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(label_names):
        raise NeurolocError(f"label_scores must be (labels, units) with {len(label_names)} rows, got {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeurolocError(f"k must be an int >= 1, got {k!r}")
    n_units = scores.shape[1]
    if control is not None:
        scores = scores - np.asarray(control, dtype=np.float64)[None, :]
    excluded = np.zeros(n_units, dtype=bool)
    if nuisance is not None:
        if not 0.0 <= nuisance_percent <= 100.0:
            raise NeurolocError(f"nuisance_percent must be in [0, 100], got {nuisance_percent}")
        n_out = int(round(n_units * nuisance_percent / 100.0))
        if n_out:
            order = np.lexsort((np.arange(n_units), -np.asarray(nuisance, dtype=np.float64)))
            excluded[order[:n_out]] = True
    z = label_zscores(scores)
    selected = np.zeros_like(scores, dtype=bool)
    chosen = {}
    for r, label in enumerate(label_names):
        ok = ~excluded & (scores[r] > 0)
        if z0 is not None:
            ok &= z[r] >= z0
        candidates = np.flatnonzero(ok)
        best = candidates[np.lexsort((candidates, -scores[r, candidates]))][:k]
        chosen[label] = best
        selected[r, best] = True
    return chosen, {"score": scores, "z": z, "nuisance": excluded, "selected": selected}
