"""The reliability figures draw what the tables say."""

from pathlib import Path

import numpy as np
import pytest

from neuroloc import Localizer
from neuroloc.localize.reliability import ReliabilityConfig, assess
from neuroloc.models.loading import wrap_model
from neuroloc.report.reliability_figures import reliability_figures
from neuroloc.settings import RunSettings
from neuroloc.stimuli.language import load_language_localizer
from tests.tiny import tiny_model, tiny_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"


@pytest.fixture(scope="module")
def result():
    full = load_language_localizer(DATA)
    stimuli = full.subset(full.indices("sentences")[:40] + full.indices("nonwords")[:40])
    lm = wrap_model(tiny_model("gpt2", seed=1), tiny_tokenizer())
    config = ReliabilityConfig(folds=3, permutations=50, random_sets=20, untrained=(0,), length_matched=True)
    return assess(lm, stimuli, Localizer(["residual", "mlp"], pooling="mean", percent=10, batch_size=16), config,
                  settings=RunSettings(batch_size=16, progress=False))


def test_every_table_has_its_figure(result):
    figures = reliability_figures(result.tables)
    assert set(figures) == {"reliability_split_half", "reliability_held_out", "reliability_stability",
                            "reliability_permutation", "reliability_untrained", "reliability_token_counts"}


def test_split_half_lines_are_the_per_layer_jaccards(result):
    split = result.tables["split_half"]
    mean = split[split.fold_a.isna() & (split.site != "all")]
    axes = reliability_figures(result.tables)["reliability_split_half"].axes
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    for kind in ("mlp", "residual"):
        expected = mean[mean.kind == kind].sort_values("layer")
        np.testing.assert_allclose(lines[kind].get_ydata(), expected.jaccard)


def test_permutation_histogram_marks_the_observed_statistic(result):
    summary = result.tables["permutation"].iloc[0]
    ax = reliability_figures(result.tables)["reliability_permutation"].axes[0]
    observed = [line for line in ax.get_lines() if line.get_label().startswith("observed")][0]
    assert observed.get_xdata()[0] == pytest.approx(summary[summary.rule_statistic])
    counts = sum(patch.get_height() for patch in ax.patches)
    assert counts == result.tables["permutation_null"][summary.rule_statistic].notna().sum()
