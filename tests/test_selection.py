"""Unit selection: exact indices under ties, per-group sizes, percentile bands, matched random draws."""

from __future__ import annotations

import numpy as np
import pytest

from neuroloc.errors import NeurolocError
from neuroloc.localize.selection import select_band, select_fdr, select_random, select_top

TIED = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0, 0.0])


def chosen(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


# --- select_top -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "largest", "expected"),
    [
        (1, True, [1]),
        (2, True, [1, 2]),
        (3, True, [1, 2, 4]),
        (4, True, [1, 2, 3, 4]),
        (1, False, [5]),
        (2, False, [5, 6]),
        (3, False, [0, 5, 6]),
    ],
)
def test_top_ties_go_to_lower_index(count, largest, expected):
    mask = select_top(TIED, count=count, largest=largest)
    assert mask.dtype == bool and mask.shape == TIED.shape
    assert chosen(mask) == expected


def test_top_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=300).astype(float)
    for k in (1, 7, 150, 300):
        expected = sorted(sorted(range(300), key=lambda i: (-scores[i], i))[:k])
        assert chosen(select_top(scores, count=k)) == expected
        expected = sorted(sorted(range(300), key=lambda i: (scores[i], i))[:k])
        assert chosen(select_top(scores, count=k, largest=False)) == expected


@pytest.mark.parametrize(("percent", "n_selected"), [(25, 3), (20, 2), (1, 1), (0.001, 1), (100, 10), (15, 2)])
def test_top_percent_rounds_half_up_and_keeps_at_least_one(percent, n_selected):
    scores = np.arange(10.0)
    mask = select_top(scores, percent=percent)
    assert mask.sum() == n_selected
    assert chosen(mask) == list(range(10 - n_selected, 10))


def test_top_per_group_sizes_and_indices():
    groups = np.array([7, 7, 7, 7, -1, -1, -1, -1, -1, -1, 3, 3])
    scores = np.array([4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 5.0, 1.0, 9.0, -3.0, 0.5, 0.7])
    mask = select_top(scores, percent=50, groups=groups, per_group=True)
    assert chosen(mask) == [0, 2, 5, 6, 8, 11]
    np.testing.assert_array_equal(np.bincount(groups[mask] + 1, minlength=9)[[0, 4, 8]], [3, 1, 2])
    mask = select_top(scores, count=2, groups=groups, per_group=True, largest=False)
    assert chosen(mask) == [1, 3, 4, 9, 10, 11]
    assert chosen(select_top(scores, count=2, groups=groups)) == [5, 8]  # groups unused without per_group


def test_top_per_group_percent_uses_each_group_size():
    groups = np.repeat([0, 1, 2], [100, 10, 1])
    mask = select_top(np.random.default_rng(1).normal(size=111), percent=5, groups=groups, per_group=True)
    np.testing.assert_array_equal(np.bincount(groups[mask]), [5, 1, 1])


def test_top_eligible_restricts_candidates():
    eligible = np.array([True, False, True, True, False, True, True])
    assert chosen(select_top(TIED, count=2, eligible=eligible)) == [2, 3]
    assert chosen(select_top(TIED, percent=50, eligible=eligible)) == [0, 2, 3, 5]  # 50% of 7 units -> 4
    few = np.array([True, True] + [False] * 5)
    with pytest.raises(NeurolocError, match=r"3 units requested but only 2 units with a non-NaN score inside "
                       r"eligible are available; pass allow_fewer=True"):
        select_top(TIED, count=3, eligible=few)
    assert chosen(select_top(TIED, count=3, eligible=few, allow_fewer=True)) == [0, 1]


def test_top_per_group_eligible_shortfall_names_group():
    groups = np.array([0, 0, 0, 4, 4, 4, 4])
    eligible = np.array([True, True, True, True, False, False, False])
    with pytest.raises(NeurolocError, match=r"2 units requested in group 4 but only 1"):
        select_top(TIED, count=2, groups=groups, per_group=True, eligible=eligible)
    mask = select_top(TIED, count=2, groups=groups, per_group=True, eligible=eligible, allow_fewer=True)
    assert chosen(mask) == [1, 2, 3]


def test_top_never_selects_nan():
    scores = np.array([np.nan, 2.0, np.inf, np.nan, -np.inf])
    assert chosen(select_top(scores, count=3)) == [1, 2, 4]
    assert chosen(select_top(scores, count=3, largest=False)) == [1, 2, 4]
    assert chosen(select_top(scores, count=1, largest=False)) == [4]
    with pytest.raises(NeurolocError, match=r"4 units requested but only 3 units with a non-NaN score"):
        select_top(scores, count=4)
    assert chosen(select_top(scores, percent=100, allow_fewer=True)) == [1, 2, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"exactly one of percent= .* or count="),
        ({"percent": 10, "count": 2}, r"exactly one of percent="),
        ({"percent": 0}, r"percent must be in \(0, 100\], got 0"),
        ({"percent": -5}, r"percent must be in \(0, 100\], got -5"),
        ({"percent": 100.5}, r"percent must be in \(0, 100\], got 100.5"),
        ({"percent": float("nan")}, r"percent must be in \(0, 100\], got nan"),
        ({"percent": True}, r"percent must be in \(0, 100\]"),
        ({"count": 0}, r"count must be an int >= 1, got 0"),
        ({"count": -2}, r"count must be an int >= 1, got -2"),
        ({"count": 2.0}, r"count must be an int >= 1, got 2.0"),
        ({"count": 8}, r"count=8 but there are only 7 units"),
        ({"count": 1, "per_group": True}, r"per_group=True needs groups="),
        ({"count": 4, "per_group": True, "groups": np.array([0, 0, 0, 1, 1, 1, 1])}, r"group 0 has only 3 units"),
        ({"count": 1, "per_group": True, "groups": np.zeros(6, int)}, r"groups must be integer labels of shape \(7,\)"),
        ({"count": 1, "per_group": True, "groups": np.zeros(7)}, r"groups must be integer labels"),
        ({"count": 1, "eligible": np.ones(7, dtype=int)}, r"eligible must be a boolean mask of shape \(7,\)"),
    ],
)
def test_top_errors(kwargs, message):
    with pytest.raises(NeurolocError, match=message):
        select_top(TIED, **kwargs)


def test_top_rejects_non_vector_scores():
    with pytest.raises(NeurolocError, match=r"scores must be a 1-D vector"):
        select_top(np.ones((2, 3)), count=1)


# --- select_band ------------------------------------------------------------------------------------


@pytest.fixture
def layered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores over 4 layers of 250 units, and a localized top-5% set per layer to match."""
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(4), 250)
    scores = rng.normal(size=1000) + groups * 0.3
    target = select_top(scores, percent=5, groups=groups, per_group=True)
    return scores, groups, target


def test_band_matches_target_counts_inside_band(layered):
    scores, groups, target = layered
    counts = {int(g): int(c) for g, c in zip(*np.unique(groups[target], return_counts=True))}
    mask = select_band(
        scores, low_percentile=40, high_percentile=60, counts_per_group=counts, groups=groups, exclude=target
    )
    low, high = np.percentile(scores, [40, 60])
    assert np.all((scores[mask] >= low) & (scores[mask] <= high))
    np.testing.assert_array_equal(np.bincount(groups[mask], minlength=4), np.bincount(groups[target], minlength=4))
    assert not np.any(mask & target)
    again = select_band(
        scores, low_percentile=40, high_percentile=60, counts_per_group=counts, groups=groups, exclude=target
    )
    np.testing.assert_array_equal(mask, again)
    other = select_band(
        scores, low_percentile=40, high_percentile=60, counts_per_group=counts, groups=groups, exclude=target, seed=1
    )
    assert other.sum() == mask.sum() and not np.array_equal(mask, other)


def test_band_total_count_and_zero_count_groups(layered):
    scores, groups, _ = layered
    mask = select_band(scores, low_percentile=0, high_percentile=100, count=30)
    assert mask.sum() == 30
    mask = select_band(scores, low_percentile=10, high_percentile=90, counts_per_group={2: 5, 0: 0}, groups=groups)
    np.testing.assert_array_equal(np.bincount(groups[mask], minlength=4), [0, 0, 5, 0])


def test_band_ignores_nan_scores():
    scores = np.array([np.nan, 0.0, 1.0, 2.0, 3.0, 4.0, np.nan])
    mask = select_band(scores, low_percentile=25, high_percentile=75, count=3)
    assert chosen(mask) == [2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low_percentile": 40, "high_percentile": 60}, r"exactly one of count= .* or counts_per_group="),
        ({"low_percentile": 40, "high_percentile": 60, "count": 1, "counts_per_group": {0: 1}}, r"exactly one of"),
        ({"low_percentile": -1, "high_percentile": 60, "count": 1}, r"low_percentile must be in \[0, 100\], got -1"),
        ({"low_percentile": 40, "high_percentile": 101, "count": 1}, r"high_percentile must be in \[0, 100\]"),
        ({"low_percentile": 60, "high_percentile": 40, "count": 1}, r"low_percentile \(60\) must be below"),
        ({"low_percentile": 40, "high_percentile": 60, "count": 0}, r"count must be an int >= 1, got 0"),
        ({"low_percentile": 40, "high_percentile": 60, "counts_per_group": {0: 1}}, r"counts_per_group needs groups="),
        (
            {"low_percentile": 40, "high_percentile": 60, "counts_per_group": {9: 1}, "groups": np.zeros(10, int)},
            r"names group 9, which no unit has \(groups present: \[0\]\)",
        ),
        (
            {"low_percentile": 40, "high_percentile": 60, "counts_per_group": {0: -1}, "groups": np.zeros(10, int)},
            r"counts_per_group\[0\] must be an int >= 0, got -1",
        ),
        (
            {"low_percentile": 40, "high_percentile": 60, "count": 4},
            r"select_band: 4 units requested but only 2 units in the 40-60th percentile band "
            r"\(scores in \[3\.6, 5\.4\]\) outside exclude are available",
        ),
        (
            {"low_percentile": 40, "high_percentile": 60, "count": 2, "exclude": np.arange(10) == 4},
            r"2 units requested but only 1 units in the 40-60th percentile band",
        ),
        ({"low_percentile": 40, "high_percentile": 60, "count": 1, "seed": 1.5}, r"seed must be an int"),
    ],
)
def test_band_errors(kwargs, message):
    with pytest.raises(NeurolocError, match=message):
        select_band(np.arange(10.0), **kwargs)


def test_band_empty_band_and_all_nan():
    with pytest.raises(NeurolocError, match=r"only 0 units in the 40-60th percentile band \(scores in \[4, 6\]\)"):
        select_band(np.array([0.0, 10.0]), low_percentile=40, high_percentile=60, count=1)
    with pytest.raises(NeurolocError, match=r"every score is NaN"):
        select_band(np.full(3, np.nan), low_percentile=40, high_percentile=60, count=1)


# --- select_random ----------------------------------------------------------------------------------


def test_random_matches_counts_per_group_without_overlap(layered):
    _, groups, target = layered
    counts = dict(zip(*np.unique(groups[target], return_counts=True)))
    def draw(seed: int) -> np.ndarray:
        return select_random(1000, counts_per_group=counts, groups=groups, exclude=target, seed=seed)

    mask = draw(3)
    np.testing.assert_array_equal(np.bincount(groups[mask], minlength=4), np.bincount(groups[target], minlength=4))
    assert not np.any(mask & target)
    np.testing.assert_array_equal(mask, draw(3))
    assert not np.array_equal(mask, draw(4))


def test_random_total_count_and_full_draw():
    mask = select_random(50, count=10, seed=0)
    assert mask.sum() == 10
    exclude = np.arange(50) < 40
    np.testing.assert_array_equal(select_random(50, count=10, exclude=exclude), ~exclude)


def test_random_draws_are_roughly_uniform():
    hits = sum(select_random(20, count=5, seed=seed).astype(int) for seed in range(2000))
    assert hits.min() > 400 and hits.max() < 600  # expected 500 each


def test_random_many_draws_equal_one_seed_each_and_the_smallest_keys(layered):
    _, groups, target = layered
    counts = dict(zip(*np.unique(groups[target], return_counts=True)))
    many = select_random(1000, counts_per_group=counts, groups=groups, exclude=target, seed=7, draws=5)
    assert many.shape == (5, 1000)
    for i in range(5):
        np.testing.assert_array_equal(
            many[i], select_random(1000, counts_per_group=counts, groups=groups, exclude=target, seed=7 + i))
        key = np.random.default_rng(7 + i).random(1000)  # by hand: the k smallest keys per group, outside target
        expected = np.zeros(1000, dtype=bool)
        for group, k in counts.items():
            units = np.flatnonzero((groups == group) & ~target)
            expected[units[np.argsort(key[units])[:k]]] = True
        np.testing.assert_array_equal(many[i], expected)
    with pytest.raises(NeurolocError, match=r"draws must be an int >= 1, got 0"):
        select_random(10, count=1, draws=0)


def test_random_errors():
    with pytest.raises(NeurolocError, match=r"n_units must be an int >= 1, got 0"):
        select_random(0, count=1)
    with pytest.raises(NeurolocError, match=r"11 units requested but only 10 units in all units outside exclude"):
        select_random(10, count=11)
    with pytest.raises(NeurolocError, match=r"3 units requested in group 1 but only 2"):
        select_random(6, counts_per_group={1: 3}, groups=np.array([0, 0, 0, 1, 1, 1]), exclude=np.arange(6) == 5)
    with pytest.raises(NeurolocError, match=r"exclude must be a boolean mask of shape \(6,\)"):
        select_random(6, count=1, exclude=np.zeros(5, dtype=bool))


# --- select_fdr -------------------------------------------------------------------------------------


def test_fdr():
    p = np.array([0.01, 0.05, 0.051, np.nan, 1.0, 0.0])
    assert chosen(select_fdr(p, 0.05)) == [0, 1, 5]
    for alpha in (0, 1, -0.1, 1.5):
        with pytest.raises(NeurolocError, match=r"alpha must be in \(0, 1\)"):
            select_fdr(p, alpha)
