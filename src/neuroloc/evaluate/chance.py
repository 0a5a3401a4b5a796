"""Is a model above chance on a benchmark subset? A one-sided binomial test on the results table.

Benchmarks that report `chance` (the accuracy of guessing) and `n_items` beside a metric (the choice
benchmarks: reasoning, theory_of_mind) can be tested against chance from their result rows alone, so a
report can mark the subsets where a model is at chance instead of colouring noise. With k = round(value ×
n_items) successes, the p-value is P(X ≥ k) for X ~ Binomial(n_items, chance) (`scipy.stats.binomtest`,
alternative "greater"). Where a subset mixes items with different numbers of choices, `chance` is their
mean and the number of successes of a guesser is Poisson-binomial; for k ≥ n·chance + 1 its upper tail is
no heavier than the binomial's (Hoeffding, 1956, Theorem 4), so the test stays conservative there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..errors import NeurolocError

__all__ = ["above_chance"]


def above_chance(results: pd.DataFrame, *, metric: str = "accuracy", alpha: float = 0.05) -> pd.DataFrame:
    """One row per subset that reports `metric`, `chance` and `n_items` (per benchmark, subset and any
    other key column of `results`, e.g. a lesion condition): the keys, n_items, `metric`'s value, chance,
    the binomial p-value and `above_chance` (p < alpha). Subsets without a chance level are left out."""
    if not 0.0 < alpha < 1.0:
        raise NeurolocError(f"alpha must be in (0, 1), got {alpha}")
    missing = [c for c in ("metric", "value") if c not in results.columns]
    if missing:
        raise NeurolocError(f"the results table has no column {missing}; pass a benchmark results table "
                            "(benchmark, subset, metric, value)")
    keys = [c for c in results.columns if c not in ("metric", "value")]
    rows = []
    for key, group in results.groupby(keys, sort=False, dropna=False):
        values = dict(zip(group["metric"], group["value"]))
        if not {metric, "chance", "n_items"} <= set(values):
            continue
        n, chance, value = int(round(values["n_items"])), float(values["chance"]), float(values[metric])
        successes = int(round(value * n))
        pvalue = binomtest(successes, n, chance, alternative="greater").pvalue if n else np.nan
        rows.append((*(key if isinstance(key, tuple) else (key,)), n, value, chance, pvalue,
                     bool(pvalue < alpha)))
    return pd.DataFrame(rows, columns=[*keys, "n_items", metric, "chance", "pvalue", "above_chance"])
