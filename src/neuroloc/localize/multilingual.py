"""Zhang et al.'s (2025) language-specific / -related / -agnostic split, registered as the score
`specific_related` beside Tang et al.'s `lape`; and the pieces both share (the probability bar, entropy
normalised over the labels, the categories).

Both read p[k, u], the fraction of label k's tokens on which unit u is > 0, and one *bar*: the `quantile`
(default 0.95) of all (label × unit) probabilities; a unit serves label k when p[k, u] exceeds the bar.
Zhang's score is H/log K − λ · max_k p[k, u] / max p (normalised entropy minus λ times the normalised
largest probability); the `percent` % of all units with the lowest score among units above the bar
somewhere are kept, with λ the largest value (doubling, then bisection) for which no kept unit is above the
bar for every label. Kept units serving one label are *specific*, 2…K−1 *related*; units above the bar for
all K labels (kept or not) are *agnostic* and serve every label.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from ..errors import NeurolocError
from ..record.stats import StatsStore
from ..stimuli.design import Design
from .score_functions import Scores, activation_probabilities, register_score
from .scores import lape_scores
from .selection import select_top

__all__ = ["CATEGORIES", "categorize", "normalized_entropy", "probability_bar", "specific_related",
           "specific_related_lambda", "specific_related_select", "zhang_scores"]

CATEGORIES = ("specific", "related", "agnostic")
MAX_LAMBDA = 64.0
TOLERANCE = 1e-4


def probability_bar(probability: np.ndarray, quantile: float) -> float:
    """The `quantile` of all (label × unit) activation probabilities."""
    if isinstance(quantile, bool) or not isinstance(quantile, Real) or not 0 <= quantile < 1:
        raise NeurolocError(f"quantile must be in [0, 1), got {quantile!r}")
    return float(np.quantile(np.asarray(probability, dtype=np.float64), quantile))


def normalized_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy of each unit's normalised probabilities over labels, divided by log K (in [0, 1])."""
    probability = np.asarray(probability, dtype=np.float64)
    return lape_scores(probability) / np.log(probability.shape[0])


def zhang_scores(probability: np.ndarray, lam: float) -> np.ndarray:
    """H/log K − λ · max_k p / max p: low for units that prefer few labels and fire often there."""
    probability = np.asarray(probability, dtype=np.float64)
    top = probability.max()
    peak = probability.max(axis=0) / top if top > 0 else np.zeros(probability.shape[1])
    return normalized_entropy(probability) - lam * peak


def categorize(assignment: np.ndarray, selected: np.ndarray | None = None) -> np.ndarray:
    """'specific' (one label), 'related' (2…K−1), 'agnostic' (all K) per unit; '' when not selected."""
    assignment = np.asarray(assignment, dtype=bool)
    n = assignment.sum(axis=0)
    k = assignment.shape[0]
    category = np.where(n == 1, "specific", np.where(n == k, "agnostic", np.where(n > 1, "related", "")))
    if selected is not None:
        category = np.where(selected, category, "")
    return category.astype(object)


def _kept(probability: np.ndarray, percent: float, quantile: float):
    bar = probability_bar(probability, quantile)
    above = probability > bar
    everywhere = above.all(axis=0)

    def keep(lam: float) -> np.ndarray:
        return select_top(zhang_scores(probability, lam), percent=percent, eligible=above.any(axis=0),
                          largest=False, allow_fewer=True)

    return above, everywhere, keep


def specific_related_lambda(probability: np.ndarray, *, percent: float, quantile: float,
                            max_lambda: float = MAX_LAMBDA, tolerance: float = TOLERANCE) -> float:
    """The largest λ (doubling up to `max_lambda`, then bisecting to `tolerance`) for which no kept unit
    is above the bar for every label; 0 when even λ = 0 keeps one (such units are then dropped)."""
    probability = np.asarray(probability, dtype=np.float64)
    _, everywhere, keep = _kept(probability, percent, quantile)

    def clean(lam: float) -> bool:
        return not (keep(lam) & everywhere).any()

    low = 0.0
    if clean(low):
        high = 1.0
        while high < max_lambda and clean(high):
            low, high = high, high * 2
        if clean(high):
            low = high
        else:
            while high - low > tolerance:
                middle = (low + high) / 2
                low, high = (middle, high) if clean(middle) else (low, middle)
    return low


def specific_related_select(probability: np.ndarray, *, percent: float, quantile: float,
                            max_lambda: float = MAX_LAMBDA, tolerance: float = TOLERANCE) -> np.ndarray:
    """[labels, units] mask: each kept unit assigned to the labels where it is above the bar, each agnostic
    unit to every label (`categorize(mask, mask.any(0))` gives the categories)."""
    probability = np.asarray(probability, dtype=np.float64)
    above, everywhere, keep = _kept(probability, percent, quantile)
    lam = specific_related_lambda(probability, percent=percent, quantile=quantile, max_lambda=max_lambda,
                                  tolerance=tolerance)
    kept = keep(lam) & ~everywhere
    return (above & kept[None, :]) | (above & everywhere[None, :])


@register_score("specific_related", needs=("tokens",), designs=("groups", "one_vs_rest"),
                description="language-specific, -related and -agnostic units: normalised entropy minus λ times the "
                            "normalised largest activation probability (Zhang et al. 2025)")
def specific_related(stats: StatsStore, design: Design, *, quantile: float = 0.95) -> Scores:
    """Scores: the normalised entropy (Zhang's score at λ = 0) where a unit is above the bar, NaN elsewhere;
    the selection rule (`support`) is `specific_related_select` at the percent asked for."""
    labels = design.resolve(stats.labels("tokens")).labels
    prob = activation_probabilities(stats, labels)
    entropy = normalized_entropy(prob)
    values = np.where(prob > probability_bar(prob, quantile), entropy[None, :], np.nan)

    def support(percent: float | None, count: int | None) -> np.ndarray:
        share = percent if percent is not None else 100.0 * count / prob.shape[1]
        return specific_related_select(prob, percent=share, quantile=quantile)

    return Scores(values, labels, larger_is_better=False, support=support,
                  columns={"probability": prob, "entropy": np.broadcast_to(entropy, prob.shape).copy()})
