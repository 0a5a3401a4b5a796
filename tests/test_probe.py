"""Probing: grouped splits, control tasks, bootstrap scores and baselines."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.treebank import read_conllu
from neuroloc.stimuli.splits import assert_disjoint_groups, grouped_split
from neuroloc.probe import (
    control_labels,
    evaluate_probe,
    majority_baseline,
    make_probe,
    probe_selectivity,
)

EWT = Path(__file__).parents[1].parent / "shared" / "data" / "ud" / "en_ewt-ud-dev.conllu"
needs_ud = pytest.mark.skipif(not EWT.is_file(), reason="shared UD data not present")


@pytest.fixture(scope="module")
def ewt_words():
    return read_conllu(EWT).words_table()


def _blobs(n: int, k: int, dim: int, seed: int, spread: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, dim))
    y = rng.integers(0, k, size=n)
    return centers[y] + rng.normal(size=(n, dim)), np.array([f"c{c}" for c in y])


def test_make_probe_is_scaler_then_logistic_regression() -> None:
    probe = make_probe(C=0.5, max_iter=200)
    scaler, clf = (step for _, step in probe.steps)
    assert isinstance(scaler, StandardScaler) and isinstance(clf, LogisticRegression)
    assert clf.C == 0.5 and clf.max_iter == 200 and clf.solver == "lbfgs"


@needs_ud
def test_grouped_split_never_shares_a_document(ewt_words) -> None:
    groups = ewt_words["doc_id"].to_numpy()
    for seed in range(3):
        train, test = grouped_split(groups, 0.2, seed)
        assert len(train) + len(test) == len(groups)
        assert not set(groups[train]) & set(groups[test])
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = grouped_split(groups, 0.2, 0)
    first = grouped_split(groups, 0.2, 0)
    assert all(np.array_equal(a, b) for a, b in zip(again, first))


def test_split_checks() -> None:
    with pytest.raises(NeurolocError, match="test_fraction"):
        grouped_split(["a", "b"], 1.0, 0)
    with pytest.raises(NeurolocError, match="two distinct groups"):
        grouped_split(["a", "a"], 0.5, 0)
    with pytest.raises(NeurolocError, match="in both train and test"):
        assert_disjoint_groups(["a", "a", "b"], [0, 2], [1])


@needs_ud
def test_control_labels_fixed_per_type(ewt_words) -> None:
    types = ewt_words["word"].str.lower().tolist()
    labels = ewt_words["upos"].tolist()
    control = control_labels(types, labels, seed=1)
    per_type: dict[str, set] = {}
    for t, c in zip(types, control):
        per_type.setdefault(t, set()).add(c)
    assert all(len(v) == 1 for v in per_type.values())
    assert set(control) <= set(labels)
    assert control == control_labels(types, labels, seed=1)
    assert control != control_labels(types, labels, seed=2)
    # a type keeps its label in a separate call on a sample with the same label distribution
    assert control_labels(types[::-1], labels[::-1], seed=1) == control[::-1]


def test_control_labels_follow_the_label_distribution() -> None:
    rng = np.random.default_rng(0)
    classes = np.array(["NOUN", "VERB", "ADJ", "DET", "X"])
    probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    labels = rng.choice(classes, size=20000, p=probs)
    types = [f"w{i}" for i in range(20000)]  # every item its own type: one draw per type
    drawn = Counter(control_labels(types, labels.tolist(), seed=0))
    empirical = Counter(labels.tolist())
    observed = np.array([drawn[c] for c in classes])
    expected = np.array([empirical[c] for c in classes], dtype=float)
    assert chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3


def test_control_task_is_learnable_only_by_memorising_types() -> None:
    rng = np.random.default_rng(0)
    n_types, n = 40, 4000
    type_ids = rng.integers(0, n_types, size=n)
    true = np.array(["A", "B", "C", "D"])[type_ids % 4]
    control = np.array(control_labels([f"t{t}" for t in type_ids], true.tolist(), seed=0))
    one_hot = np.eye(n_types)[type_ids]
    noise = rng.normal(size=(n, n_types))
    half = n // 2
    memorised = evaluate_probe(one_hot[:half], control[:half], one_hot[half:], control[half:], n_bootstrap=50)
    blind = evaluate_probe(noise[:half], control[:half], noise[half:], control[half:], n_bootstrap=50)
    assert memorised["accuracy"] > 0.99
    assert blind["accuracy"] < 0.6


def test_probe_on_separable_and_shuffled_data() -> None:
    X, y = _blobs(3000, k=4, dim=20, seed=0)
    train, test = slice(0, 2000), slice(2000, None)
    result = evaluate_probe(X[train], y[train], X[test], y[test], seed=0, n_bootstrap=500)
    assert result["accuracy"] > 0.95 and result["macro_f1"] > 0.95
    assert result["n_test"] == 1000
    shuffled = np.random.default_rng(1).permutation(y[train])
    chance = evaluate_probe(X[train], shuffled, X[test], y[test], seed=0, n_bootstrap=500)
    assert abs(chance["accuracy"] - 0.25) < 0.07


def test_scores_match_sklearn_and_ci_contains_estimate() -> None:
    X, y = _blobs(600, k=5, dim=3, seed=2, spread=1.0)  # overlapping classes: imperfect accuracy
    result = evaluate_probe(X[:400], y[:400], X[400:], y[400:], seed=5, n_bootstrap=1000)
    pred = make_probe().fit(X[:400], y[:400]).predict(X[400:])
    assert result["accuracy"] == pytest.approx(accuracy_score(y[400:], pred))
    assert result["macro_f1"] == pytest.approx(f1_score(y[400:], pred, average="macro"))
    for metric in ("accuracy", "macro_f1"):
        lo, hi = result[f"{metric}_ci"]
        assert lo <= result[metric] <= hi and hi - lo > 0
    assert result == evaluate_probe(X[:400], y[:400], X[400:], y[400:], seed=5, n_bootstrap=1000)
    assert result["accuracy_ci"] != evaluate_probe(X[:400], y[:400], X[400:], y[400:], seed=6)["accuracy_ci"]


def test_bootstrap_macro_f1_matches_sklearn_per_resample() -> None:
    from neuroloc.probe import _accuracy_f1

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, size=(20, 30)), rng.integers(0, 5, size=(20, 30))
    acc, f1 = _accuracy_f1(t, p, 5)
    for i in range(20):
        assert acc[i] == pytest.approx(accuracy_score(t[i], p[i]))
        assert f1[i] == pytest.approx(f1_score(t[i], p[i], average="macro"))


def test_majority_baseline_equals_hand_count() -> None:
    y_train = ["NOUN"] * 5 + ["VERB"] * 3 + ["ADJ"]
    y_test = ["NOUN", "VERB", "VERB", "ADJ"]
    result = majority_baseline(y_train, y_test, n_bootstrap=200)
    assert result["accuracy"] == 0.25
    # F1: NOUN 2*1/(4+1) = 0.4, VERB 0, ADJ 0 -> macro 0.4 / 3
    assert result["macro_f1"] == pytest.approx(0.4 / 3)
    lo, hi = result["accuracy_ci"]
    assert 0.0 <= lo <= 0.25 <= hi <= 1.0
    # ties go to the first label in sort order
    assert majority_baseline(["b", "a"], ["a", "b"])["accuracy"] == 0.5
    assert majority_baseline(["b", "a", "b", "a"], ["a"])["accuracy"] == 1.0


def test_probe_selectivity() -> None:
    assert probe_selectivity(0.9, 0.6) == pytest.approx(0.3)
    with pytest.raises(NeurolocError, match="control_accuracy"):
        probe_selectivity(0.9, 1.5)


def test_empty_test_set_is_an_error() -> None:
    with pytest.raises(NeurolocError, match="empty test set"):
        majority_baseline(["a"], [])
