"""Statistics from streamed moments agree with scipy on raw data; constant units never give NaN."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neuroloc.errors import NeurolocError
from neuroloc.localize.scores import (
    WelchResult,
    benjamini_hochberg,
    cohens_d,
    lape_scores,
    lape_select,
    welch_t_test,
)


def moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, M2) over axis 0, what a streaming accumulator would hand over."""
    mean = x.mean(axis=0)
    return x.shape[0], mean, ((x - mean) ** 2).sum(axis=0)


@pytest.fixture
def samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shifts = np.linspace(-1.5, 1.5, 200)
    a = rng.normal(shifts, rng.uniform(0.5, 3.0, 200), size=(37, 200))
    b = rng.normal(0.0, rng.uniform(0.5, 3.0, 200), size=(23, 200))
    return a, b


def test_welch_matches_scipy(samples):
    a, b = samples
    result = welch_t_test(*moments(a), *moments(b))
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert isinstance(result, WelchResult)
    np.testing.assert_allclose(result.t, expected.statistic, rtol=1e-9)
    np.testing.assert_allclose(result.p, expected.pvalue, rtol=1e-9)
    np.testing.assert_allclose(result.df, expected.df, rtol=1e-9)
    assert result.p.min() < 1e-6  # the comparison covers small p-values too


def test_welch_handles_tiny_variances_without_underflow():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1e-150, size=(10, 5)), rng.normal(0, 1e-150, size=(12, 5))
    result = welch_t_test(*moments(a), *moments(b))
    expected = stats.ttest_ind(a * 1e150, b * 1e150, equal_var=False)  # t and df are scale-free
    np.testing.assert_allclose(result.t, expected.statistic, rtol=1e-9)
    np.testing.assert_allclose(result.df, expected.df, rtol=1e-9)


def test_welch_constant_units():
    zeros = np.zeros(3)
    result = welch_t_test(5, np.array([1.0, 2.0, 1.0]), zeros, 4, np.array([1.0, 1.0, 3.0]), zeros)
    np.testing.assert_array_equal(result.t, [0.0, np.inf, -np.inf])
    np.testing.assert_array_equal(result.p, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(result.df, [7.0, 7.0, 7.0])


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy warns about the constant sample
def test_welch_one_constant_condition_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(8, 4)), np.full((6, 4), 0.25)
    result = welch_t_test(*moments(a), *moments(b))
    expected = stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(result.t, expected.statistic, rtol=1e-9)
    np.testing.assert_allclose(result.p, expected.pvalue, rtol=1e-9)
    np.testing.assert_allclose(result.df, 7.0)


def test_welch_errors():
    one = np.ones(2)
    with pytest.raises(NeurolocError, match=r"n_a must be an int >= 2"):
        welch_t_test(1, one, one, 5, one, one)
    with pytest.raises(NeurolocError, match=r"n_b must be an int >= 2"):
        welch_t_test(5, one, one, 2.5, one, one)
    with pytest.raises(NeurolocError, match=r"share one shape.*m2_b \(3,\)"):
        welch_t_test(5, one, one, 5, one, np.ones(3))
    with pytest.raises(NeurolocError, match=r"mean_b has NaN"):
        welch_t_test(5, one, one, 5, np.array([0.0, np.nan]), one)
    with pytest.raises(NeurolocError, match=r"m2_a has negative entries"):
        welch_t_test(5, one, -one, 5, one, one)


def test_welch_clips_rounding_noise_in_m2():
    result = welch_t_test(5, np.array([1.0]), np.array([-1e-15]), 5, np.array([1.0]), np.array([0.0]))
    assert result.t[0] == 0.0 and result.p[0] == 1.0


def test_cohens_d_matches_formula(samples):
    a, b = samples
    n_a, n_b = len(a), len(b)
    pooled = np.sqrt(((n_a - 1) * a.var(axis=0, ddof=1) + (n_b - 1) * b.var(axis=0, ddof=1)) / (n_a + n_b - 2))
    expected = (a.mean(axis=0) - b.mean(axis=0)) / pooled
    np.testing.assert_allclose(cohens_d(*moments(a), *moments(b)), expected, rtol=1e-12)


def test_cohens_d_constant_units_and_errors():
    zeros = np.zeros(3)
    d = cohens_d(3, np.array([0.0, 1.0, -1.0]), zeros, 3, zeros, zeros)
    np.testing.assert_array_equal(d, [0.0, np.inf, -np.inf])
    d = cohens_d(1, np.array([1.0]), np.zeros(1), 2, np.array([0.0]), np.array([2.0]))
    np.testing.assert_allclose(d, [1 / np.sqrt(2)])  # pooled variance (0 + 2) / (1 + 2 - 2)
    with pytest.raises(NeurolocError, match=r"n_a \+ n_b must be >= 3"):
        cohens_d(1, np.ones(1), np.zeros(1), 1, np.ones(1), np.zeros(1))
    with pytest.raises(NeurolocError, match=r"n_b must be an int >= 1"):
        cohens_d(3, np.ones(1), np.zeros(1), 0, np.ones(1), np.zeros(1))


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-4, size=50), [0.0, 1.0, 0.5, 0.5, 0.5]])
    adjusted = benjamini_hochberg(p)
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    assert adjusted.max() <= 1.0
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in p
    grid = p.reshape(5, 71)
    np.testing.assert_array_equal(benjamini_hochberg(grid), adjusted.reshape(5, 71))
    assert benjamini_hochberg(np.array([])).size == 0


def test_benjamini_hochberg_rejects_invalid():
    with pytest.raises(NeurolocError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, np.nan])
    with pytest.raises(NeurolocError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, 1.5])


def test_lape_scores():
    prob = np.array(
        [
            [0.9, 0.3, 0.0, 0.2],
            [0.0, 0.3, 0.0, 0.6],
            [0.0, 0.3, 0.0, 0.2],
        ]
    )
    entropy = lape_scores(prob)
    share = prob[:, 3] / prob[:, 3].sum()
    expected = [0.0, np.log(3), np.log(3), -(share * np.log(share)).sum()]
    np.testing.assert_allclose(entropy, expected, rtol=1e-12)
    assert not np.isnan(entropy).any()


def test_lape_select_assigns_specific_units_to_their_language():
    rng = np.random.default_rng(4)
    prob = rng.uniform(0.1, 0.3, size=(3, 400))
    prob[0, 5] = 0.95  # specific to language 0
    prob[2, 17] = 0.9  # specific to language 2
    prob[:, 30] = 0.99  # active everywhere: high entropy, not specific
    mask = lape_select(prob, entropy_percent=0.5, min_probability_quantile=0.99)
    assert mask.shape == prob.shape
    assert np.flatnonzero(mask.any(axis=0)).tolist() == [5, 17]
    assert mask[0, 5] and mask[2, 17] and mask.sum() == 2


def test_lape_errors():
    with pytest.raises(NeurolocError, match=r"n_languages >= 2"):
        lape_scores(np.ones((1, 4)))
    with pytest.raises(NeurolocError, match=r"\[0, 1\]"):
        lape_scores(np.full((2, 4), 1.5))
    with pytest.raises(NeurolocError, match=r"min_probability_quantile must be in \[0, 1\)"):
        lape_select(np.full((2, 4), 0.5), min_probability_quantile=1.0)
    with pytest.raises(NeurolocError, match=r"no activation probability exceeds"):
        lape_select(np.full((2, 4), 0.5))
    with pytest.raises(NeurolocError, match=r"percent must be in \(0, 100\]"):
        lape_select(np.linspace(0, 1, 40).reshape(2, 20), entropy_percent=0)
