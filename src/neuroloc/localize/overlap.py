"""How much two unit sets overlap, against the overlap of random sets of the same sizes.

The chance model draws each set uniformly within every site with the set's own count there (the
per-layer counts are kept, so a set concentrated in a few layers is compared with random sets
concentrated the same way). The intersection within a site is then hypergeometric, and over sites it
is the sum of independent hypergeometrics: its exact distribution (a convolution of the per-site
probability mass functions) gives the chance Jaccard and Dice coefficients (mean and central interval)
and the p-value of the observed overlap, with no simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..models.layout import Site

__all__ = ["ChanceOverlap", "chance_overlap", "compare_sets", "score_correlation"]


@dataclass(frozen=True)
class ChanceOverlap:
    """Chance Jaccard and Dice (mean, central interval) and P(overlap >= observed) under the chance model."""

    jaccard: float
    jaccard_low: float
    jaccard_high: float
    dice: float
    dice_low: float
    dice_high: float
    p: float


def intersection_pmf(sizes: Sequence[int], counts_a: Sequence[int], counts_b: Sequence[int]) -> np.ndarray:
    """P(|A ∩ B| = i) for i = 0.. when A and B are drawn uniformly within each site with these counts."""
    pmf = np.ones(1)
    for size, a, b in zip(sizes, counts_a, counts_b):
        if a and b:
            support = np.arange(max(0, a + b - size), min(a, b) + 1)
            site = np.zeros(min(a, b) + 1)
            site[support] = stats.hypergeom.pmf(support, size, a, b)
            pmf = np.convolve(pmf, site)
    return pmf


def _coefficients(i: np.ndarray, total_a: int, total_b: int) -> tuple[np.ndarray, np.ndarray]:
    union = total_a + total_b - i
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, i / np.where(union > 0, union, 1), np.nan)
        dice = np.where(total_a + total_b > 0, 2 * i / max(total_a + total_b, 1), np.nan)
    return jaccard, dice


def chance_overlap(sizes: Sequence[int], counts_a: Sequence[int], counts_b: Sequence[int], observed: int,
                   level: float = 0.95) -> ChanceOverlap:
    """The chance model's Jaccard and Dice (mean and `level` central interval) and the p-value of an
    observed intersection of `observed` units."""
    pmf = intersection_pmf(sizes, counts_a, counts_b)
    total_a, total_b = int(sum(counts_a)), int(sum(counts_b))
    support = np.arange(pmf.size)
    jaccard, dice = _coefficients(support, total_a, total_b)
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    low, high = (int(np.searchsorted(cdf, q - 1e-12)) for q in (tail, 1 - tail))
    low, high = min(low, pmf.size - 1), min(high, pmf.size - 1)
    p = float(pmf[observed:].sum()) if observed < pmf.size else 0.0
    if total_a + total_b == 0:
        return ChanceOverlap(*(np.nan,) * 6, p=np.nan)
    return ChanceOverlap(float((pmf * jaccard).sum()), float(jaccard[low]), float(jaccard[high]),
                         float((pmf * dice).sum()), float(dice[low]), float(dice[high]), min(p, 1.0))


def score_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two score vectors over the units where both are finite (NaN when undefined)."""
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() < 3 or np.ptp(x[finite]) == 0 or np.ptp(y[finite]) == 0:
        return float("nan")
    return float(np.corrcoef(x[finite], y[finite])[0, 1])


def compare_sets(mask_a: np.ndarray, mask_b: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                 sites: Sequence[Site], widths: Sequence[int], level: float = 0.95) -> pd.DataFrame:
    """Overlap of two unit sets (flat masks over `sites`) per site and over all sites ("all"), with the
    chance model's coefficients and the correlation of the two score vectors. Columns: site, kind, layer,
    n_units, n_a, n_b, n_both, jaccard, jaccard_chance, jaccard_chance_low, jaccard_chance_high, dice,
    dice_chance, dice_chance_low, dice_chance_high, p_overlap, r."""
    bounds = np.cumsum([0, *widths])
    parts = [slice(bounds[i], bounds[i + 1]) for i in range(len(sites))]
    counts_a = [int(mask_a[p].sum()) for p in parts]
    counts_b = [int(mask_b[p].sum()) for p in parts]
    rows = []
    for site, part, a, b, size in zip(sites, parts, counts_a, counts_b, widths):
        rows.append(_row(site.name, site.kind, site.layer, [size], [a], [b], mask_a[part], mask_b[part],
                         scores_a[part], scores_b[part], level))
    rows.append(_row("all", "all", None, list(widths), counts_a, counts_b, mask_a, mask_b, scores_a, scores_b, level))
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    return frame


def _row(name, kind, layer, sizes, counts_a, counts_b, mask_a, mask_b, scores_a, scores_b, level) -> dict:
    both = int((mask_a & mask_b).sum())
    total_a, total_b = sum(counts_a), sum(counts_b)
    jaccard, dice = (float(v) for v in _coefficients(np.array(both), total_a, total_b))
    chance = chance_overlap(sizes, counts_a, counts_b, both, level)
    return {"site": name, "kind": kind, "layer": layer, "n_units": int(sum(sizes)), "n_a": total_a, "n_b": total_b,
            "n_both": both, "jaccard": jaccard, "jaccard_chance": chance.jaccard,
            "jaccard_chance_low": chance.jaccard_low, "jaccard_chance_high": chance.jaccard_high,
            "dice": dice, "dice_chance": chance.dice, "dice_chance_low": chance.dice_low,
            "dice_chance_high": chance.dice_high, "p_overlap": chance.p,
            "r": score_correlation(scores_a, scores_b)}
