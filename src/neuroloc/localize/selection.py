"""Choose units from a score vector: top-k / top-percent, percentile bands, matched random draws, FDR.

Units are one flat vector across all sites and layers, in a fixed unit order. Every function returns a
boolean mask of that length. Optional `groups` is an integer label per unit (a layer, or (site, layer)
encoded as one int) for per-group selection and for draws matched group by group to a target set.

Ties are broken by unit order (the lower index wins), and random draws depend only on `seed` and the
number of units, so a selection is reproducible bit for bit.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

from neuroloc.errors import NeurolocError

__all__ = ["select_band", "select_fdr", "select_random", "select_top"]


def select_top(
    scores: ArrayLike,
    *,
    percent: float | None = None,
    count: int | None = None,
    groups: ArrayLike | None = None,
    per_group: bool = False,
    eligible: ArrayLike | None = None,
    largest: bool = True,
    allow_fewer: bool = False,
) -> np.ndarray:
    """Mask of the most (or, with `largest=False`, least) selective units.

    Give exactly one of `percent` in (0, 100] or `count` >= 1. A percent is taken of all units (of each
    group's size when `per_group`), rounded half up, and is at least one unit: the localizer always
    returns something to lesion. A count is the number of units overall, or in every group when
    `per_group` (then `groups` is required; it is ignored otherwise).

    `eligible` (e.g. FDR-significant units) restricts the candidates without changing how many a percent
    asks for. NaN scores are never chosen. When fewer candidates than requested remain, raise, or take them
    all with `allow_fewer=True`. Ties go to the lower unit index.
    """
    values = _as_vector("scores", scores)
    n = values.size
    if (percent is None) == (count is None):
        raise NeurolocError("select_top: give exactly one of percent= (in (0, 100]) or count= (an int >= 1)")
    if per_group:
        if groups is None:
            raise NeurolocError("select_top: per_group=True needs groups= (one integer label per unit)")
        labels, inverse = _group_index(groups, n)
    else:
        labels, inverse = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    sizes = np.bincount(inverse, minlength=labels.size)

    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, Real) or not 0 < percent <= 100:
            raise NeurolocError(f"select_top: percent must be in (0, 100], got {percent!r}")
        wanted = np.maximum(1, np.floor(percent * sizes / 100 + 0.5)).astype(np.int64)
    else:
        count = _check_count("select_top", "count", count)
        too_big = np.flatnonzero(sizes < count)
        if too_big.size:
            where = f"group {labels[too_big[0]]} has" if per_group else "there are"
            raise NeurolocError(
                f"select_top: count={count} but {where} only {sizes[too_big[0]]} units; "
                f"count must be between 1 and the number of units"
            )
        wanted = np.full(labels.size, count, dtype=np.int64)

    valid = ~np.isnan(values)
    pool = "units with a non-NaN score"
    if eligible is not None:
        valid &= _as_mask("eligible", eligible, n)
        pool += " inside eligible"
    key = -values if largest else values
    return _take(key, valid, inverse, labels, wanted, allow_fewer, "select_top", pool)


def select_band(
    scores: ArrayLike,
    *,
    low_percentile: float,
    high_percentile: float,
    count: int | None = None,
    counts_per_group: Mapping[int, int] | None = None,
    groups: ArrayLike | None = None,
    seed: int = 0,
    exclude: ArrayLike | None = None,
) -> np.ndarray:
    """Random units whose score lies within a percentile band, e.g. the 40-60th percentile of t.

    This is the selectivity-matched control of AlKhamissi et al. (2025): units as numerous as the localized
    set, but of middling selectivity. Band edges are percentiles of all non-NaN scores (inclusive), so the
    band does not move when `exclude` (typically the localized set) changes. Give `count` units in total,
    or `counts_per_group` (group label -> count, e.g. a target set's per-layer counts; needs `groups`).
    The draw is seeded and never overlaps `exclude`.
    """
    values = _as_vector("scores", scores)
    for name, value in (("low_percentile", low_percentile), ("high_percentile", high_percentile)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 100:
            raise NeurolocError(f"select_band: {name} must be in [0, 100], got {value!r}")
    if low_percentile >= high_percentile:
        raise NeurolocError(
            f"select_band: low_percentile ({low_percentile}) must be below high_percentile ({high_percentile})"
        )
    finite = ~np.isnan(values)
    if not finite.any():
        raise NeurolocError("select_band: every score is NaN, so there is no band to draw from")
    low, high = np.percentile(values[finite], [low_percentile, high_percentile])
    in_band = finite & (values >= low) & (values <= high)
    band = f"the {low_percentile:g}-{high_percentile:g}th percentile band (scores in [{low:.6g}, {high:.6g}])"
    return _draw("select_band", in_band, count, counts_per_group, groups, seed, exclude, band)


def select_random(
    n_units: int,
    *,
    count: int | None = None,
    counts_per_group: Mapping[int, int] | None = None,
    groups: ArrayLike | None = None,
    seed: int = 0,
    exclude: ArrayLike | None = None,
    draws: int | None = None,
) -> np.ndarray:
    """Random units: `count` in total, or `counts_per_group` (group label -> count, needs `groups`).

    The usual control for a lesion: as many units as the localized set, in the same layers, never
    overlapping it (pass it as `exclude`). Seeded and reproducible. With `draws`, that many sets at once,
    (draws, n_units): row i is the set `seed + i` gives (a reference distribution in one call).
    """
    n_units = _check_count("select_random", "n_units", n_units)
    if draws is not None:
        _check_count("select_random", "draws", draws)
    candidates = np.ones(n_units, dtype=bool)
    return _draw("select_random", candidates, count, counts_per_group, groups, seed, exclude, "all units", draws)


def select_fdr(p_adjusted: ArrayLike, alpha: float) -> np.ndarray:
    """Mask of units whose adjusted p-value is at most `alpha` (in (0, 1)); NaN is never selected."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < 1:
        raise NeurolocError(f"select_fdr: alpha must be in (0, 1), got {alpha!r}")
    return _as_vector("p_adjusted", p_adjusted) <= alpha


def _draw(
    caller: str,
    candidates: np.ndarray,
    count: int | None,
    counts_per_group: Mapping[int, int] | None,
    groups: ArrayLike | None,
    seed: int,
    exclude: ArrayLike | None,
    pool: str,
    draws: int | None = None,
) -> np.ndarray:
    """Seeded uniform draw without replacement from `candidates` minus `exclude`, overall or per group
    (`draws` of them, seeds `seed`, `seed + 1`, ..., when given).

    A draw is the first k units under one random key per unit, so it reuses the per-group top-k machinery
    and depends only on the seed and the number of units.
    """
    n = candidates.size
    if (count is None) == (counts_per_group is None):
        raise NeurolocError(f"{caller}: give exactly one of count= (total) or counts_per_group= (group -> count)")
    if counts_per_group is not None:
        if groups is None:
            raise NeurolocError(f"{caller}: counts_per_group needs groups= (one integer label per unit)")
        labels, inverse = _group_index(groups, n)
        wanted = np.zeros(labels.size, dtype=np.int64)
        for label, k in counts_per_group.items():
            if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
                raise NeurolocError(f"{caller}: counts_per_group[{label!r}] must be an int >= 0, got {k!r}")
            position = np.searchsorted(labels, label)
            if position == labels.size or labels[position] != label:
                raise NeurolocError(
                    f"{caller}: counts_per_group names group {label!r}, which no unit has "
                    f"(groups present: {labels.tolist()})"
                )
            wanted[position] = k
    else:
        count = _check_count(caller, "count", count)
        labels, inverse = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        wanted = np.array([count])
    if not isinstance(seed, Integral) or isinstance(seed, bool):
        raise NeurolocError(f"{caller}: seed must be an int, got {seed!r}")
    valid = candidates.copy()
    if exclude is not None:
        valid &= ~_as_mask("exclude", exclude, n)
    if draws is None:
        key = np.random.default_rng(seed).random(n)
    else:
        key = np.stack([np.random.default_rng(seed + i).random(n) for i in range(draws)])
    return _take(key, valid, inverse, labels, wanted, False, caller, f"units in {pool} outside exclude")


def _take(
    key: np.ndarray,
    valid: np.ndarray,
    inverse: np.ndarray,
    labels: np.ndarray,
    wanted: np.ndarray,
    allow_fewer: bool,
    caller: str,
    pool: str,
) -> np.ndarray:
    """Mask of the `wanted[g]` valid units with the smallest key in each group g; ties by unit index.
    `key` is one key per unit, or (sets, units) for that many masks at once."""
    available = np.bincount(inverse, weights=valid, minlength=labels.size).astype(np.int64)
    short = np.flatnonzero(wanted > available)
    if short.size and not allow_fewer:
        g = short[0]
        where = f" in group {labels[g]}" if labels.size > 1 else ""
        hint = "; pass allow_fewer=True to take them all" if caller == "select_top" else ""
        raise NeurolocError(
            f"{caller}: {wanted[g]} units requested{where} but only {available[g]} {pool} are available{hint}"
        )
    keys = np.atleast_2d(key)
    mask = np.zeros(keys.shape, dtype=bool)
    members = np.argsort(inverse, kind="stable")  # units by group, in unit order within each
    starts = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=labels.size))])
    for g in np.flatnonzero(wanted):
        units = members[starts[g]:starts[g + 1]]
        units = units[valid[units]]
        k = min(int(wanted[g]), units.size)
        if k:  # a stable sort of each set's keys: equal keys go to the lower unit index
            chosen = np.argsort(keys[:, units], axis=1, kind="stable")[:, :k]
            mask[np.arange(keys.shape[0])[:, None], units[chosen]] = True
    return mask if key.ndim == 2 else mask[0]


def _check_count(caller: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise NeurolocError(f"{caller}: {name} must be an int >= 1, got {value!r}")
    return int(value)


def _as_vector(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise NeurolocError(f"{name} must be a 1-D vector with one entry per unit, got shape {array.shape}")
    return array


def _as_mask(name: str, mask: ArrayLike, n: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool or array.shape != (n,):
        raise NeurolocError(f"{name} must be a boolean mask of shape ({n},), got {array.dtype} {array.shape}")
    return array


def _group_index(groups: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct labels and each unit's position among them."""
    array = np.asarray(groups)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise NeurolocError(f"groups must be integer labels of shape ({n},), got {array.dtype} {array.shape}")
    labels, inverse = np.unique(array, return_inverse=True)
    return labels, inverse.reshape(-1)
