"""The inter-subject ceiling: how well other subjects' responses predict one subject's, extrapolated
to infinitely many subjects the way brain-score does (Schrimpf et al., PNAS 2021).

For each pool size k = 2…S, random subsets of k subjects (up to `n_subsets`) are drawn; in each, up to
`n_holdouts` subjects are held out in turn and predicted from the other k − 1 subjects' responses with
the same cross-validated metric as the model. The median r over the held-out neuroids gives one
point per subset; the curve v(k) = v₀ (1 − e^(−k/τ)) is fitted to bootstrap means over subsets, and
the ceiling is the median v₀ over bootstraps (with a 95% interval). brain-score fits this curve per
neuroid and then takes the median; fitting the median curve gives the same answer when neuroids are
alike and stays affordable with 10⁵ voxels. Ceilings are computed for all neuroids and per ROI.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import OptimizeWarning, curve_fit

from ..errors import NeurolocError
from .metric import Fold, cross_validate
from .recordings import Recordings
from .ridge import DEFAULT_ALPHAS


def saturation(x: np.ndarray, v0: float, tau: float) -> np.ndarray:
    """v(k) = v₀ (1 − exp(−k/τ)): the score a pool of k subjects reaches."""
    return v0 * (1 - np.exp(-x / tau))


@dataclass
class Ceiling:
    """Extrapolated ceilings per level/name (`all`/`all`, `roi`/<label>), with the raw pool scores."""

    table: pd.DataFrame  # level, name, ceiling, low, high, extrapolated
    points: pd.DataFrame  # level, name, n_subjects, subset, r
    notes: list[str] = field(default_factory=list)

    def value(self, level: str = "all", name: str = "all") -> float:
        rows = self.table[(self.table.level == level) & (self.table.name == name)]
        return float(rows.ceiling.iloc[0]) if len(rows) else float("nan")

    @classmethod
    def given(cls, value: float) -> "Ceiling":
        """A ceiling the user supplies (e.g. from a published split-half reliability)."""
        if not 0 < value <= 1:
            raise NeurolocError(f"a ceiling must lie in (0, 1], got {value}")
        table = pd.DataFrame([{"level": "all", "name": "all", "ceiling": value, "low": np.nan, "high": np.nan,
                               "extrapolated": False}])
        return cls(table, pd.DataFrame(columns=["level", "name", "n_subjects", "subset", "r"]), ["given by the user"])


def _subsets(subjects: list[str], k: int, limit: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    if math.comb(len(subjects), k) <= limit:
        return list(itertools.combinations(subjects, k))
    chosen: set[tuple[str, ...]] = set()
    while len(chosen) < limit:
        chosen.add(tuple(sorted(rng.choice(subjects, size=k, replace=False).tolist())))
    return sorted(chosen)


def _extrapolate(points: pd.DataFrame, n_bootstraps: int, rng: np.random.Generator) -> tuple[float, float, float, bool]:
    sizes = sorted(points.n_subjects.unique())
    by_size = [points.loc[points.n_subjects == k, "r"].to_numpy() for k in sizes]
    if len(sizes) < 2:  # one pool size: nothing to extrapolate over
        value = float(np.nanmean(by_size[0]))
        return value, np.nan, np.nan, False
    v0s = []
    for _ in range(n_bootstraps):
        means = [np.nanmean(rng.choice(v, size=len(v), replace=True)) for v in by_size]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(saturation, np.asarray(sizes, float), np.asarray(means),
                                      p0=(min(max(means[-1], 1e-3), 1.0), 1.0), bounds=([0, 1e-6], [1, np.inf]))
            v0s.append(params[0])
        except (RuntimeError, ValueError):
            continue
    if not v0s:
        return float(np.nanmean(by_size[-1])), np.nan, np.nan, False
    return float(np.median(v0s)), float(np.percentile(v0s, 2.5)), float(np.percentile(v0s, 97.5)), True


def intersubject_ceiling(recordings: Recordings, folds: list[Fold], *, alphas: Sequence[float] | None = DEFAULT_ALPHAS,
                         alpha_per_target: bool = False, n_subsets: int = 10, n_holdouts: int = 5,
                         n_bootstraps: int = 100, seed: int = 0, device: str | torch.device = "cpu") -> Ceiling:
    """brain-score's extrapolated inter-subject ceiling (see the module docstring)."""
    subjects = recordings.subjects
    if n_subsets < 1 or n_holdouts < 1:
        raise NeurolocError(f"ceiling subsets and holdouts must be ≥ 1, got {n_subsets} and {n_holdouts}")
    if len(subjects) < 2:
        raise NeurolocError("an inter-subject ceiling needs at least two subjects; give --ceiling instead")
    rng = np.random.default_rng(seed)
    labels = recordings.neuroids["subject"].astype(str).to_numpy()
    rois = recordings.neuroids["roi"].astype(str).to_numpy()
    rows = []
    for k in range(2, len(subjects) + 1):
        for index, subset in enumerate(_subsets(subjects, k, n_subsets, rng)):
            held = rng.choice(list(subset), size=min(n_holdouts, k), replace=False)
            per_neuroid = np.full(recordings.n_neuroids, np.nan)
            for subject in held:
                target = labels == subject
                pool = np.isin(labels, [s for s in subset if s != subject])
                scores = cross_validate(recordings.responses[:, pool], recordings.responses[:, target], folds,
                                        alphas=alphas, alpha_per_target=alpha_per_target, device=device)
                per_neuroid[target] = scores.per_neuroid()
            scored = np.isfinite(per_neuroid)
            rows.append({"level": "all", "name": "all", "n_subjects": k, "subset": index,
                         "r": float(np.median(per_neuroid[scored]))})
            if len(set(rois)) > 1:
                for roi in sorted(set(rois)):
                    picked = scored & (rois == roi)
                    if picked.any():
                        rows.append({"level": "roi", "name": roi, "n_subjects": k, "subset": index,
                                     "r": float(np.median(per_neuroid[picked]))})
    points = pd.DataFrame(rows)
    table, notes = [], []
    for (level, name), group in points.groupby(["level", "name"], sort=False):
        value, low, high, extrapolated = _extrapolate(group, n_bootstraps, rng)
        table.append({"level": level, "name": name, "ceiling": value, "low": low, "high": high,
                      "extrapolated": extrapolated})
    if not table[0]["extrapolated"]:
        notes.append(f"{len(subjects)} subjects: the ceiling is the mean pooled score, not extrapolated")
    return Ceiling(pd.DataFrame(table), points, notes)
