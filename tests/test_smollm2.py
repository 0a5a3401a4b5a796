"""Integration on the real default model, SmolLM2-135M (GGUF, dequantized and cached on first use).

Data comes from the installed data-only wheels (brainscore-language: the Fedorenko 2010 localizer
and SyntaxGym suites), so these tests need nothing outside the repository's own set-up.
"""

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from neuroloc import Localizer, UnitSet, hooks, load_model
from neuroloc.cli import app

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2", dtype="float32")


def test_layout_and_identity(lm):
    assert lm.layout.n_layers == 30
    assert (lm.layout.width("residual"), lm.layout.width("mlp"), lm.layout.width("attn")) == (576, 1536, 9)
    assert len(lm.identity["sha256"]) == 64 and lm.tokenizer.pad_token is not None


def test_noop_intervention_keeps_logits_bit_identical(lm):
    batch = lm.tokenizer(["The keys to the cabinet are on the table."], return_tensors="pt")
    with torch.inference_mode():
        bare = lm.model(**batch).logits
        with hooks(lm.layout, edit={site: (lambda value: value) for site in lm.layout.sites()}):
            hooked = lm.model(**batch).logits
    assert torch.equal(bare, hooked)


def test_cli_language_localizer_and_lesion(tmp_path):
    runner = CliRunner()
    loc = tmp_path / "lang"
    result = runner.invoke(app, ["localize", "--model", "smollm2", "--localizer", "language", "--site", "residual",
                                 "--percent", "1", "--out", str(loc), "--quiet"])
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(loc / "scores.parquet")
    assert len(scores) == 30 * 576
    units = UnitSet.load(loc)
    assert len(units) == round(0.01 * 30 * 576) == scores.selected.sum()
    selected = scores[scores.selected]
    assert selected.t.min() >= scores[~scores.selected].t.max() and (selected.p_fdr < 1e-3).all()
    manifest = json.loads((loc / "manifest.json").read_text())
    assert manifest["stimuli"]["n"] == 480 and manifest["model"]["sha256"]
    assert torch.isfinite(Localizer.load(loc).means_["layers.29.residual"]).all()

    result = runner.invoke(app, ["lesion", "--model", "smollm2", "--units", str(loc), "--benchmarks", "syntaxgym",
                                 "--syntaxgym-limit", "2", "--controls", "1", "--out", str(tmp_path / "lesion"),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "lesion" / "results.csv")
    overall = results[results.subset == "overall"].set_index("condition").value
    assert set(overall.index) == {"intact", "target", "random"}
    assert overall["target"] < overall["intact"]  # zeroing 1% language units hurts syntax …
