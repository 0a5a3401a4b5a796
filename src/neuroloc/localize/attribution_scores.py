"""Attribution scores: units ranked by their attribution to a target (ln p(answer | prompt), a word's
next-token log-probability), per label, in the one score registry.

The attribution engines (`localize.attribution`, the POS study's word engine) fold every item's
per-unit attributions into an `AttributionStats` per (label, site) — statistic kind `attribution` of the
`StatsStore`: the item count, the sums of attributions and of their absolute values, and how many items
had the unit among their own top attributions. The registered scores `gradxact` (gradient × activation)
and `ig` (integrated gradients) read it; a score's name is the attribution method its statistic is
recorded with (`ATTRIBUTION_METHOD`). Two aggregates over a label's items:

* `mean` — the culture-neuron recipe (CULNIG; Yamamoto et al.): the label's mean attribution, minus the
  mean over a control set (texts of the answers' form without the target content: label `CONTROL`),
  units in the top `nuisance_percent` % of a nuisance set's mean (label `NUISANCE`, e.g. units that merely
  read country names) excluded, and — with `z0` — only units whose z-score across labels reaches z0;
  among the rest, units with a positive score are eligible;
* `frequency` — the key-neuron recipe (Norouzi, Masjedi & Hitzler 2025): the share of the label's items
  whose top attributions hold the unit; units never there are not eligible.

Selection is the Localizer's (`Scores.top`): the k best eligible units, ties to the lower index.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..record.stats import STAT_KINDS, StatsStore, concat_fields, split_fields
from ..stimuli.design import Design
from .score_functions import Scores, ordered_sites, register_score

__all__ = ["AGGREGATES", "ATTRIBUTION_METHOD", "AttributionStats", "CONTROL", "NUISANCE", "culnig_scores",
           "label_zscores"]

CONTROL, NUISANCE = "<control>", "<nuisance>"  # reserved labels of the control and nuisance sets
AGGREGATES = ("mean", "frequency")
ATTRIBUTION_METHOD = {"gradxact": "gradxact", "ig": "ig"}  # score → the attribution method it reads


class AttributionStats:
    """Per unit, over the items of one label: item count `n`, sums of attributions (`sum`) and of their
    absolute values (`abs_sum`), and `top`, the number of items with the unit among their top attributions
    (zeros when the engine counts none). Items are added one after another, in order (`update`), so a
    recording gives the same sums, bit for bit, however it is batched."""

    FIELDS = ("sum", "abs_sum", "top")

    def __init__(self, width: int, device: torch.device | str | None = None) -> None:
        self.n = 0
        self.sum = torch.zeros(width, dtype=torch.float64)
        self.abs_sum = torch.zeros(width, dtype=torch.float64)
        self.top = torch.zeros(width, dtype=torch.int64)

    @property
    def width(self) -> int:
        return self.sum.numel()

    def update(self, values: torch.Tensor, top: torch.Tensor | None = None) -> "AttributionStats":
        """Add items: `values` (items, width) attributions; `top` (items, width) bool, the units among each
        item's top attributions (optional)."""
        if values.ndim != 2 or values.shape[1] != self.width:
            raise ValueError(f"expected (items, {self.width}) attributions, got {tuple(values.shape)}")
        x = values.detach().to("cpu", torch.float64)
        if not torch.isfinite(x).all():
            raise NeurolocError("attributions contain NaN or inf; the model or the attribution overflowed "
                                "(try --dtype float32)")
        self._fold(x)
        if top is not None:
            self.top += top.to("cpu").sum(0, dtype=torch.int64)
        self.n += x.shape[0]
        return self

    def _fold(self, x: torch.Tensor) -> None:
        """Items in order (sequential sums: batching never changes a bit)."""
        for row in x:
            self.sum += row
            self.abs_sum += row.abs()

    def add(self, n: int, sums: torch.Tensor, abs_sums: torch.Tensor, top: torch.Tensor) -> "AttributionStats":
        """Add already-summed items (`n` of them)."""
        self.n += int(n)
        self.sum += sums.to("cpu", torch.float64)
        self.abs_sum += abs_sums.to("cpu", torch.float64)
        self.top += top.to("cpu", torch.int64)
        return self

    def merge(self, other: "AttributionStats") -> "AttributionStats":
        """Counts and sums add (exact up to float64 rounding)."""
        return self.add(other.n, other.sum, other.abs_sum, other.top)

    @classmethod
    def concat(cls, parts: Sequence["AttributionStats"]) -> "AttributionStats":
        """Side by side; the parts must have seen the same items."""
        return concat_fields(cls, parts)

    def split(self, widths: Sequence[int]) -> list["AttributionStats"]:
        return split_fields(self, widths)

    def mean(self, absolute: bool = False) -> torch.Tensor:
        return (self.abs_sum if absolute else self.sum) / max(self.n, 1)

    def frequency(self) -> torch.Tensor:
        return self.top.double() / max(self.n, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor(self.n), "sum": self.sum, "abs_sum": self.abs_sum, "top": self.top}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.n = int(state["n"])
        for name in self.FIELDS:
            setattr(self, name, state[name].clone().cpu())

    def to(self, device: torch.device | str) -> "AttributionStats":
        """Attribution sums live in host memory (they arrive there, one row per item)."""
        return self


STAT_KINDS.setdefault("attribution", AttributionStats)


def label_zscores(scores: np.ndarray) -> np.ndarray:
    """z-score of every unit's scores across labels (rows); a unit scoring the same everywhere gets 0."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std(0)
    return np.where(spread > 0, (scores - scores.mean(0)) / np.where(spread > 0, spread, 1.0), 0.0)


def culnig_scores(label_scores: np.ndarray, labels: Sequence[str], *, control: np.ndarray | None = None,
                  nuisance: np.ndarray | None = None, nuisance_percent: float = 1.0,
                  z0: float | None = None) -> Scores:
    """The culture-neuron recipe on (labels, units) mean attributions: the score after the control (`values`),
    its z-score across labels (column `z`), the nuisance set's top units (column `nuisance`, removed), and
    the eligible units (positive score, not nuisance, z ≥ z0)."""
    scores = np.asarray(label_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(labels):
        raise NeurolocError(f"label scores must be (labels, units) with {len(labels)} rows, got {scores.shape}")
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
    eligible = ~excluded[None, :] & (scores > 0)
    if z0 is not None:
        eligible &= z >= z0
    return Scores(scores, tuple(labels), eligible=eligible,
                  columns={"z": z, "nuisance": np.broadcast_to(excluded, scores.shape).copy()})


def _flat(stats: StatsStore, label: str, read) -> np.ndarray:
    return np.concatenate([read(stats.get("attribution", label, site)).cpu().numpy()
                           for site in ordered_sites(stats, "attribution")])


def attribution_score(stats: StatsStore, design: Design, *, aggregate: str = "mean", nuisance_percent: float = 1.0,
                      z0: float | None = None) -> Scores:
    """Per label of `design`, its items' `aggregate` attribution (`mean`: the culture-neuron recipe, with the
    control and nuisance sets when the statistics hold them; `frequency`: the key-neuron recipe)."""
    if aggregate not in AGGREGATES:
        raise NeurolocError(f"unknown attribution aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}")
    labels = design.labels or tuple(label for label in stats.labels("attribution") if label not in (CONTROL, NUISANCE))
    empty = [label for label in labels if stats.count(label, "attribution") == 0]
    if empty:
        raise NeurolocError(f"no attributed items of label(s) {empty}; use more items or other labels")
    present = stats.labels("attribution")
    if aggregate == "frequency":
        values = np.stack([_flat(stats, label, lambda s: s.frequency()) for label in labels])
        mean = np.stack([_flat(stats, label, lambda s: s.mean()) for label in labels])
        return Scores(values, tuple(labels), eligible=values > 0,
                      columns={"count": np.stack([_flat(stats, label, lambda s: s.top) for label in labels]),
                               "mean_attribution": mean,
                               "mean_abs_attribution": np.stack([_flat(stats, label, lambda s: s.mean(True))
                                                                 for label in labels])})
    means = np.stack([_flat(stats, label, lambda s: s.mean()) for label in labels])
    control = _flat(stats, CONTROL, lambda s: s.mean()) if CONTROL in present else None
    nuisance = _flat(stats, NUISANCE, lambda s: s.mean()) if NUISANCE in present else None
    return culnig_scores(means, labels, control=control, nuisance=nuisance, nuisance_percent=nuisance_percent, z0=z0)


for _name in ATTRIBUTION_METHOD:
    register_score(_name, needs=("attribution",), designs=("one_vs_rest", "groups"),
                   description=f"{'gradient × activation' if _name == 'gradxact' else 'integrated gradients'} "
                               "attribution per label: the culture-neuron (mean) or key-neuron (frequency) "
                               "recipe")(attribution_score)
