"""LAPE and the specific/related/agnostic split on made-up count tables, against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from neuroloc.errors import NeurolocError
from neuroloc.studies.languages import (activation_probability, categorize, lape, normalized_entropy, overlap_table,
                                        probability_bar, specific_related, zhang_scores)

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


def test_activation_probability_divides_counts_by_tokens() -> None:
    p = activation_probability([[2, 0, 4], [1, 8, 0]], [4, 8])
    np.testing.assert_allclose(p, [[0.5, 0.0, 1.0], [0.125, 1.0, 0.0]])
    with pytest.raises(NeurolocError, match="no tokens"):
        activation_probability([[0, 0], [0, 0]], [0, 3])
    with pytest.raises(NeurolocError, match="between 0"):
        activation_probability([[5, 0], [0, 0]], [4, 3])


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
    result = lape(TABLE, LANGS, percent=20, quantile=Q)  # 20% of 10 units = 2
    assert result.bar == pytest.approx(BAR)
    assert result.entropy[1] == pytest.approx(h_u1)
    assert result.assignment.sum(axis=1).tolist() == [1, 1, 0]
    assert result.assignment[0, 0] and result.assignment[1, 1]
    assert list(result.category[:4]) == ["specific", "specific", "", ""]
    wider = lape(TABLE, LANGS, percent=30, quantile=Q)  # u2 joins: above the bar in en and de
    assert wider.assignment[:, 2].tolist() == [True, True, False]
    assert wider.counts() == {"specific": 2, "related": 1, "agnostic": 0, "n_en": 2, "n_de": 2, "n_fr": 0}
    widest = lape(TABLE, LANGS, percent=100, quantile=Q)  # only candidates are ever kept
    assert widest.category.tolist() == ["specific", "specific", "related", "agnostic"] + [""] * 6


def test_specific_related_bisects_lambda_to_keep_agnostic_units_out() -> None:
    # score = H/ln3 - λ·max p / 0.9. u3 (all three above the bar) overtakes u2 once
    # 1 - λ·0.85/0.9 < ln2/ln3 - λ·0.65/0.9, i.e. λ > (1 - ln2/ln3) / (0.2/0.9).
    boundary = (1 - math.log(2) / math.log(3)) / (0.2 / 0.9)
    result = specific_related(TABLE, LANGS, percent=30, quantile=Q, tolerance=1e-6)
    assert result.lambda_ == pytest.approx(boundary, abs=1e-5)
    assert result.category.tolist()[:4] == ["specific", "specific", "related", "agnostic"]
    assert result.counts()["specific"] == 2 and result.counts()["related"] == 1 and result.counts()["agnostic"] == 1
    assert result.assignment[:, 3].all()  # agnostic units serve every language
    np.testing.assert_allclose(result.score, zhang_scores(TABLE, result.lambda_))
    expected_u1 = normalized_entropy(TABLE)[1] - boundary * 0.8 / 0.9
    assert result.score[1] == pytest.approx(expected_u1, abs=1e-4)


def test_lambda_runs_to_its_maximum_when_no_agnostic_unit_can_enter() -> None:
    table = TABLE.copy()
    table[2, 3] = 0.0  # u3 is no longer above the bar in fr: no unit is agnostic
    result = specific_related(table, LANGS, percent=30, quantile=Q, max_lambda=8.0)
    assert result.lambda_ == 8.0
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
    with pytest.raises(NeurolocError, match="2 languages"):
        lape(TABLE, ["en", "de"])
    with pytest.raises(NeurolocError, match="at least two"):
        specific_related(TABLE[:1], ["en"])
