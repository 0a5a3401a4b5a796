"""LAPE and the specific/related/agnostic split through the registered scores (`lape`, `specific_related`)
and a Localizer on token statistics, on made-up count tables: against hand computation, and against the
selection functions of neuroloc before they moved into the score registry (copied below)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from neuroloc import Design, Localizer, StatsStore
from neuroloc.errors import NeurolocError
from neuroloc.localize.multilingual import (categorize, normalized_entropy, probability_bar, specific_related_lambda,
                                            zhang_scores)
from neuroloc.localize.score_functions import activation_probabilities
from neuroloc.localize.scores import lape_scores, lape_select
from neuroloc.localize.selection import select_top
from neuroloc.studies.languages import LanguageSelection, overlap_table

LANGS = ["en", "de", "fr"]
# Units u0..u3 are the interesting ones; u4..u9 stay below the bar everywhere (max 0.3).
TABLE = np.array([
    # u0    u1    u2    u3    u4    u5    u6    u7    u8    u9
    [0.90, 0.00, 0.65, 0.85, 0.30, 0.10, 0.20, 0.05, 0.15, 0.25],   # en
    [0.00, 0.80, 0.65, 0.85, 0.10, 0.20, 0.05, 0.15, 0.25, 0.10],   # de
    [0.00, 0.10, 0.00, 0.85, 0.20, 0.05, 0.15, 0.25, 0.10, 0.20],   # fr
])
# 30 values; sorted, index 22 is 0.30 (the largest small one) and index 23 is 0.65. With q = 22.5/29
# np.quantile's linear rule sits halfway between them.
Q = 22.5 / 29
BAR = 0.30 + 0.5 * (0.65 - 0.30)


def _store(positive: np.ndarray, tokens, languages=LANGS) -> StatsStore:
    """Token statistics at one site whose counts of x > 0 are `positive` (languages × units) of `tokens`."""
    store = StatsStore()
    for lang, row, n in zip(languages, np.asarray(positive), np.broadcast_to(tokens, len(languages))):
        zeros = torch.zeros(len(row), dtype=torch.float64)
        store.update("tokens", lang, "layers.0.mlp_gate", int(n), torch.tensor(row, dtype=torch.int64), zeros, zeros)
    return store


def select(table: np.ndarray, score: str, *, percent: float = 1.0, quantile: float = 0.95, languages=LANGS,
           tokens: int = 1000) -> LanguageSelection:
    """The study's selection path on a probability table (exact: p = count / 1000)."""
    store = _store(np.round(np.asarray(table) * tokens), tokens, languages)
    localizer = Localizer("mlp_gate", score=score, design=Design.groups(languages), pooling="tokens",
                          percent=percent, quantile=quantile).fit_stats(store)
    return LanguageSelection.from_localizer(localizer)


def test_activation_probability_divides_counts_by_tokens() -> None:
    store = _store(np.array([[2, 0, 4], [1, 8, 0]]), np.array([4, 8]), ["en", "de"])
    np.testing.assert_allclose(activation_probabilities(store, ["en", "de"]), [[0.5, 0.0, 1.0], [0.125, 1.0, 0.0]])
    silent = _store(np.array([[0, 0], [0, 0], [3, 1]]), np.array([0, 3, 4]))
    localizer = Localizer("mlp_gate", score="lape", design=Design.groups(LANGS), pooling="tokens", quantile=0.1)
    with pytest.raises(NeurolocError, match="no tokens were counted for en"):
        LanguageSelection.from_localizer(localizer.fit_stats(silent))


def test_bar_is_the_hand_computed_quantile() -> None:
    assert probability_bar(TABLE, Q) == pytest.approx(BAR)
    assert probability_bar(TABLE, 0.5) == pytest.approx(np.median(TABLE))
    with pytest.raises(NeurolocError, match="quantile"):
        probability_bar(TABLE, 1.0)


def test_normalized_entropy_matches_scipy() -> None:
    expected = [stats.entropy(TABLE[:, u], base=3) for u in range(TABLE.shape[1])]
    np.testing.assert_allclose(normalized_entropy(TABLE), expected, atol=1e-12)
    assert normalized_entropy(TABLE)[0] == 0.0
    assert normalized_entropy(TABLE)[3] == pytest.approx(1.0)


def test_lape_keeps_lowest_entropy_candidates_and_assigns_by_the_bar() -> None:
    # Candidates (above the bar somewhere): u0..u3, entropies 0 < H(u1) < ln 2 < ln 3.
    h_u1 = -(8 / 9 * math.log(8 / 9) + 1 / 9 * math.log(1 / 9))
    result = select(TABLE, "lape", percent=20, quantile=Q)  # 20% of 10 units = 2
    assert result.bar == pytest.approx(BAR)
    assert result.entropy[1] == pytest.approx(h_u1)
    assert result.assignment.sum(axis=1).tolist() == [1, 1, 0]
    assert result.assignment[0, 0] and result.assignment[1, 1]
    assert list(result.category[:4]) == ["specific", "specific", "", ""]
    wider = select(TABLE, "lape", percent=30, quantile=Q)  # u2 joins: above the bar in en and de
    assert wider.assignment[:, 2].tolist() == [True, True, False]
    assert wider.counts() == {"specific": 2, "related": 1, "agnostic": 0, "n_en": 2, "n_de": 2, "n_fr": 0}
    widest = select(TABLE, "lape", percent=100, quantile=Q)  # only candidates are ever kept
    assert widest.category.tolist() == ["specific", "specific", "related", "agnostic"] + [""] * 6


def test_specific_related_bisects_lambda_to_keep_agnostic_units_out() -> None:
    # score = H/ln3 - λ·max p / 0.9. u3 (all three above the bar) overtakes u2 once
    # 1 - λ·0.85/0.9 < ln2/ln3 - λ·0.65/0.9, i.e. λ > (1 - ln2/ln3) / (0.2/0.9).
    boundary = (1 - math.log(2) / math.log(3)) / (0.2 / 0.9)
    assert specific_related_lambda(TABLE, percent=30, quantile=Q, tolerance=1e-6) == pytest.approx(boundary, abs=1e-5)
    result = select(TABLE, "specific_related", percent=30, quantile=Q)  # the default tolerance, 1e-4
    assert result.lambda_ == pytest.approx(boundary, abs=1e-4) and result.lambda_ <= boundary
    assert result.category.tolist()[:4] == ["specific", "specific", "related", "agnostic"]
    assert result.counts()["specific"] == 2 and result.counts()["related"] == 1 and result.counts()["agnostic"] == 1
    assert result.assignment[:, 3].all()  # agnostic units serve every language
    np.testing.assert_allclose(result.score, zhang_scores(TABLE, result.lambda_))
    expected_u1 = normalized_entropy(TABLE)[1] - boundary * 0.8 / 0.9
    assert result.score[1] == pytest.approx(expected_u1, abs=1e-4)


def test_lambda_runs_to_its_maximum_when_no_agnostic_unit_can_enter() -> None:
    table = TABLE.copy()
    table[2, 3] = 0.0  # u3 is no longer above the bar in fr: no unit is agnostic
    assert specific_related_lambda(table, percent=30, quantile=Q, max_lambda=8.0) == 8.0
    result = select(table, "specific_related", percent=30, quantile=Q)
    assert result.lambda_ == 64.0  # the default maximum
    assert result.counts()["agnostic"] == 0


def test_categorize_and_overlap_by_hand() -> None:
    assignment = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    assert categorize(assignment).tolist() == ["specific", "related", "agnostic", "specific"]
    assert categorize(assignment, np.array([True, False, True, True])).tolist() == ["specific", "", "agnostic",
                                                                                     "specific"]
    overlap = overlap_table(assignment, LANGS)
    assert overlap.to_numpy().tolist() == [[3, 2, 1], [2, 2, 1], [1, 1, 2]]
    without = overlap_table(assignment, LANGS, categories=categorize(assignment))
    assert without.to_numpy().tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_shape_errors() -> None:
    with pytest.raises(NeurolocError, match="at least two"):
        select(TABLE[:1], "specific_related", languages=["en"])
    with pytest.raises(NeurolocError, match="does not assign units to languages"):
        LanguageSelection.from_localizer(Localizer("mlp_gate", score="activation_probability", pooling="tokens",
                                                   design=Design.groups(LANGS)).fit_stats(_store(TABLE * 1000, 1000)))


# ------------------------------------------------ the functions the registry replaced (neuroloc 1a635dd)
def _old_categorize(assignment, selected=None):
    n = assignment.sum(axis=0)
    k = assignment.shape[0]
    category = np.where(n == 1, "specific", np.where(n == k, "agnostic", np.where(n > 1, "related", "")))
    if selected is not None:
        category = np.where(selected, category, "")
    return category.astype(object)


def _old_lape(p, percent, quantile):
    assignment = lape_select(p, entropy_percent=percent, min_probability_quantile=quantile)
    entropy = lape_scores(p)
    return assignment, _old_categorize(assignment, assignment.any(axis=0)), entropy, entropy, None


def _old_specific_related(p, percent, quantile, max_lambda=64.0, tolerance=1e-4):
    bar = float(np.quantile(p, quantile))
    above = p > bar
    everywhere = above.all(axis=0)
    eligible = above.any(axis=0)
    entropy = lape_scores(p) / np.log(p.shape[0])

    def zhang(lam):
        return entropy - lam * (p.max(axis=0) / p.max())

    def keep(lam):
        return select_top(zhang(lam), percent=percent, eligible=eligible, largest=False, allow_fewer=True)

    def clean(lam):
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
    category = np.where(everywhere, "agnostic", _old_categorize(assignment, kept)).astype(object)
    assignment = assignment | (above & everywhere[None, :])
    return assignment, category, entropy, zhang(low), low


@pytest.mark.parametrize("score, old", [("lape", _old_lape), ("specific_related", _old_specific_related)])
def test_selections_equal_the_old_functions_on_random_counts(score, old) -> None:
    rng = np.random.default_rng(7)
    languages = ["en", "de", "fr", "zh"]
    for trial in range(6):
        tokens = rng.integers(500, 2000, size=len(languages))
        shared = rng.beta(0.6, 1.5, size=300)  # units active in every language at a similar rate ...
        private = rng.random((len(languages), 300)) < 0.2  # ... and some far more in a few languages
        p = 0.6 * shared + private * rng.uniform(0.1, 0.4, size=(len(languages), 300))
        positive = np.round(p * tokens[:, None])
        percent, quantile = [0.5, 1.0, 3.0, 10.0, 1.0, 5.0][trial], [0.95, 0.9, 0.95, 0.8, 0.99, 0.5][trial]
        store = _store(positive, tokens, languages)
        result = LanguageSelection.from_localizer(
            Localizer("mlp_gate", score=score, design=Design.groups(languages), pooling="tokens", percent=percent,
                      quantile=quantile).fit_stats(store))
        assignment, category, entropy, ranked, lam = old(positive / tokens[:, None], percent, quantile)
        assert result.assignment.any(), trial
        np.testing.assert_array_equal(result.assignment, assignment)
        assert result.category.tolist() == category.tolist()
        np.testing.assert_array_equal(result.entropy, entropy)
        np.testing.assert_array_equal(result.score, ranked)
        assert result.lambda_ == lam
        assert result.bar == float(np.quantile(positive / tokens[:, None], quantile))
