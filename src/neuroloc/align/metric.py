"""Cross-validated encoding scores: grouped K-fold over passages, ridge per fold, Pearson r per neuroid.

Folds never split a passage (or story) between training and test, because neighbouring sentences
of a passage share topic and words, and a model that has seen the passage predicts its other
sentences for reasons that have nothing to do with language processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from .ridge import DEFAULT_ALPHAS, fit_predict, pearson_columns

Fold = tuple[np.ndarray, np.ndarray]


def group_folds(groups: Sequence[str], n_folds: int = 10, seed: int = 0) -> list[Fold]:
    """(train, test) index arrays, one per fold; whole groups go to one fold, folds balanced by size.

    Uses min(n_folds, number of groups) folds; raises when there are fewer stimuli than folds
    requested or fewer than two groups.
    """
    groups = np.asarray([str(g) for g in groups])
    if n_folds < 2:
        raise NeurolocError(f"--folds must be at least 2, got {n_folds}")
    if len(groups) < n_folds:
        way = (f"lower --folds to at most {len(groups)} or add stimuli" if len(groups) >= 2 else
               "cross-validation needs at least 2 stimuli (2 folds); add stimuli")
        raise NeurolocError(f"{len(groups)} {'stimulus' if len(groups) == 1 else 'stimuli'} but {n_folds} folds "
                            f"requested; {way}")
    names, sizes = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise NeurolocError(f"all {len(groups)} stimuli belong to one passage/story {names[0]!r}; cross-validation "
                            "needs at least two groups (check the group column)")
    k = min(n_folds, len(names))
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest groups first, ties in random order
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    for g in order:
        fold = int(np.argmin(load))
        fold_of_group[g] = fold
        load[fold] += sizes[g]
    fold_of_stimulus = fold_of_group[np.searchsorted(names, groups)]
    return [(np.flatnonzero(fold_of_stimulus != f), np.flatnonzero(fold_of_stimulus == f)) for f in range(k)]


@dataclass
class CVScores:
    """Pearson r (n_folds × n_neuroids) on held-out stimuli and the penalty each fold chose."""

    r: np.ndarray
    alphas: np.ndarray

    def score(self) -> float:
        """brain-score's aggregate: median over neuroids within each fold, mean over folds."""
        return float(np.nanmean(np.nanmedian(self.r, axis=1)))

    def per_neuroid(self) -> np.ndarray:
        return np.nanmean(self.r, axis=0)


def cross_validate(features: np.ndarray | torch.Tensor, responses: np.ndarray | torch.Tensor, folds: list[Fold], *,
                   alphas: Sequence[float] | None = DEFAULT_ALPHAS, alpha_per_target: bool = False,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> CVScores:
    """Fit features → responses on each training fold (standardised inside it), score on its test fold."""
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).to(device, dtype)
    y = torch.as_tensor(np.asarray(responses) if not torch.is_tensor(responses) else responses).to(device, dtype)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise NeurolocError(f"features {tuple(x.shape)} and responses {tuple(y.shape)} need the same stimuli")
    if not torch.isfinite(x).all():
        raise NeurolocError("features contain NaN or infinite values")
    rs, chosen = [], []
    for train, test in folds:
        if len(test) < 2:
            raise NeurolocError(f"a test fold holds {len(test)} stimulus; Pearson r needs at least 2 (use fewer folds)")
        train_t = torch.as_tensor(train, device=x.device)
        test_t = torch.as_tensor(test, device=x.device)
        solution = fit_predict(x[train_t], y[train_t], x[test_t], alphas=alphas, alpha_per_target=alpha_per_target)
        rs.append(pearson_columns(solution.predictions, y[test_t]).double().cpu().numpy())
        chosen.append(solution.alphas.numpy())
    return CVScores(np.stack(rs), np.stack(chosen))


def score_table(r: np.ndarray, neuroids: pd.DataFrame) -> pd.DataFrame:
    """Per fold: the median r over all neuroids, over each ROI and over each subject (long form)."""
    rows = []
    levels = [("all", np.array(["all"] * len(neuroids)))]
    if neuroids["roi"].nunique() > 1:
        levels.append(("roi", neuroids["roi"].astype(str).to_numpy()))
    if neuroids["subject"].nunique() > 1:
        levels.append(("subject", neuroids["subject"].astype(str).to_numpy()))
    for level, labels in levels:
        for name in sorted(set(labels)):
            picked = r[:, labels == name]
            for fold in range(r.shape[0]):
                rows.append({"level": level, "name": name, "fold": fold, "n_neuroids": int(picked.shape[1]),
                             "r": float(np.nanmedian(picked[fold])) if np.isfinite(picked[fold]).any() else np.nan})
    return pd.DataFrame(rows)
