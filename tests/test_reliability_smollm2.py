"""On SmolLM2 with the Fedorenko et al. (2010) stimuli, the language units beat every null, and a fake
contrast (the sentences split at random in two) does not."""

from pathlib import Path

import numpy as np
import pytest

from neuroloc import Localizer, StimulusSet, load_model
from neuroloc.localize.reliability import ReliabilityConfig, assess
from neuroloc.settings import RunSettings
from neuroloc.stimuli.language import load_language_localizer

pytestmark = pytest.mark.smollm2
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"
SETTINGS = RunSettings(batch_size=32, progress=False)
CONFIG = ReliabilityConfig(permutations=200, random_sets=50)


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2", dtype="float32")


@pytest.fixture(scope="module")
def language():
    return load_language_localizer(DATA)


def test_language_units_beat_the_nulls_and_a_fake_contrast_does_not(lm, language):
    real = assess(lm, language, Localizer("residual", percent=1), CONFIG, settings=SETTINGS).summary.iloc[0]
    assert real.split_half_jaccard > 10 * real.split_half_jaccard_chance_high
    assert real.held_out_d > 1 and real.held_out_d_random < 0.2
    assert real.permutation_p < 0.01 and real.n_fdr > 1000 > real.n_fdr_null_mean
    sentences = language.texts_of("sentences")
    fake = np.where(np.random.default_rng(0).permutation(len(sentences)) % 2 == 0, "A", "B")
    split = StimulusSet("fake", tuple(sentences), tuple(fake), ("A", "B"))
    null = assess(lm, split, Localizer("residual", percent=1), CONFIG, settings=SETTINGS).summary.iloc[0]
    assert null.split_half_jaccard <= null.split_half_jaccard_chance_high
    assert null.permutation_p > 0.05 and null.n_fdr <= 1
    assert abs(null.held_out_d) < 0.2
