"""Ridge regression with the penalty chosen by efficient leave-one-out, in torch (CPU or GPU).

One decomposition of the standardised training features serves every penalty and target: with
X = U S Vᵀ (centred), the hat matrix is H(α) = 11ᵀ/n + U diag(s²/(s²+α)) Uᵀ and the leave-one-out
residual of sample i is (yᵢ − ŷᵢ)/(1 − Hᵢᵢ) (Golub, Heath & Wahba 1979) — the computation behind
scikit-learn's `RidgeCV(cv=None)` and brain-score's `RidgeGCVTorch`. himalaya offers K-fold search
over penalties only (an SVD per inner fold), so for brain-score's leave-one-out choice this
closed form is both exact and faster. Targets are processed in batches, so 10⁵ voxels fit in memory.
`alphas=None` gives plain least squares (minimum-norm, like `sklearn.linear_model.LinearRegression`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import NeurolocError

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 7))


def standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score both with the training fold's mean and sd (constant columns keep sd 1)."""
    mean = train.mean(0)
    sd = train.std(0, unbiased=False)
    sd = torch.where(sd > 1e-12 * (1 + mean.abs()), sd, torch.ones_like(sd))
    return (train - mean) / sd, (test - mean) / sd


@dataclass
class RidgeSolution:
    """Held-out predictions and, per target, the penalty chosen (0 for least squares)."""

    predictions: torch.Tensor
    alphas: torch.Tensor


def _check_alphas(alphas: Sequence[float] | None) -> torch.Tensor | None:
    if alphas is None:
        return None
    values = torch.as_tensor(list(alphas), dtype=torch.float64)
    if values.numel() == 0 or (values <= 0).any():
        raise NeurolocError(f"ridge penalties must be positive, got {list(alphas)}")
    return values


def _decompose(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left singular vectors U and singular values s of the (centred) training features, and the test
    features in the right singular basis (x_test V). With more features than stimuli (a whole model,
    or other subjects' voxels in the ceiling) the n × n Gram matrix's eigendecomposition gives the
    same U and s about 15× faster than an SVD of the wide matrix."""
    n, p = x_train.shape
    eps = torch.finfo(x_train.dtype).eps
    if p > n:
        eigenvalues, u = torch.linalg.eigh(x_train @ x_train.T)
        keep = eigenvalues > eigenvalues.max().clamp(min=1e-30) * n * eps * 10
        u, s = u[:, keep], eigenvalues[keep].sqrt()
        return u, s, (x_test @ x_train.T) @ u / s
    u, s, vh = torch.linalg.svd(x_train, full_matrices=False)
    keep = s > s.max().clamp(min=1e-30) * max(n, p) * eps
    return u[:, keep], s[keep], x_test @ vh[keep].T


def fit_predict(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, *,
                alphas: Sequence[float] | None = DEFAULT_ALPHAS, alpha_per_target: bool = False,
                standardize_features: bool = True, target_batch: int = 16384) -> RidgeSolution:
    """Fit on the training fold and predict `x_test`.

    The penalty minimises the leave-one-out squared error (per target with `alpha_per_target`, else
    its mean over targets, as scikit-learn's and brain-score's RidgeCV do). An intercept is always
    fitted and never penalised.
    """
    grid = _check_alphas(alphas)
    n = x_train.shape[0]
    if n < 2:
        raise NeurolocError(f"a training fold has {n} stimuli; need at least 2")
    if standardize_features:
        x_train, x_test = standardize(x_train, x_test)
    else:
        mean = x_train.mean(0)
        x_train, x_test = x_train - mean, x_test - mean
    y_mean = y_train.mean(0)
    u, s, test_basis = _decompose(x_train, x_test)
    s2 = s * s
    n_targets = y_train.shape[1]
    predictions = torch.empty(x_test.shape[0], n_targets, dtype=y_train.dtype, device=y_train.device)
    if grid is None:
        for start in range(0, n_targets, target_batch):
            block = slice(start, start + target_batch)
            uty = u.T @ (y_train[:, block] - y_mean[block])
            predictions[:, block] = test_basis @ (uty / s[:, None]) + y_mean[block]
        return RidgeSolution(predictions, torch.zeros(n_targets, dtype=torch.float64))

    grid_t = grid.to(s.dtype).to(s.device)
    shrink = s2[None, :] / (s2[None, :] + grid_t[:, None])  # (n_alphas, rank)
    leverage = 1.0 / n + (u * u) @ shrink.T  # (n, n_alphas): diagonal of H(α)
    errors = torch.empty(len(grid_t), n_targets, dtype=torch.float64, device=y_train.device)
    for start in range(0, n_targets, target_batch):
        block = slice(start, start + target_batch)
        centred = y_train[:, block] - y_mean[block]
        uty = u.T @ centred
        for a in range(len(grid_t)):
            residual = (centred - u @ (shrink[a][:, None] * uty)) / (1.0 - leverage[:, a:a + 1])
            errors[a, block] = (residual * residual).mean(0).double()
    if alpha_per_target:
        best = errors.argmin(0)
    else:
        best = torch.full((n_targets,), int(errors.mean(1).argmin()), dtype=torch.long, device=errors.device)
    for a in torch.unique(best).tolist():
        columns = torch.nonzero(best == a).flatten()
        weights = s / (s2 + grid_t[a])
        for start in range(0, columns.numel(), target_batch):
            cols = columns[start:start + target_batch]
            uty = u.T @ (y_train[:, cols] - y_mean[cols])
            predictions[:, cols] = test_basis @ (weights[:, None] * uty) + y_mean[cols]
    return RidgeSolution(predictions, grid[best.cpu()])


def pearson_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each column of `a` with the same column of `b` (NaN where either is constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    denominator = a.norm(dim=0) * b.norm(dim=0)
    r = (a * b).sum(0) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, float("nan")))
