"""`neuroloc run language`, the main job, end to end on a tiny model saved to disk, with miniature
Fedorenko, BLiMP, SyntaxGym and perplexity data written in tmp_path."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import Localizer, evaluate_blimp, evaluate_perplexity, evaluate_syntaxgym, get_stimuli, wrap_model
from neuroloc.cli import app
from neuroloc.evaluate.perplexity import load_texts
from neuroloc.pipelines.language import LanguageConfig, run_language
from neuroloc.pipelines.lesion import build_benchmarks
from neuroloc.settings import RunSettings
from tests.test_seams import write_data
from tests.tiny import tiny_model, tiny_tokenizer

_WORDS = "the quick brown fox jumps over lazy dog she looked for keys in drawer what is answer".split()
_NONWORDS = "pome oy ree holily shourn ne sleoming whimp rere os ofuke".split()


def write_fedorenko(directory, n: int = 10, seed: int = 0) -> None:
    """Two run files of 12-word sentences (S) and 12-item non-word strings (N) in the original layout."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    for run in (1, 2):
        lines = ["stim1," + ",".join(f"stim{i}" for i in range(2, 15))]
        for i in range(n):
            pool, flag = (_WORDS, "S") if i % 2 == 0 else (_NONWORDS, "N")
            lines.append(f"{i + 1}," + ",".join(rng.choice(pool).upper() for _ in range(12)) + f",{flag}")
        (directory / f"langloc_fmri_run{run}_stim_set1.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-language")
    data = write_data(root / "data")
    write_fedorenko(data / "fedorenko2010")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return data, model_dir


def test_cli_run_language_writes_consistent_outputs(setup, tmp_path):
    data, model_dir = setup
    out = tmp_path / "language"
    result = CliRunner().invoke(app, ["run", "language", "--model", str(model_dir), "--data", str(data),
                                      "--percent", "5,10", "--controls", "2", "--limit", "2", "--syntaxgym-limit",
                                      "2", "--perplexity-limit", "2", "--batch-size", "4", "--dtype", "float32", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("report.html", "manifest.json", "localize/units.json", "localize/scores.parquet",
                 "localize/manifest.json", "lesion/results.csv", "lesion/summary.csv", "lesion/lesion.png",
                 "lesion/dose_response.png", "lesion/manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["sizes"] == [5.0, 10.0] and manifest["parameters"]["n_controls"] == 2
    assert [b["name"] for b in manifest["benchmarks"]] == ["blimp", "syntaxgym", "perplexity"]

    results = pd.read_csv(out / "lesion" / "results.csv")
    # intact once; per size: the target and 2 seeds of each control kind
    per_condition = results[results.benchmark == "perplexity"].groupby("condition").size().to_dict()
    assert per_condition == {"intact": 2, "target": 4, "random": 8, "magnitude": 8}
    scores = pd.read_parquet(out / "localize" / "scores.parquet")
    units = 2 * 32  # two layers of 32 residual units
    assert len(scores) == units
    for percent in (5, 10):
        assert (results[results.percent == percent].n_units == round(percent / 100 * units)).all()

    # intact numbers = a direct evaluation of the model on the same data
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    intact = results[results.condition == "intact"].set_index(["benchmark", "subset", "metric"]).value
    direct = pd.concat([
        evaluate_blimp(lm.model, lm.tokenizer, data / "blimp", limit=2, batch_size=32, bos="prepend"),
        evaluate_syntaxgym(lm.model, lm.tokenizer, data / "syntaxgym", limit=2, batch_size=32, bos="prepend"),
        evaluate_perplexity(lm.model, lm.tokenizer, load_texts(data / "ud" / "en_ewt-ud-dev.conllu", limit=2),
                            name="en_ewt-ud-dev", batch_size=32, bos="prepend")])
    for row in direct.itertuples():
        assert intact[row.benchmark, row.subset, row.metric] == pytest.approx(row.value, rel=1e-5), row

    # the localizer written = a localizer fitted directly on the same stimuli
    fitted = Localizer("residual", pooling="last", percent=10).fit(lm, get_stimuli("language",
                                                                                   path=str(data / "fedorenko2010")))
    assert scores.t.to_numpy() == pytest.approx(fitted.t_, rel=1e-4, abs=1e-4)
    summary = pd.read_csv(out / "lesion" / "summary.csv")
    row = summary[(summary.benchmark == "perplexity") & (summary.metric == "perplexity") & (summary.percent == 10)]
    controls = results[(results.condition == "magnitude") & (results.percent == 10) & (results.metric == "perplexity")]
    assert row.magnitude_mean.item() == pytest.approx(controls.value.mean())
    html = (out / "report.html").read_text()
    assert "Lesion results" in html and "Dose" in html


def test_run_language_config_and_overrides(setup, tmp_path):
    data, _ = setup
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    stimuli = get_stimuli("language", path=str(data / "fedorenko2010"))
    benchmarks = build_benchmarks(["perplexity"], settings=RunSettings(batch_size=4), data_dir=data, perplexity_limit=2)
    config = LanguageConfig(percents=(10,), n_controls=2, control_kinds=("random",), progress=False)
    report = run_language(lm, stimuli, benchmarks, tmp_path / "a", config, mode="scale:0")
    assert report.is_file()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["parameters"]["mode"] == "scale:0" and manifest["parameters"]["control_kinds"] == ["random"]
    results = pd.read_csv(tmp_path / "a" / "lesion" / "results.csv")
    assert set(results.condition) == {"intact", "target", "random"}
    with pytest.raises(Exception, match="LanguageConfig"):
        run_language(lm, stimuli, benchmarks, tmp_path / "b", n_control=3)


def test_run_language_with_recordings_adds_the_alignment(setup, tmp_path):
    """With recordings, the language units are aligned against matched random sets and the report
    gains a 'Brain alignment' section; the alignment outputs sit in align/."""
    from neuroloc.align.simulate import simulate_recordings
    import numpy as np

    data, model_dir = setup
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    texts = [f"the {w} looked for the keys" for w in _WORDS] + [f"she saw a {w} in the drawer" for w in _WORDS]
    groups = [f"p{i // 4}" for i in range(len(texts))]
    recordings = simulate_recordings(np.random.default_rng(0).normal(size=(len(texts), 8)), texts, groups,
                                     n_subjects=2, n_neuroids=4)
    suite = build_benchmarks(["perplexity"], settings=RunSettings(), data_dir=data, perplexity_limit=2)
    report = run_language(lm, get_stimuli("language", path=str(data / "fedorenko2010")), suite, tmp_path / "out",
                          percents=[10], n_controls=1, control_kinds=("random",), progress=False,
                          recordings=recordings, align_controls=2,
                          align_options={"folds": 3, "ceiling": "none", "layers": None, "confounds": ()})
    html = report.read_text()
    assert "Brain alignment" in html
    summary = pd.read_csv(tmp_path / "out" / "align" / "summary.csv")
    assert {"units", "random"} <= set(summary.kind) and (summary.kind == "random").sum() == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["timings"]["align_s"] >= 0
