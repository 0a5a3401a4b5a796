"""The Localizer on a tiny model: t/p against scipy on the same pooled activations, selection rules."""

import numpy as np
import pytest
import scipy.stats
import torch

from neuroloc import Localizer, NeurolocError, Recorder, StimulusSet
from neuroloc.evaluate.controls import magnitude_matched, random_matched
from neuroloc.pipelines.lesion import unit_magnitudes
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "sentences and strings are contrasted here", "the dog jumps over the fox", "what is the answer",
             "she didn't know that the keys were there", "the lazy dog looked elsewhere"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp holily ree ne os", "rere ofuke sleoming pome", "oy oy ree whimp", "shourn ne holily ofuke rere"]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("gpt_neox"), tiny_tokenizer())


@pytest.fixture(scope="module")
def stimuli():
    return StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple(["S"] * 7 + ["N"] * 7), ("S", "N"))


def pooled(lm, texts, kinds, batch_size=1):
    """Pooled activations per text, all sites concatenated (the localizer's unit order)."""
    recorder = Recorder(lm, lm.layout.sites(kinds), batch_size=batch_size, bos="prepend")
    out = {}
    for batch in recorder.iter_batches(texts):
        features = torch.cat([batch.features[s] for s in recorder.sites], dim=1).double().numpy()
        for row, (text, _) in enumerate(batch.rows):
            out[text] = features[row]
    return np.stack([out[i] for i in range(len(texts))])


@pytest.mark.parametrize("absolute", [False, True])
def test_t_and_p_match_scipy(lm, stimuli, absolute):
    localizer = Localizer(["residual", "mlp", "attn"], percent=10, absolute=absolute, batch_size=4).fit(lm, stimuli)
    # The same pooled activations the localizer streamed: same texts, same batches.
    every = pooled(lm, list(stimuli.texts), ["residual", "mlp", "attn"], batch_size=4)
    a, b = every[:7], every[7:]
    if absolute:
        a, b = np.abs(a), np.abs(b)
    expected = scipy.stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(localizer.t_, expected.statistic, rtol=1e-6)
    np.testing.assert_allclose(localizer.p_, expected.pvalue, rtol=1e-6)
    np.testing.assert_allclose(localizer.p_fdr_, scipy.stats.false_discovery_control(expected.pvalue), rtol=1e-6)


def test_global_selection_is_top_percent_per_site_kind(lm, stimuli):
    localizer = Localizer(["residual", "mlp"], percent=10).fit(lm, stimuli)
    frame = localizer.scores_frame()
    for kind, n in (("residual", 64), ("mlp", 96)):
        rows = frame[frame.site == kind]
        chosen = rows[rows.selected]
        assert len(chosen) == round(0.1 * n)
        assert chosen.t.min() >= rows[~rows.selected].t.max()


def test_per_layer_count_fdr_and_least_selective(lm, stimuli):
    localizer = Localizer("residual", count=3, per_layer=True).fit(lm, stimuli)
    assert localizer.units_.counts() == {"layers.0.residual": 3, "layers.1.residual": 3}
    least = localizer.select(count=2, largest=False)
    frame = localizer.scores_frame(least)
    for _, layer in frame.groupby("layer"):
        assert layer.selected.sum() == 2
        assert layer[layer.selected].t.max() <= layer[~layer.selected].t.min()
    strict = Localizer("residual", percent=50, fdr=1e-12).fit(lm, stimuli)
    frame = strict.scores_frame()
    assert (frame[frame.selected].p_fdr <= 1e-12).all()


def test_partial_fit_equals_fit(lm, stimuli):
    whole = Localizer("residual").fit(lm, stimuli)
    first = stimuli.subset([0, 1, 2, 7, 8, 9])
    rest = stimuli.subset([3, 4, 5, 6, 10, 11, 12, 13])
    parts = Localizer("residual").fit(lm, first).partial_fit(lm, rest)
    np.testing.assert_allclose(parts.t_, whole.t_, rtol=1e-6)
    assert parts.units_ == whole.units_


def test_controls_match_counts_and_avoid_target(lm, stimuli):
    localizer = Localizer(["residual", "mlp"], percent=10, per_layer=True).fit(lm, stimuli)
    target = localizer.units_
    for seed in range(3):
        control = random_matched(target, seed)
        assert control.counts() == target.counts() and len(control & target) == 0
        band = localizer.band(40, 60, target, seed)
        assert band.counts() == target.counts()
        t = localizer.scores_frame(band)
        chosen = t[t.selected]
        lo, hi = np.percentile(localizer.t_, [40, 60])
        assert chosen.t.between(lo, hi).all()


def test_save_load_round_trip(tmp_path, lm, stimuli):
    localizer = Localizer("residual", percent=5).fit(lm, stimuli)
    localizer.save(tmp_path)
    loaded = Localizer.load(tmp_path)
    assert loaded.units_ == localizer.units_
    np.testing.assert_allclose(loaded.t_, localizer.t_)
    assert set(loaded.means_) == {"layers.0.residual", "layers.1.residual"}


def test_errors(lm, stimuli):
    with pytest.raises(NeurolocError, match="not fitted"):
        Localizer().select()
    with pytest.raises(NeurolocError, match="unknown site"):
        Localizer("neurons").fit(lm, stimuli)
    with pytest.raises(NeurolocError, match="percent"):
        Localizer(percent=0).fit(lm, stimuli)
    with pytest.raises(NeurolocError, match="at least 2"):
        Localizer().fit(lm, stimuli.subset([0, 1, 7]))


def test_magnitude_matched_controls_match_magnitudes_per_site(lm, stimuli):
    localizer = Localizer(["residual", "mlp"], percent=10, per_layer=True).fit(lm, stimuli)
    target = localizer.units_
    magnitudes = unit_magnitudes(localizer)
    flat_target = target.flat_mask().numpy()
    random_gaps, matched_gaps = [], []
    for seed in range(5):
        control = magnitude_matched(target, magnitudes, seed)
        assert control.counts() == target.counts() and len(control & target) == 0
        flat = control.flat_mask().numpy()
        matched_gaps.append(abs(np.log(magnitudes[flat]).mean() - np.log(magnitudes[flat_target]).mean()))
        drawn = random_matched(target, seed).flat_mask().numpy()
        random_gaps.append(abs(np.log(magnitudes[drawn]).mean() - np.log(magnitudes[flat_target]).mean()))
    assert max(matched_gaps) < 0.15  # mean log-magnitude within ~15%
    assert np.mean(matched_gaps) < np.mean(random_gaps)
