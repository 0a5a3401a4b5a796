"""Language units from activation-probability tables: LAPE (Tang et al., 2024) and the language-specific
/ -related / -agnostic split (Zhang et al., 2025). Pure functions on [n_languages, n_units] arrays.

Both methods start from p[k, u], the fraction of language k's tokens on which unit u's gate activation is
> 0, and one *bar*: the `quantile` (default 0.95) of all (language × unit) probabilities. A unit "serves"
language k when p[k, u] exceeds the bar.

- LAPE: normalise each unit's probabilities over languages, take the entropy; among units above the bar
  in some language, keep the `percent` % of all units with the lowest entropy; assign each kept unit to
  every language where it is above the bar.
- Specific/related (Zhang et al.): score = H/log K − λ · max_k p[k, u] / max p (normalised entropy minus
  λ times the normalised largest probability); keep the `percent` % lowest scores among units above the
  bar somewhere, with λ the largest value (found by bisection) for which no kept unit is above the bar in
  every language. Kept units serving one language are language-specific, 2…K−1 language-related; units
  above the bar in all K languages (kept or not) are language-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Sequence

import numpy as np
import pandas as pd

from ...errors import NeurolocError
from ...localize.scores import lape_scores, lape_select
from ...localize.selection import select_top

__all__ = ["CATEGORIES", "LanguageSelection", "activation_probability", "categorize", "lape",
           "normalized_entropy", "overlap_table", "probability_bar", "specific_related", "zhang_scores"]

CATEGORIES = ("specific", "related", "agnostic")


@dataclass
class LanguageSelection:
    """The outcome of a selection method.

    `assignment[k, u]`: unit u serves language k; `category[u]`: "specific", "related", "agnostic" or ""
    (not selected); `score[u]`: what was ranked (LAPE entropy in nats, or Zhang's score); `bar`: the
    probability threshold; `lambda_`: Zhang's λ (None for LAPE).
    """

    method: str
    languages: list[str]
    probability: np.ndarray
    entropy: np.ndarray
    score: np.ndarray
    bar: float
    assignment: np.ndarray
    category: np.ndarray
    lambda_: float | None = None

    def counts(self) -> dict[str, int]:
        """Units per category, and specific or related units per language (`n_<lang>`)."""
        out = {c: int((self.category == c).sum()) for c in CATEGORIES}
        chosen = np.isin(self.category, ["specific", "related"])
        out.update({f"n_{lang}": int((self.assignment[k] & chosen).sum()) for k, lang in enumerate(self.languages)})
        return out


def activation_probability(positive: np.ndarray, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """p[k, u] = positive[k, u] / tokens[k]: counts of act > 0 over a language's tokens."""
    positive = np.asarray(positive, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    if positive.ndim != 2 or tokens.shape != (positive.shape[0],):
        raise NeurolocError(f"counts must be [n_languages, n_units] with one token total per language, got "
                            f"{positive.shape} and {tokens.shape}")
    if np.any(tokens <= 0):
        raise NeurolocError(f"a language has no tokens (token totals {tokens.tolist()}); give it text")
    if np.any(positive < 0) or np.any(positive > tokens[:, None]):
        raise NeurolocError("activation counts must lie between 0 and the language's token count")
    return positive / tokens[:, None]


def probability_bar(probability: np.ndarray, quantile: float = 0.95) -> float:
    """The `quantile` of all (language × unit) activation probabilities."""
    if isinstance(quantile, bool) or not isinstance(quantile, Real) or not 0 <= quantile < 1:
        raise NeurolocError(f"quantile must be in [0, 1), got {quantile!r}")
    return float(np.quantile(np.asarray(probability, dtype=np.float64), quantile))


def normalized_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy of each unit's normalised probabilities over languages, divided by log K (in [0, 1])."""
    probability = np.asarray(probability, dtype=np.float64)
    return lape_scores(probability) / np.log(probability.shape[0])


def zhang_scores(probability: np.ndarray, lam: float) -> np.ndarray:
    """H/log K − λ · max_k p / max p: low for units that prefer few languages and fire often there."""
    probability = np.asarray(probability, dtype=np.float64)
    top = probability.max()
    peak = probability.max(axis=0) / top if top > 0 else np.zeros(probability.shape[1])
    return normalized_entropy(probability) - lam * peak


def categorize(assignment: np.ndarray, selected: np.ndarray | None = None) -> np.ndarray:
    """'specific' (one language), 'related' (2…K−1), 'agnostic' (all K) per unit; '' when not selected."""
    n = assignment.sum(axis=0)
    k = assignment.shape[0]
    category = np.where(n == 1, "specific", np.where(n == k, "agnostic", np.where(n > 1, "related", "")))
    if selected is not None:
        category = np.where(selected, category, "")
    return category.astype(object)


def lape(probability: np.ndarray, languages: Sequence[str], *, percent: float = 1.0,
         quantile: float = 0.95) -> LanguageSelection:
    """Tang et al.'s LAPE selection (see the module docstring)."""
    probability = _check(probability, languages)
    assignment = lape_select(probability, entropy_percent=percent, min_probability_quantile=quantile)
    entropy = lape_scores(probability)
    return LanguageSelection("lape", list(languages), probability, entropy, entropy,
                             probability_bar(probability, quantile), assignment,
                             categorize(assignment, assignment.any(axis=0)))


def specific_related(probability: np.ndarray, languages: Sequence[str], *, percent: float = 1.0,
                     quantile: float = 0.95, max_lambda: float = 64.0, tolerance: float = 1e-4) -> LanguageSelection:
    """Zhang et al.'s selection with λ by bisection (see the module docstring).

    λ = 0 is pure normalised entropy. λ grows (doubling up to `max_lambda`, then bisecting to
    `tolerance`) while no kept unit is above the bar in every language; the largest such λ is used. If
    even λ = 0 keeps an all-language unit, λ = 0 and such units are dropped from the kept set (they are
    language-agnostic, not specific or related).
    """
    probability = _check(probability, languages)
    bar = probability_bar(probability, quantile)
    above = probability > bar
    everywhere = above.all(axis=0)
    eligible = above.any(axis=0)

    def keep(lam: float) -> np.ndarray:
        return select_top(zhang_scores(probability, lam), percent=percent, eligible=eligible, largest=False,
                          allow_fewer=True)

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
    kept = keep(low) & ~everywhere
    assignment = above & kept[None, :]
    category = categorize(assignment, kept)
    category = np.where(everywhere, "agnostic", category).astype(object)
    assignment = assignment | (above & everywhere[None, :])
    return LanguageSelection("specific-related", list(languages), probability, normalized_entropy(probability),
                             zhang_scores(probability, low), bar, assignment, category, lambda_=low)


def overlap_table(assignment: np.ndarray, languages: Sequence[str], *, categories: np.ndarray | None = None,
                  exclude: Sequence[str] = ("agnostic",)) -> pd.DataFrame:
    """K × K counts of units serving both languages (diagonal: units per language), leaving out units of
    the `exclude` categories (agnostic units serve every pair by definition)."""
    assignment = np.asarray(assignment, dtype=bool)
    if categories is not None and exclude:
        assignment = assignment & ~np.isin(categories, list(exclude))[None, :]
    counts = assignment.astype(np.int64) @ assignment.T.astype(np.int64)
    frame = pd.DataFrame(counts, index=pd.Index(languages, name="language"),
                         columns=pd.Index(languages, name="shares units with"))
    return frame


def _check(probability: np.ndarray, languages: Sequence[str]) -> np.ndarray:
    probability = np.asarray(probability, dtype=np.float64)
    if probability.ndim != 2 or probability.shape[0] != len(languages):
        raise NeurolocError(f"activation probabilities {probability.shape} do not match {len(languages)} languages")
    if len(languages) < 2:
        raise NeurolocError("language units need at least two languages")
    return probability
