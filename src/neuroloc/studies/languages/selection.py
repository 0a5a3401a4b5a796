"""Language units from a fitted `Localizer`: a registered score on token statistics with one label per
language — `lape` (Tang et al., 2024) or `specific_related` (Zhang et al., 2025; see
`neuroloc.localize.multilingual`) — read into a `LanguageSelection` (which units serve which language, their
categories and ranking scores), and the language × language overlap table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import NeurolocError
from ...localize.localizer import Localizer
from ...localize.multilingual import (CATEGORIES, categorize, normalized_entropy, probability_bar,
                                      specific_related_lambda, zhang_scores)
from ...localize.score_functions import activation_probabilities
from ...localize.scores import lape_scores

__all__ = ["CATEGORIES", "SELECTION_SCORES", "LanguageSelection", "overlap_table"]

SELECTION_SCORES = ("lape", "specific_related")  # registered scores whose selection assigns units to languages
DEFAULT_QUANTILE = 0.95  # the scores' own default bar


@dataclass
class LanguageSelection:
    """The outcome of a selection.

    `assignment[k, u]`: unit u serves language k; `category[u]`: "specific", "related", "agnostic" or ""
    (not selected); `score[u]`: what was ranked (LAPE's entropy in nats, or Zhang's score at `lambda_`);
    `entropy[u]`: LAPE's entropy (nats) or the normalised entropy (specific_related); `bar`: the probability
    threshold; `lambda_`: Zhang's λ (None for LAPE).
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

    @classmethod
    def from_localizer(cls, localizer: Localizer) -> "LanguageSelection":
        """Read a localizer fitted with `score` lape or specific_related on token statistics (one label per
        language) at its `percent`."""
        method = localizer.score_function.name
        if method not in SELECTION_SCORES:
            raise NeurolocError(f"score {method!r} does not assign units to languages; use one of "
                                f"{', '.join(SELECTION_SCORES)}")
        languages = list(localizer.labels_)
        silent = [lang for lang in languages if localizer.stats_.count(lang, "tokens") == 0]
        if silent:
            raise NeurolocError(f"no tokens were counted for {', '.join(silent)}; give every language some text "
                                "(with --response-only: a response after each prompt)")
        probability = activation_probabilities(localizer.stats_, languages)
        quantile = DEFAULT_QUANTILE if localizer.quantile is None else localizer.quantile
        percent = 1.0 if localizer.percent is None else localizer.percent
        assignment = np.atleast_2d(np.asarray(localizer.get_support(), dtype=bool))
        lam = None
        if method == "specific_related":
            entropy = normalized_entropy(probability)
            lam = specific_related_lambda(probability, percent=percent, quantile=quantile)
            score = zhang_scores(probability, lam)
        else:
            entropy = score = lape_scores(probability)
        return cls(method, languages, probability, entropy, score, probability_bar(probability, quantile),
                   assignment, categorize(assignment, assignment.any(axis=0)), lambda_=lam)

    def counts(self) -> dict[str, int]:
        """Units per category, and specific or related units per language (`n_<lang>`)."""
        out = {c: int((self.category == c).sum()) for c in CATEGORIES}
        chosen = np.isin(self.category, ["specific", "related"])
        out.update({f"n_{lang}": int((self.assignment[k] & chosen).sum()) for k, lang in enumerate(self.languages)})
        return out


def overlap_table(assignment: np.ndarray, languages: list[str], *, categories: np.ndarray | None = None,
                  exclude: tuple[str, ...] = ("agnostic",)) -> pd.DataFrame:
    """K × K counts of units serving both languages (diagonal: units per language), leaving out units of
    the `exclude` categories (agnostic units serve every pair by definition)."""
    assignment = np.asarray(assignment, dtype=bool)
    if categories is not None and exclude:
        assignment = assignment & ~np.isin(categories, list(exclude))[None, :]
    counts = assignment.astype(np.int64) @ assignment.T.astype(np.int64)
    return pd.DataFrame(counts, index=pd.Index(languages, name="language"),
                        columns=pd.Index(languages, name="shares units with"))
