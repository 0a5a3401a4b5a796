"""Per-unit statistics computed from streamed sufficient statistics, never from stored activations.

Each condition arrives as (n, mean, M2): the item count and, per unit, the mean and the sum of squared
deviations from it (Welford / Chan et al.), float64 arrays of one shape. From these we get the Welch t
test of the language localizer (AlKhamissi et al., 2025), Cohen's d, Benjamini-Hochberg adjusted
p-values, and the language activation probability entropy (LAPE) of Tang et al. (2024).

Constant units (zero variance in both conditions) have no standard error. Rather than NaN, they get the
limit a vanishing noise would give: t (or d) = 0 when the two means are equal and +/-inf when they
differ, so a constant unit that separates the conditions perfectly ranks first and one that never
changes ranks as unselective.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from neuroloc.errors import NeurolocError
from neuroloc.localize.selection import select_top

__all__ = ["WelchResult", "benjamini_hochberg", "cohens_d", "lape_scores", "lape_select", "welch_t_test"]


@dataclass(frozen=True)
class WelchResult:
    """Welch t statistic (condition a minus b), Welch-Satterthwaite degrees of freedom, two-sided p."""

    t: np.ndarray
    df: np.ndarray
    p: np.ndarray


def welch_t_test(
    n_a: int, mean_a: ArrayLike, m2_a: ArrayLike, n_b: int, mean_b: ArrayLike, m2_b: ArrayLike
) -> WelchResult:
    """Unequal-variance t test of a against b for every unit, as `scipy.stats.ttest_ind(equal_var=False)`.

    Needs n >= 2 in each condition (a variance needs two items). Constant units follow the module's
    convention: t = 0, p = 1 for equal means; t = +/-inf, p = 0 otherwise; their df is n_a + n_b - 2.
    """
    mean_a, m2_a, mean_b, m2_b = _moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b, min_n=2)
    share_a = m2_a / ((n_a - 1) * n_a)  # squared standard error of each mean
    share_b = m2_b / ((n_b - 1) * n_b)
    se2 = share_a + share_b
    constant = se2 == 0
    safe_se2 = np.where(constant, 1.0, se2)
    t = _ratio(mean_a - mean_b, np.sqrt(safe_se2), constant)
    # Welch-Satterthwaite, written in the fractions share/se2 so tiny variances cannot underflow to 0/0.
    frac_a, frac_b = share_a / safe_se2, share_b / safe_se2
    inverse_df = frac_a**2 / (n_a - 1) + frac_b**2 / (n_b - 1)
    df = np.where(constant, n_a + n_b - 2.0, 1.0 / np.where(constant, 1.0, inverse_df))
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return WelchResult(t=t, df=df, p=p)


def cohens_d(
    n_a: int, mean_a: ArrayLike, m2_a: ArrayLike, n_b: int, mean_b: ArrayLike, m2_b: ArrayLike
) -> np.ndarray:
    """Standardized mean difference (a minus b) over the pooled SD sqrt((M2_a + M2_b) / (n_a + n_b - 2)).

    Needs n >= 1 per condition and n_a + n_b >= 3. Constant units give 0 or +/-inf (module convention).
    """
    mean_a, m2_a, mean_b, m2_b = _moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b, min_n=1)
    if n_a + n_b < 3:
        raise NeurolocError(f"cohens_d: n_a + n_b must be >= 3 for a pooled SD, got {n_a} + {n_b}")
    pooled_var = (m2_a + m2_b) / (n_a + n_b - 2)
    constant = pooled_var == 0
    return _ratio(mean_a - mean_b, np.sqrt(np.where(constant, 1.0, pooled_var)), constant)


def benjamini_hochberg(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (monotone in p, capped at 1), all entries as one family.

    Matches `scipy.stats.false_discovery_control(p, method="bh")` for a flat vector; keep the units with
    adjusted p <= alpha to control the false discovery rate at alpha.
    """
    values = np.asarray(p, dtype=np.float64)
    if not np.all((values >= 0) & (values <= 1)):
        raise NeurolocError("benjamini_hochberg: p-values must lie in [0, 1] and not be NaN")
    flat = values.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")[::-1]  # largest first
    scaled = flat[order] * m / np.arange(m, 0, -1)
    adjusted = np.empty_like(flat)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled), 1.0)
    return adjusted.reshape(values.shape)


def lape_scores(activation_probability: ArrayLike) -> np.ndarray:
    """Language activation probability entropy per unit (Tang et al., 2024); low = language-specific.

    `activation_probability[l, u]` is how often unit u is active (e.g. > 0) on language l. Each unit's
    column is normalized into a distribution over languages and its entropy (nats) returned, in
    [0, log(n_languages)]. A unit never active in any language carries no language preference and gets
    the maximum, log(n_languages).
    """
    prob = _activation_probability(activation_probability)
    total = prob.sum(axis=0)
    silent = total == 0
    share = np.where(silent, 1.0 / prob.shape[0], prob / np.where(silent, 1.0, total))
    log_share = np.log(np.where(share > 0, share, 1.0))  # 0 * log 0 = 0
    return -(share * log_share).sum(axis=0)


def lape_select(
    activation_probability: ArrayLike, *, entropy_percent: float = 1.0, min_probability_quantile: float = 0.95
) -> np.ndarray:
    """Language-specific units as in Tang et al. (2024): a [n_languages, n_units] boolean mask.

    Candidates are units active in some language more often than the `min_probability_quantile` of all
    activation probabilities; of those, the `entropy_percent` % of all units with the lowest LAPE are kept
    (fewer if fewer are candidates), and each kept unit is assigned to every language where its
    probability exceeds that same threshold. `mask.any(axis=0)` is the set of language-specific units.
    """
    prob = _activation_probability(activation_probability)
    q = min_probability_quantile
    if isinstance(q, bool) or not isinstance(q, Real) or not 0 <= q < 1:
        raise NeurolocError(f"lape_select: min_probability_quantile must be in [0, 1), got {q!r}")
    threshold = np.quantile(prob, q)
    above = prob > threshold
    if not above.any():
        raise NeurolocError(
            f"lape_select: no activation probability exceeds its {q:g} quantile "
            f"({threshold:.6g}); lower min_probability_quantile"
        )
    kept = select_top(
        lape_scores(prob), percent=entropy_percent, eligible=above.any(axis=0), largest=False, allow_fewer=True
    )
    return above & kept


def _ratio(difference: np.ndarray, scale: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """difference / scale, with 0 or +/-inf where the scale is zero (`constant`)."""
    limit = np.where(difference == 0, 0.0, np.copysign(np.inf, difference))
    return np.where(constant, limit, difference / scale)


def _moments(
    n_a: int, mean_a: ArrayLike, m2_a: ArrayLike, n_b: int, mean_b: ArrayLike, m2_b: ArrayLike, *, min_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate two conditions' (n, mean, M2) and return the arrays as float64, M2 clipped at 0.

    Merging moments can leave M2 a rounding error below zero; larger negative values are a bug upstream.
    """
    for name, n in (("n_a", n_a), ("n_b", n_b)):
        if isinstance(n, bool) or not isinstance(n, Integral) or n < min_n:
            raise NeurolocError(f"{name} must be an int >= {min_n} (items in the condition), got {n!r}")
    arrays = [np.asarray(x, dtype=np.float64) for x in (mean_a, m2_a, mean_b, m2_b)]
    names = ("mean_a", "m2_a", "mean_b", "m2_b")
    if len({a.shape for a in arrays}) > 1:
        shapes = ", ".join(f"{name} {a.shape}" for name, a in zip(names, arrays))
        raise NeurolocError(f"condition statistics must share one shape, got {shapes}")
    for name, a in zip(names, arrays):
        if not np.all(np.isfinite(a)):
            raise NeurolocError(f"{name} has NaN or infinite entries; the recorded activations overflowed")
    mean_a, m2_a, mean_b, m2_b = arrays
    for name, n, m2, mean in (("m2_a", n_a, m2_a, mean_a), ("m2_b", n_b, m2_b, mean_b)):
        if np.any(m2 < -1e-9 * n * (1.0 + mean**2)):
            raise NeurolocError(f"{name} has negative entries; M2 is a sum of squares and must be >= 0")
    return mean_a, np.maximum(m2_a, 0.0), mean_b, np.maximum(m2_b, 0.0)


def _activation_probability(activation_probability: ArrayLike) -> np.ndarray:
    prob = np.asarray(activation_probability, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[0] < 2:
        raise NeurolocError(
            f"activation_probability must be [n_languages >= 2, n_units], got shape {prob.shape}"
        )
    if not np.all((prob >= 0) & (prob <= 1)):
        raise NeurolocError("activation_probability must lie in [0, 1] and not be NaN")
    return prob
