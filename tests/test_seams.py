"""Registries (benchmarks, control kinds, stimulus sets), benchmarks loading once per study, verbatim
error messages, enforced layers, and OPT's flattened MLP under batching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroloc import Localizer, NeurolocError, StimulusSet, UnitSet, wrap_model
from neuroloc.evaluate import blimp as blimp_module, syntaxgym as syntaxgym_module
from neuroloc.evaluate.benchmark import Benchmark, BenchmarkOptions
from neuroloc.evaluate.controls import CONTROLS, ControlData, draw_control, random_matched, register_control
from neuroloc.evaluate.registry import BENCHMARKS, build_benchmarks, register_benchmark
from neuroloc.settings import RunSettings
from neuroloc.pipelines.lesion import run_lesion_study
from neuroloc.stimuli.registry import STIMULI, get_stimuli, register_stimuli
from tests.tiny import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "the dog jumps over the fox", "what is the answer", "the lazy dog looked elsewhere",
             "she didn't know that the keys were there"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp holily ree ne os", "rere ofuke sleoming pome", "shourn ne holily ofuke rere"]


def write_data(root: Path) -> Path:
    """A miniature ../shared/data: two BLiMP phenomena, two SyntaxGym suites, a CoNLL-U file."""
    (root / "blimp").mkdir(parents=True)
    for uid, pairs in {"agreement": [("the dog jumps", "the dog jump"), ("she looked", "she look")],
                       "keys": [("the keys were", "the keys was"), ("the fox jumps", "the fox jump")]}.items():
        (root / "blimp" / f"{uid}.jsonl").write_text("".join(
            json.dumps({"sentence_good": g, "sentence_bad": b, "UID": uid}) + "\n" for g, b in pairs))
    (root / "syntaxgym").mkdir()
    for name, verbs in {"number": ("were", "was"), "tense": ("jumps", "jump")}.items():
        conditions = {"good": ["The", "keys", verbs[0], "lost", "."], "bad": ["The", "keys", verbs[1], "lost", "."]}
        items = [{"item_number": n, "conditions": [
            {"condition_name": c, "regions": [{"region_number": i + 1, "content": w} for i, w in enumerate(words)]}
            for c, words in conditions.items()]} for n in (1, 2)]
        (root / "syntaxgym" / f"{name}.json").write_text(json.dumps({
            "meta": {"name": name, "metric": "sum"}, "items": items,
            "predictions": [{"type": "formula", "formula": "(3;%good%) < (3;%bad%)"}]}))
    (root / "ud").mkdir()
    (root / "ud" / "en_ewt-ud-dev.conllu").write_text(
        "# sent_id = a-1\n# text = the dog jumps\n1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
        "2\tdog\tdog\tNOUN\tNN\t_\t3\tnsubj\t_\t_\n3\tjumps\tjump\tVERB\tVBZ\t_\t0\troot\t_\t_\n\n"
        "# sent_id = a-2\n# text = she looked\n1\tshe\tshe\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"
        "2\tlooked\tlook\tVERB\tVBD\t_\t0\troot\t_\t_\n\n")
    return root


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def stimuli():
    return StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple("S" * 6 + "N" * 6), ("S", "N"))


# -- benchmarks load once ----------------------------------------------------------------------------
def test_benchmarks_read_their_files_once_per_study(lm, stimuli, tmp_path, monkeypatch):
    data = write_data(tmp_path / "data")
    reads = {"blimp": 0, "syntaxgym": 0}
    real_dir, real_suite = blimp_module._load_dir, syntaxgym_module.load_suite

    def count_dir(*args, **kwargs):
        reads["blimp"] += 1
        return real_dir(*args, **kwargs)

    def count_suite(*args, **kwargs):
        reads["syntaxgym"] += 1
        return real_suite(*args, **kwargs)

    monkeypatch.setattr(blimp_module, "_load_dir", count_dir)
    monkeypatch.setattr(syntaxgym_module, "load_suite", count_suite)
    benchmarks = build_benchmarks(["blimp", "syntaxgym", "perplexity"], settings=RunSettings(batch_size=4),
                                  data_dir=data)
    localizer = Localizer("residual", percent=10).fit(lm, stimuli)
    results = run_lesion_study(lm, localizer.units_, benchmarks, tmp_path / "out", localizer=localizer,
                               percents=[5, 10], n_controls=2, control_kinds=["random"], progress=False)
    assert results.condition.nunique() == 3 and len(results.groupby(["condition", "seed", "percent"], dropna=False)) == 7
    assert reads == {"blimp": 1, "syntaxgym": 2}  # one BLiMP folder, two suite files: each read once
    # the loaded data gives what a direct evaluation of the files gives
    intact = results[results.condition == "intact"].set_index(["benchmark", "subset", "metric"]).value
    direct = blimp_module.evaluate_blimp(lm.model, lm.tokenizer, data / "blimp", batch_size=4, bos="prepend")
    for subset, value in zip(direct.subset, direct.value):
        assert intact["blimp", subset, "accuracy"] == pytest.approx(value)


def test_a_new_benchmark_is_one_function_and_one_registration(lm, tmp_path):
    def word_count(options: BenchmarkOptions) -> Benchmark:
        texts = Path(options.path).read_text().split()
        return Benchmark("words", str(options.path), lambda model, tokenizer: pd.DataFrame(
            [("words", "all", "count", float(len(texts)))], columns=["benchmark", "subset", "metric", "value"]))

    (tmp_path / "words.txt").write_text("a b c")
    register_benchmark("words", word_count)
    try:
        built, = build_benchmarks(["words"], settings=RunSettings(), paths={"words": tmp_path / "words.txt"})
        assert built.run(lm.model, lm.tokenizer).value.item() == 3.0
    finally:
        BENCHMARKS.pop("words")
    with pytest.raises(NeurolocError, match="unknown benchmark.*blimp, syntaxgym, perplexity"):
        build_benchmarks(["words"], settings=RunSettings())


# -- control kinds and stimulus sets ---------------------------------------------------------------
def test_control_registry(lm):
    target = UnitSet.from_names(["layers.0.residual[1]", "layers.1.residual[4]"], lm.layout)
    assert draw_control("random", target, 3) == random_matched(target, 3)
    with pytest.raises(NeurolocError, match="magnitude-matched controls need"):
        draw_control("magnitude", target, 0)
    magnitudes = np.arange(len(target.flat_mask()), dtype=float) + 1
    drawn = draw_control("magnitude", target, 0, ControlData(magnitudes=magnitudes))
    assert drawn.counts() == target.counts() and not (drawn.flat_mask() & target.flat_mask()).any()

    def least_selective(target, seed, data):
        order = np.argsort(data.scores, kind="stable")
        mask = np.zeros(len(data.scores), dtype=bool)
        mask[order[:len(target)]] = True
        return UnitSet.from_flat(mask, target.sites, target.widths, model=target.model)

    register_control("least", least_selective)
    try:
        scores = -np.arange(len(target.flat_mask()), dtype=float)
        assert len(draw_control("least", target, 0, ControlData(scores=scores))) == 2
    finally:
        CONTROLS.pop("least")
    with pytest.raises(NeurolocError, match="unknown control kind 'shuffled'; choose from random, magnitude"):
        draw_control("shuffled", target, 0)


def test_stimulus_registry():
    assert {"language", "md", "tom"} <= set(STIMULI)
    register_stimuli("toy", lambda path, seed: StimulusSet("toy", ("a b", "c d", "e f", "g h"), tuple("SSNN"),
                                                           ("S", "N")))
    try:
        assert get_stimuli("toy").name == "toy"
        assert get_stimuli("toy", contrast=("N", "S")).contrast == ("N", "S")
    finally:
        STIMULI.pop("toy")


# -- errors are printed verbatim -------------------------------------------------------------------
def test_errors_keep_their_brackets(capsys):
    from neuroloc.cli import _fail

    message = "reading BLiMP needs `datasets`: pip install 'neuroloc[datasets]'; unit layers.3.mlp[1407] [bold]x[/]"
    with pytest.raises(SystemExit):
        _fail(message)
    err = capsys.readouterr().err
    assert "error:" in err and message in " ".join(err.split())


def test_cli_error_about_the_datasets_extra_keeps_its_brackets(tmp_path, monkeypatch, lm, stimuli):
    from click.testing import CliRunner

    from neuroloc.cli import app

    Localizer("residual", percent=10).fit(lm, stimuli).save(tmp_path / "loc")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    result = CliRunner().invoke(app, ["lesion", "--units", str(tmp_path / "loc"), "--benchmarks", "blimp",
                                      "--blimp", "hf", "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert "pip install 'neuroloc[datasets]'" in " ".join(result.output.split())


# -- layers ------------------------------------------------------------------------------------------
def test_import_layers_are_respected():
    """`lint-imports` checks the contracts in pyproject.toml ([tool.importlinter])."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- OPT flattens tokens before its MLP --------------------------------------------------------------
def test_opt_mlp_localizer_is_batch_size_invariant(stimuli):
    lm = wrap_model(tiny_model("opt"), tiny_tokenizer())
    one = Localizer("mlp", percent=10, batch_size=1).fit(lm, stimuli)
    many = Localizer("mlp", percent=10, batch_size=5).fit(lm, stimuli)
    np.testing.assert_allclose(many.t_, one.t_, rtol=1e-4, atol=1e-4)
    assert many.units_ == one.units_
    for name, value in one.means_.items():
        np.testing.assert_allclose(np.asarray(many.means_[name]), np.asarray(value), rtol=1e-4, atol=1e-6)
