"""The localize and lesion pipelines and the CLI, end to end on a tiny model saved to disk."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import Localizer, NeurolocError, StimulusSet, UnitSet, wrap_model
from neuroloc.cli import app
from neuroloc.pipelines.lesion import Benchmark, build_benchmarks, run_lesion_study
from neuroloc.settings import RunSettings
from neuroloc.pipelines.localize import run_localize
from tests.test_run_language import write_fedorenko
from tests.tiny import tiny_model, tiny_tokenizer

SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "the dog jumps over the fox", "what is the answer", "the lazy dog looked elsewhere",
             "she didn't know that the keys were there"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp holily ree ne os", "rere ofuke sleoming pome", "shourn ne holily ofuke rere"]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def stimuli():
    return StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple("S" * 6 + "N" * 6), ("S", "N"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A miniature data folder laid out like ../shared/data: blimp/, ud/."""
    root = tmp_path_factory.mktemp("data")
    (root / "blimp").mkdir()
    pairs = [("the dog jumps", "the dog jump"), ("she looked", "she look"), ("the keys were", "the keys was")]
    with open(root / "blimp" / "toy_agreement.jsonl", "w") as handle:
        for good, bad in pairs:
            handle.write(json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": "toy_agreement"}) + "\n")
    (root / "ud").mkdir()
    (root / "ud" / "en_ewt-ud-dev.conllu").write_text(
        "# sent_id = a-1\n# text = the dog jumps\n1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
        "2\tdog\tdog\tNOUN\tNN\t_\t3\tnsubj\t_\t_\n3\tjumps\tjump\tVERB\tVBZ\t_\t0\troot\t_\t_\n\n"
        "# sent_id = a-2\n# text = she looked\n1\tshe\tshe\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"
        "2\tlooked\tlook\tVERB\tVBD\t_\t0\troot\t_\t_\n\n")
    return root


def test_localize_pipeline_writes_every_output(lm, stimuli, tmp_path):
    fitted = run_localize(lm, stimuli, Localizer(["residual", "mlp"], percent=10), tmp_path / "out")
    out = tmp_path / "out"
    for name in ("units.safetensors", "units.json", "scores.parquet", "layers.png", "manifest.json",
                 "stats.safetensors", "means.safetensors", "localizer.json"):
        assert (out / name).is_file(), name
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns) == ["unit", "site", "layer", "index", "t", "p", "p_fdr", "d", "mean_a", "mean_b",
                                    "selected"]
    assert len(scores) == 2 * (32 + 48) and scores.selected.sum() == len(fitted.units_)
    assert UnitSet.load(out) == fitted.units_
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stimuli"]["sha256"] == stimuli.content_hash()
    assert manifest["parameters"]["percent"] == 10
    restored = Localizer.load(out)
    np.testing.assert_allclose(restored.t_, fitted.t_)
    assert restored.select(percent=5) == fitted.select(percent=5)
    assert not list(tmp_path.glob(".out.staging-*"))


def test_lesion_study_rows_controls_and_dose_response(lm, stimuli, data, tmp_path):
    localizer = Localizer("residual", percent=10).fit(lm, stimuli)
    benchmarks = build_benchmarks(["blimp", "perplexity"], settings=RunSettings(batch_size=4), data_dir=data)
    run_lesion_study(lm, localizer.units_, benchmarks, tmp_path / "lesion", localizer=localizer,
                               percents=[5, 10], n_controls=2, control_kinds=["random", "magnitude"],
                               progress=False)
    out = tmp_path / "lesion"
    for name in ("results.csv", "summary.csv", "lesion.png", "dose_response.png", "manifest.json"):
        assert (out / name).is_file(), name
    written = pd.read_csv(out / "results.csv")
    assert list(written.columns[:7]) == ["condition", "seed", "percent", "benchmark", "subset", "metric", "value"]
    ppl = written[(written.benchmark == "perplexity") & (written.metric == "perplexity")]
    # intact once; per size: target + 2 seeds × 2 control kinds.
    assert ppl.groupby(["condition"]).size().to_dict() == {"intact": 1, "target": 2, "random": 4, "magnitude": 4}
    for percent, size in ((5, round(0.05 * 64)), (10, round(0.1 * 64))):
        assert (written[written.percent == percent].n_units == size).all()
    intact = ppl[ppl.condition == "intact"].value.item()
    assert (ppl[ppl.condition == "target"].value != intact).all()  # zeroing units changes the model
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.benchmark == "perplexity") & (summary.metric == "perplexity") & (summary.percent == 10)]
    controls = ppl[(ppl.condition == "random") & (ppl.percent == 10)].value
    assert row.random_mean.item() == pytest.approx(controls.mean())
    assert row.effect_vs_random_sd.item() == pytest.approx(
        (row.target.item() - controls.mean()) / controls.std(ddof=1))


def test_lesion_summary_without_sizes_keeps_rows(lm, stimuli, data, tmp_path):
    localizer = Localizer("residual", percent=10).fit(lm, stimuli)
    benchmarks = build_benchmarks(["perplexity"], settings=RunSettings(), data_dir=data)
    run_lesion_study(lm, localizer.units_, benchmarks, tmp_path, n_controls=2, progress=False)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 2 and summary.random_n.eq(2).all()


def test_failed_lesion_run_leaves_output_untouched(lm, stimuli, tmp_path):
    units = Localizer("residual", percent=10).fit(lm, stimuli).units_
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("previous run\n")

    def broken(model, tokenizer):
        raise RuntimeError("benchmark crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        run_lesion_study(lm, units, [Benchmark("broken", "none", broken)], out, n_controls=1, progress=False)
    assert (out / "results.csv").read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lesion_errors_name_the_problem(lm, stimuli, data, tmp_path):
    with pytest.raises(NeurolocError, match="unknown benchmark"):
        build_benchmarks(["blimp", "glue"], settings=RunSettings(), data_dir=data)
    with pytest.raises(NeurolocError, match="does not exist"):
        build_benchmarks(["perplexity"], settings=RunSettings(), perplexity=str(tmp_path / "missing.conllu"))
    with pytest.raises(NeurolocError, match="does not exist"):
        build_benchmarks(["blimp"], settings=RunSettings(), blimp=str(tmp_path / "no-blimp"))
    foreign = Localizer("residual").fit(wrap_model(tiny_model("gpt2"), tiny_tokenizer()), stimuli).units_
    benchmarks = build_benchmarks(["perplexity"], settings=RunSettings(), data_dir=data)
    with pytest.raises(NeurolocError):
        run_lesion_study(lm, foreign, benchmarks, tmp_path / "x", progress=False)
    units = Localizer("residual").fit(lm, stimuli).units_
    with pytest.raises(NeurolocError, match="mean"):
        run_lesion_study(lm, units, benchmarks, tmp_path / "x", mode="mean", progress=False)
    with pytest.raises(NeurolocError, match="localize"):
        run_lesion_study(lm, units, benchmarks, tmp_path / "x", percents=[1], progress=False)
    with pytest.raises(NeurolocError, match="control kind"):
        run_lesion_study(lm, units, benchmarks, tmp_path / "x", control_kinds=["shuffled"], progress=False)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_cli_localize_then_lesion(model_dir, data, tmp_path):
    contrast = tmp_path / "contrast.csv"
    contrast.write_text("text,condition\n" + "".join(f"{t},S\n" for t in SENTENCES)
                        + "".join(f"{t},N\n" for t in NONWORDS))
    runner = CliRunner()
    result = runner.invoke(app, ["localize", "--model", str(model_dir), "--localizer", str(contrast), "--contrast",
                                 "S:N", "--site", "residual,mlp", "--count", "4", "--per-layer", "--abs",
                                 "--out", str(tmp_path / "loc"), "--quiet"])
    assert result.exit_code == 0, result.output
    units = UnitSet.load(tmp_path / "loc")
    assert len(units) == 4 * 4  # two layers × two sites × 4
    manifest = json.loads((tmp_path / "loc" / "manifest.json").read_text())
    assert manifest["parameters"]["absolute"] is True and manifest["parameters"]["per_layer"] is True

    result = runner.invoke(app, ["lesion", "--model", str(model_dir), "--units", str(tmp_path / "loc"),
                                 "--data", str(data), "--benchmarks", "blimp,perplexity", "--controls", "2",
                                 "--control-kind", "random,magnitude", "--mode", "mean",
                                 "--out", str(tmp_path / "les"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "les" / "results.csv")
    assert set(results.condition) == {"intact", "target", "random", "magnitude"}
    assert json.loads((tmp_path / "les" / "manifest.json").read_text())["parameters"]["mode"] == "mean"

    # Lesioning only each text's last token changes no score (the last token predicts nothing scored),
    # while the same units lesioned everywhere do change them.
    result = runner.invoke(app, ["lesion", "--model", str(model_dir), "--units", str(tmp_path / "loc"),
                                 "--data", str(data), "--benchmarks", "blimp,perplexity", "--controls", "1",
                                 "--positions", "last", "--out", str(tmp_path / "last"), "--quiet"])
    assert result.exit_code == 0, result.output
    last = pd.read_csv(tmp_path / "last" / "results.csv")
    per_condition = last.pivot_table(index=["benchmark", "subset", "metric"], columns="condition", values="value")
    np.testing.assert_allclose(per_condition["target"], per_condition["intact"], rtol=1e-6)
    everywhere = results[results.condition == "target"].set_index(["benchmark", "subset", "metric"]).value
    assert not np.allclose(everywhere.loc[per_condition.index], per_condition["intact"], rtol=1e-6)
    assert json.loads((tmp_path / "last" / "manifest.json").read_text())["parameters"]["positions"] == "last"


@pytest.mark.parametrize("arguments, message", [
    (["lesion", "--units", "{loc}", "--benchmarks", "glue"], "unknown benchmark"),
    (["lesion", "--units", "{tmp}/nothing-here"], "units"),
    (["localize", "--localizer", "{tmp}/missing.csv"], "missing.csv"),
    (["localize", "--percent", "0"], "percent"),
    (["lesion", "--units", "{loc}", "--positions", "first"], "--positions takes 'last' or integers"),
])
def test_cli_errors_are_one_clear_line(model_dir, tmp_path, arguments, message):
    loc = tmp_path / "loc"
    contrast = tmp_path / "contrast.csv"
    contrast.write_text("text,condition\n" + "".join(f"{t},S\n" for t in SENTENCES)
                        + "".join(f"{t},N\n" for t in NONWORDS))
    runner = CliRunner()
    assert runner.invoke(app, ["localize", "--model", str(model_dir), "--localizer", str(contrast), "--out", str(loc),
                               "--quiet"]).exit_code == 0
    filled = [a.format(loc=loc, tmp=tmp_path) for a in arguments]
    if filled[0] == "localize" and "--localizer" not in filled:
        filled += ["--localizer", str(contrast)]
    result = runner.invoke(app, filled + ["--model", str(model_dir), "--out", str(tmp_path / "new"), "--quiet"])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "new").exists()


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    from neuroloc.progress import progress_bar

    with progress_bar("lesion conditions", 20) as advance:
        for _ in range(20):
            advance(1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"lesion conditions: {n}/20" for n in range(2, 21, 2)]
    with progress_bar("silent", 5, enabled=False) as advance:
        advance(5)
    assert capsys.readouterr().err == ""


def test_cli_pos_on_a_small_treebank(model_dir, tmp_path):
    from tests.test_pos_pipeline import conllu_text

    (tmp_path / "train.conllu").write_text(conllu_text(n_docs=6, per_doc=4, seed=0))
    (tmp_path / "fresh.conllu").write_text(conllu_text(n_docs=2, per_doc=4, seed=1))
    # the old flags (--data FILE, --method, --random-sets) still work, with a warning
    result = CliRunner().invoke(app, [
        "pos", "--model", str(model_dir), "--data", str(tmp_path / "train.conllu"), "--eval",
        str(tmp_path / "fresh.conllu"), "--method", "gradxact", "--classes", "NOUN,VERB", "--k", "5",
        "--random-sets", "2", "--out", str(tmp_path / "pos"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "--method is deprecated" in result.output and "--random-sets is deprecated" in result.output
    probe = pd.read_csv(tmp_path / "pos" / "probe.csv")
    assert {"test", "eval"} <= set(probe.split)
    parameters = json.loads((tmp_path / "pos" / "manifest.json").read_text())["parameters"]
    assert parameters["score"] == "gradxact" and parameters["n_controls"] == 2
    assert parameters["treebank"] == str(tmp_path / "train.conllu") and parameters["data"] is None
    missing = CliRunner().invoke(app, ["pos", "--model", str(model_dir), "--treebank", str(tmp_path / "none.conllu"),
                                       "--out", str(tmp_path / "x"), "--quiet"])
    assert missing.exit_code == 2 and "none.conllu" in missing.output and not (tmp_path / "x").exists()


def test_main_job_runs_the_benchmarks_it_has_data_for(data, monkeypatch, tmp_path):
    import importlib.util

    from neuroloc.pipelines.language_network import LanguageNetworkConfig

    fedorenko = str(tmp_path / "fedorenko")  # the stimuli are not what this test is about
    write_fedorenko(tmp_path / "fedorenko")
    monkeypatch.delenv("NEUROLOC_DATA", raising=False)
    found = LanguageNetworkConfig(data=str(data), stimuli_path=fedorenko).load_inputs()
    assert [b.name for b in found["benchmarks"]] == ["blimp", "syntaxgym", "perplexity"] and not found["skipped"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    monkeypatch.chdir(tmp_path)  # no ../shared/data beside the working directory
    bare = LanguageNetworkConfig(stimuli_path=fedorenko).load_inputs()
    assert [b.name for b in bare["benchmarks"]] == ["syntaxgym"]
    assert [s.split()[0] for s in bare["skipped"]] == ["blimp", "perplexity"]
    given = LanguageNetworkConfig(stimuli_path=fedorenko, benchmarks=f"blimp:path={data / 'blimp'};syntaxgym;"
                                                                     f"perplexity:path={data / 'ud' / 'en_ewt-ud-dev.conllu'}")
    assert [b.name for b in given.load_inputs()["benchmarks"]] == ["blimp", "syntaxgym", "perplexity"]
