"""Fold assignment by content: deterministic, stable when stimuli are added, groups never split."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from neuroloc import NeurolocError, StimulusSet
from neuroloc.stimuli.folds import assign_folds
from neuroloc.stimuli.language import load_language_localizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"


@pytest.fixture(scope="module")
def language():
    return load_language_localizer(DATA)


def test_fold_is_the_hash_of_the_text(language):
    folds = assign_folds(language, 3, seed=7).folds
    for i in (0, 17, 300):
        digest = hashlib.sha256(f"7\x1f{language.texts[i]}".encode()).digest()
        assert folds[i] == int.from_bytes(digest[:8], "big") * 3 // 2**64


def test_adding_stimuli_moves_no_existing_stimulus(language):
    rng = np.random.default_rng(0)
    small = language.subset(sorted(rng.choice(len(language), 200, replace=False)))
    # The larger set holds the small one's texts among others, in another order.
    larger = language.subset(rng.permutation(len(language)))
    for k in (2, 5):
        before = dict(zip(small.texts, assign_folds(small, k).folds))
        after = dict(zip(larger.texts, assign_folds(larger, k).folds))
        assert all(after[text] == fold for text, fold in before.items())


def test_folds_are_balanced_per_label_as_fair_draws(language):
    sizes = assign_folds(language, 2).sizes(language)
    assert sizes.n.sum() == len(language)
    for label, group in sizes.groupby("label"):
        n = group.n.to_numpy()
        assert scipy.stats.binomtest(int(n[0]), int(n.sum()), 0.5).pvalue > 0.001


def test_groups_never_span_folds():
    texts = tuple(f"text number {i}" for i in range(300))
    groups = tuple(f"story{i // 7}" for i in range(300))
    stimuli = StimulusSet("grouped", texts, tuple("ab"[i % 2] for i in range(300)), ("a", "b"), groups=groups)
    assignment = assign_folds(stimuli, 4)
    assert assignment.by == "group"
    frame = assignment.frame(stimuli)
    assert (frame.groupby("group").fold.nunique() == 1).all()
    assert frame.fold.nunique() == 4
    assert assign_folds(stimuli, 4, by="text").by == "text"
    with pytest.raises(NeurolocError, match="no groups"):
        assign_folds(StimulusSet("x", texts, ("a",) * 300), 2, by="group")


def test_buckets_nest_folds_and_fractions(language):
    assignment = assign_folds(language, 3)
    n = assignment.n_buckets([0.25, 0.5, 0.75])
    assert n == 12
    buckets = assignment.buckets(n)
    np.testing.assert_array_equal(buckets * 3 // n, assignment.folds)
    positions = assignment.positions()
    for fraction in (0.25, 0.5, 0.75):
        np.testing.assert_array_equal(buckets < fraction * n, positions < fraction)
    with pytest.raises(NeurolocError, match="stability fraction"):
        assignment.n_buckets([1 / 3 + 1e-4])


def test_frame_csv_and_checks(tmp_path, language):
    assignment = assign_folds(language, 2)
    assignment.save(tmp_path / "folds.csv", language)
    frame = pd.read_csv(tmp_path / "folds.csv")
    assert list(frame.columns) == ["stimulus", "text", "label", "group", "fold"]
    assert frame.text.tolist() == list(language.texts) and frame.fold.tolist() == assignment.folds.tolist()
    assignment.check(language, ["sentences", "nonwords"])
    tiny = language.subset([0, 1, 2, 240, 241, 242])
    with pytest.raises(NeurolocError, match="fewer than 2"):
        assign_folds(tiny, 6).check(tiny, ["sentences", "nonwords"])
    with pytest.raises(NeurolocError, match="covers"):
        assignment.frame(tiny)
