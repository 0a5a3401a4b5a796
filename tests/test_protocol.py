"""The study protocol: declared parameters checked once, one runner (output folders that belong to one run,
checkpoints, interrupts, manifests, rerun), and run settings that reach every forward pass of a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import (AlignConfig, LanguageNetworkConfig, LesionConfig, LocalizeConfig, NeurolocError, RunOptions,
                      RunSettings, UnitSet, run, wrap_model)
from neuroloc.align.simulate import simulate_recordings
from neuroloc.cli import app
from neuroloc.interrupts import Interrupted
from neuroloc.record.checkpoint import CHECKPOINT_DIR
from tests.spies import assert_bos_policy, watch_forward
from tests.test_run_language import write_fedorenko
from tests.test_seams import NONWORDS, SENTENCES, write_data
from tests.tiny import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    contrast = root / "contrast.csv"
    pd.DataFrame({"text": SENTENCES + NONWORDS, "condition": ["S"] * 6 + ["N"] * 6}).to_csv(contrast, index=False)
    data = write_data(root / "data")
    write_fedorenko(data / "fedorenko2010")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return {"contrast": str(contrast), "data": str(data), "model": str(model_dir)}


def fresh_lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


def localize(files, **fields) -> LocalizeConfig:
    settings = fields.pop("settings", RunSettings(batch_size=2, progress=False))
    return LocalizeConfig(stimuli=files["contrast"], model=files["model"], settings=settings,
                          **{"site": "residual,mlp", "percent": 10.0, **fields})


# ------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("fields, message", [
    ({"percent": 200}, r"--percent: 200 is not allowed; give a number in \(0, 100\]"),
    ({"site": "nonsense"}, "--site: 'nonsense' is not a site kind; choose from residual"),
    ({"pooling": "nonsense"}, "--pooling: 'nonsense' is not a pooling"),
    ({"count": -5}, "--count: -5 is not allowed; give an integer ≥ 1"),
    ({"percent": 1.0, "count": 3}, "give at most one"),
    ({"score": "average_precision", "absolute": True}, "score 'average_precision' takes no option absolute"),
    ({"settings": {"batch_size": 0}}, "--batch-size: 0 is not allowed"),
    ({"layers": "0-x"}, "--layers takes 'all' or layer numbers"),
    ({"unknown_field": 1}, "unexpected keyword|unknown_field"),
])
def test_bad_parameters_are_one_line_naming_the_flag(fields, message):
    with pytest.raises((NeurolocError, TypeError), match=message):
        LocalizeConfig(**fields)


def test_the_config_is_the_manifest_and_loads_back():
    config = LesionConfig(units="x", sizes="0.5,1", benchmarks="blimp:limit=3;perplexity", positions="1,-2",
                          control_kinds="random,magnitude", settings=RunSettings(bos="none", batch_size=4))
    assert config.sizes == (0.5, 1.0) and config.positions == (1, -2)
    assert [(b.name, b.options) for b in config.benchmarks] == [("blimp", {"limit": 3}), ("perplexity", {})]
    data = json.loads(json.dumps(config.to_dict()))
    assert data["benchmarks"] == [{"name": "blimp", "options": {"limit": 3}}, {"name": "perplexity", "options": {}}]
    assert LesionConfig.from_dict(data) == config
    with pytest.raises(NeurolocError, match="no parameter.*bogus"):
        LesionConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(NeurolocError, match="benchmark blimp: no option lim"):
        LesionConfig(units="x", benchmarks="blimp:lim=3")
    with pytest.raises(NeurolocError, match="--control-kind.*'shuffled' is not a control kind"):
        config.replace(control_kinds=("shuffled",))


# ------------------------------------------------------------------------------------- output folders
def test_the_manifest_names_the_code_as_the_run_started(files, tmp_path, monkeypatch):
    """A long run's manifest is written at its end: the commit it names is the one read as the run started,
    not one made while it ran."""
    from neuroloc import io as neuroloc_io

    calls = []
    monkeypatch.setattr(neuroloc_io.subprocess, "run", lambda *a, **k: calls.append(a) or type(
        "Done", (), {"stdout": f"{len(calls):040d}"})())
    neuroloc_io.source_commit.cache_clear()
    config = localize(files)
    compute = type(config).compute
    seen = []
    monkeypatch.setattr(type(config), "compute", lambda self, *a: seen.append(len(calls)) or compute(self, *a))
    run(config, tmp_path / "out", lm=fresh_lm())
    neuroloc_io.source_commit.cache_clear()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert seen == [2] and manifest["neuroloc_source"]["commit"] == f"{1:040d}"  # rev-parse, then status


def test_an_output_folder_belongs_to_one_run(files, tmp_path):
    out = tmp_path / "out"
    first = localize(files)
    run(first, out, lm=fresh_lm())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "localize" and manifest["parameters"] == first.to_dict()
    assert manifest["neuroloc_version"] == "0.2.0" and len(manifest["neuroloc_source"]["commit"]) == 40
    assert not (out / CHECKPOINT_DIR).exists()  # removed after success
    files_of_first = {p.name for p in out.iterdir()}
    assert {"units.safetensors", "units.json", "scores.parquet", "report.html"} <= files_of_first

    run(first, out, lm=fresh_lm())  # the same run again: replaces it
    other = localize(files, design="one-vs-rest", score="one_vs_rest_welch")
    with pytest.raises(NeurolocError, match="holds the results of another run.*--overwrite"):
        run(other, out, lm=fresh_lm())
    run(other, out, lm=fresh_lm(), options=RunOptions(overwrite=True))
    assert "units.json" not in {p.name for p in out.iterdir()}  # nothing of the old run's layout is left
    assert json.loads((out / "manifest.json").read_text())["parameters"]["design"] == "one-vs-rest"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(NeurolocError, match="not empty and holds no neuroloc output"):
        run(first, foreign, lm=fresh_lm())
    assert (foreign / "notes.txt").read_text() == "mine"


def test_checks_come_before_the_model_loads(files, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    missing_model = localize(files).replace(model=str(tmp_path / "no-such-model"))
    with pytest.raises(NeurolocError, match="--out .*a-file is a file"):
        run(missing_model, a_file)
    with pytest.raises(NeurolocError, match="cannot write there"):
        run(missing_model, a_file / "inside")
    with pytest.raises(NeurolocError, match="missing.csv"):
        run(missing_model.replace(stimuli=str(tmp_path / "missing.csv")), tmp_path / "new")
    with pytest.raises(NeurolocError, match="--model .*no-such-model: no such file or directory"):
        run(missing_model, tmp_path / "new")
    assert not (tmp_path / "new").exists()  # nothing half-made is left


def test_stale_staging_of_a_dead_process_is_removed(files, tmp_path):
    stale = tmp_path / ".out.staging-999999999-abcd"  # no such process
    stale.mkdir()
    (stale / "units.json").write_text("{}")
    run(localize(files), tmp_path / "out", lm=fresh_lm())
    assert not stale.exists()


def test_failure_before_any_checkpoint_leaves_no_folder(files, tmp_path):
    lm = fresh_lm()
    lm.layout.layers[0].register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("broken model")))
    with pytest.raises(RuntimeError, match="broken model"):
        run(localize(files), tmp_path / "out", lm=lm)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- interrupts
def interrupt_after(lm, calls: int):
    """Interrupt the run (as SIGINT does) in the forward pass after the first `calls` (counted at layer 0:
    recordings stop the pass after their last layer)."""
    state = {"calls": 0}

    def hook(module, args, output):
        state["calls"] += 1
        if state["calls"] > calls:
            raise Interrupted("SIGINT")

    return lm.layout.layers[0].register_forward_hook(hook), state


def test_an_interrupted_localize_resumes_to_the_same_result(files, tmp_path):
    config = localize(files)
    whole = run(config, tmp_path / "whole", lm=fresh_lm()).localizer
    lm = fresh_lm()
    handle, _ = interrupt_after(lm, 2)
    with pytest.raises(Interrupted):  # the default interval (60 s) never came: only the interrupt saved
        run(config, tmp_path / "out", lm=lm)
    handle.remove()
    saved = list((tmp_path / "out" / CHECKPOINT_DIR).glob("stats-rank0.safetensors"))
    assert saved and not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(NeurolocError, match="unfinished run.*other settings"):
        run(localize(files, pooling="mean"), tmp_path / "out", lm=fresh_lm(), options=RunOptions(resume=True))
    counted = {"calls": 0}
    lm.layout.layers[0].register_forward_hook(lambda *a: counted.__setitem__("calls", counted["calls"] + 1))
    resumed = run(config, tmp_path / "out", lm=lm, options=RunOptions(resume=True)).localizer
    assert counted["calls"] == 4  # 12 stimuli, 2 per batch: 2 batches were folded in before the interrupt
    np.testing.assert_allclose(resumed.scores_, whole.scores_, rtol=1e-6)
    assert resumed.units_ == whole.units_
    with pytest.raises(NeurolocError, match="--resume: .* holds no unfinished run"):
        run(config, tmp_path / "out", lm=fresh_lm(), options=RunOptions(resume=True))


def test_an_interrupted_lesion_study_resumes_per_condition(files, tmp_path):
    run(localize(files), tmp_path / "loc", lm=fresh_lm())
    config = LesionConfig(units=str(tmp_path / "loc"), benchmarks="perplexity", data=files["data"], n_controls=2,
                          model=files["model"], settings=RunSettings(batch_size=4, progress=False))
    whole = run(config, tmp_path / "whole", lm=fresh_lm()).results
    lm = fresh_lm()
    handle, _ = interrupt_after(lm, 2)  # perplexity of 2 texts at batch 4: one pass per condition
    with pytest.raises(Interrupted):
        run(config, tmp_path / "out", lm=lm)
    handle.remove()
    counted = {"calls": 0}
    lm.layout.layers[0].register_forward_hook(lambda *a: counted.__setitem__("calls", counted["calls"] + 1))
    resumed = run(config, tmp_path / "out", lm=lm).results
    assert counted["calls"] == 2  # 4 conditions (intact, target, 2 random): 2 were finished before
    pd.testing.assert_frame_equal(resumed, whole)


# ------------------------------------------------------------------------------------- rerun, CLI = API
def test_rerun_reproduces_a_localize_run(files, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["localize", "--model", files["model"], "--localizer", files["contrast"], "--site",
                               "residual,mlp", "--percent", "10", "--batch-size", "2", "--bos", "none",
                               "--dtype", "float32", "--out", str(tmp_path / "first"), "--quiet"])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["rerun", str(tmp_path / "first" / "manifest.json"), "--out", str(tmp_path / "again"),
                                "--quiet"])
    assert again.exit_code == 0, again.output
    first, second = (pd.read_parquet(tmp_path / name / "scores.parquet") for name in ("first", "again"))
    pd.testing.assert_frame_equal(first, second)
    assert UnitSet.load(tmp_path / "first") == UnitSet.load(tmp_path / "again")
    manifests = [json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("first", "again")]
    assert manifests[0]["parameters"] == manifests[1]["parameters"]

    # the Python API with the same config writes the same tables
    config = LocalizeConfig.from_dict(manifests[0]["parameters"])
    run(config, tmp_path / "api")
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / "api" / "scores.parquet"))


def test_cli_errors_name_the_flag_and_old_flags_still_work(files, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["localize", "--model", files["model"], "--localizer", files["contrast"], "--site",
                              "nonsense", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "error: --site: 'nonsense' is not a site kind" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x").exists()
    old = runner.invoke(app, ["localize", "--model", files["model"], "--localizer", files["contrast"], "--contrast",
                              "N:S", "--count", "3", "--dtype", "float32", "--out", str(tmp_path / "old"), "--quiet"])
    assert old.exit_code == 0, old.output
    assert "--contrast is deprecated; use --design" in old.output
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["parameters"]["design"] == "N:S"


# ------------------------------------------------------------------------------------- run settings
@pytest.mark.parametrize("policy", ["none", "prepend"])
def test_every_forward_pass_of_every_study_uses_the_bos_policy(files, tmp_path, policy):
    bos_id = tiny_tokenizer().bos_token_id
    settings = RunSettings(bos=policy, batch_size=3, progress=False)
    texts = [f"the {w} looked for the keys" for w in SENTENCES] * 2
    recordings = simulate_recordings(np.random.default_rng(0).normal(size=(len(texts), 4)), texts,
                                     [f"p{i // 3}" for i in range(len(texts))], n_subjects=2, n_neuroids=3)
    table = pd.DataFrame(recordings.responses, columns=[f"v{j}" for j in range(recordings.n_neuroids)])
    table.insert(0, "text", recordings.texts)
    table.insert(1, "passage", recordings.groups)
    table.to_csv(tmp_path / "recordings.csv", index=False)
    studies = {
        "localize": localize(files, settings=settings),
        "language-network": LanguageNetworkConfig(data=files["data"], sizes="10", n_controls=1, settings=settings,
                                                  benchmarks="blimp;syntaxgym;perplexity",
                                                  recordings=str(tmp_path / "recordings.csv"),
                                                  align_options={"folds": 2, "ceiling": "none", "layers": None}),
    }
    for name, config in studies.items():
        lm = fresh_lm()
        with watch_forward(lm.model) as spy:
            run(config, tmp_path / name, lm=lm)
        assert_bos_policy(spy, policy, bos_id)
    lesion = LesionConfig(units=str(tmp_path / "localize"), benchmarks="blimp;syntaxgym;perplexity",
                          data=files["data"], n_controls=1, settings=settings.replace(bos=None))
    align = AlignConfig(recordings=str(tmp_path / "recordings.csv"), units=str(tmp_path / "localize"), folds=2,
                        n_controls=1, ceiling="none", settings=settings)
    for name, config in {"lesion": lesion, "align": align}.items():
        lm = fresh_lm()
        with watch_forward(lm.model) as spy:
            run(config, tmp_path / name, lm=lm)
        assert_bos_policy(spy, policy, bos_id)  # lesion: the localizer's policy, since --bos was not given


# ------------------------------------------------------------------------------------- fast start
def test_import_and_help_load_no_heavy_module():
    script = ("import sys, neuroloc; from neuroloc.cli import app; from click.testing import CliRunner; "
              "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
              "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
