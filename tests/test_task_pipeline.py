"""The task study (`TaskConfig` through the runner, and `neuroloc task`) end to end on a tiny model: every
output, the effect matrix's structure (random units of the same count per layer for every row), selection
by the registered scores against scikit-learn and scipy, the run settings' BOS policy in every forward pass,
a benchmark registered here as the guard, `neuroloc rerun`, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from neuroloc.errors import NeurolocError
from neuroloc.evaluate.answers import answer_accuracy, score_answers
from neuroloc.evaluate.benchmark import Benchmark
from neuroloc.evaluate.registry import BENCHMARKS, register_benchmark
from neuroloc.evaluate.scoring import token_logprobs
from neuroloc.lesion import lesion
from neuroloc.models.loading import wrap_model
from neuroloc.pipelines.task import TaskConfig, _label_values, run_task
from neuroloc.record.collect import collect
from neuroloc.record.recorder import Recorder
from neuroloc.runner import RunOptions, run
from neuroloc.settings import RunSettings
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.prompts import PromptSet, load_prompts
from neuroloc.units import LabeledUnits
from tests.bos_spy import spy_bos
from tests.test_task_select import direct_features
from tests.tiny import tiny_model, tiny_tokenizer

FACTS = {
    "capital": [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
                ("Peru", "Lima"), ("Chile", "Santiago")],
    "continent": [("France", "Europe"), ("Japan", "Asia"), ("Peru", "South America"), ("Kenya", "Africa"),
                  ("Italy", "Europe"), ("Chile", "South America")],
    "sum": [("1 + 2", "3"), ("2 + 2", "4"), ("15 + 4", "19"), ("3 + 4", "7"), ("5 + 1", "6"), ("2 + 7", "9")],
}
TEMPLATES = {"capital": "The capital of {} is", "continent": "{} is a country in", "sum": "{} ="}
FAST = RunSettings(batch_size=4, progress=False)


def write_facts(path, with_split: bool = True) -> None:
    rows = []
    for label, facts in FACTS.items():
        for i, (subject, answer) in enumerate(facts):
            row = {"prompt": TEMPLATES[label].format(subject), "answer": answer, "label": label}
            if with_split:
                row["split"] = "train" if i % 2 == 0 else "test"
            rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def write_control(path, items: PromptSet) -> None:
    path.write_text("".join(json.dumps({"prompt": "Answer:", "answer": a, "label": l, "split": s}) + "\n"
                            for a, l, s in zip(items.answers, items.labels, items.splits)))


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture
def facts(tmp_path):
    write_facts(tmp_path / "facts.jsonl")
    return tmp_path / "facts.jsonl"


def run_study(lm, out, **fields):
    """The task study with its inputs read by the config (files), on the in-memory model."""
    config = TaskConfig(**{"settings": FAST, "model": "tiny", **fields})
    return run(config, out, lm=lm, options=RunOptions(overwrite=True))


@pytest.mark.parametrize("score", ["ap", "gradxact"])
def test_task_writes_everything(lm, tmp_path, facts, score) -> None:
    items = load_prompts(facts)
    write_control(tmp_path / "control.jsonl", items)
    (tmp_path / "guard.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 3)
    out = tmp_path / "run"
    result = run_study(lm, out, items=str(facts), score=score, k=5, modes=("scale:0", "value"), n_controls=2,
                       dose=(2, 5), control=str(tmp_path / "control.jsonl") if score == "gradxact" else None,
                       z0=0.5 if score == "gradxact" else None,
                       benchmarks=f"perplexity:path={tmp_path / 'guard.txt'}")
    for name in ("units/units.safetensors", "scores.parquet", "intact.csv", "answers.csv", "effects.csv",
                 "effect_summary.csv", "dose_response.csv", "guard.csv", "accuracy.png", "effects_scale0.png",
                 "effects_value.png", "dose_response.png", "guard.png", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    units = LabeledUnits.load(out / "units")
    assert units.labels == list(FACTS) and all(0 < len(u) <= 5 for _, u in units.items())
    effects = pd.read_csv(out / "effects.csv")
    # every (intervened, mode) row block has one target and two random conditions over every label
    counts = effects.groupby(["intervened", "mode", "condition"]).evaluated.nunique()
    assert (counts == 3).all() and len(effects) == 3 * 2 * 3 * 3
    assert set(effects.seed[effects.condition == "random"]) == {0, 1}
    # a target row equals scoring the test items under that lesion directly
    test = items.split("test")
    with lesion(lm, units["sum"], "scale:0"):
        direct = answer_accuracy(score_answers(lm, test, batch_size=3, bos="prepend")).set_index("label")
    row = effects[(effects.intervened == "sum") & (effects["mode"] == "scale:0") & (effects.condition == "target")]
    for _, r in row.iterrows():
        assert r.accuracy == pytest.approx(direct.loc[r.evaluated, "accuracy"])
        assert r.mean_logprob == pytest.approx(direct.loc[r.evaluated, "mean_logprob"], rel=1e-5)
    intact = pd.read_csv(out / "intact.csv").set_index("label")
    assert np.allclose(r.delta_logprob, r.mean_logprob - intact.loc[r.evaluated, "mean_logprob"])
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 3 * lm.layout.n_layers * lm.layout.width("mlp")
    assert scores.groupby("label").selected.sum().to_dict() == {l: len(u) for l, u in units.items()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["score"] == {"ap": "average_precision"}.get(score, score)
    assert manifest["data"]["n_test"] == 9 and manifest["dose_ks"] == [2, 5]
    assert result.summary["n_units"] == {l: len(u) for l, u in units.items()}
    guard = pd.read_csv(out / "guard.csv")
    assert set(guard.condition) == {"intact", "target", "random"} and set(guard.benchmark) == {"perplexity"}


def test_value_mode_sets_units_to_the_label_median(lm, facts) -> None:
    """`value` replaces each unit by its median pooled activation on the label's identification items."""
    ident = load_prompts(facts).split("identification")
    sites = lm.layout.sites("mlp")
    stats = collect(Recorder(lm, sites, batch_size=4, bos="prepend"),
                    StimulusSet("f", tuple(ident.prompts), tuple(ident.labels)), kinds=("rows",))
    values = _label_values(stats, ident.label_names, sites)
    features = direct_features(lm, ident.prompts, sites)
    rows = ident.indices("sum")
    second = features[rows][:, lm.layout.width("mlp"):]  # the second site's units
    assert torch.allclose(values["sum"][sites[1].name], torch.from_numpy(np.median(second, 0)), atol=1e-5)


def test_cli_task(tmp_path) -> None:
    from neuroloc import cli

    write_facts(tmp_path / "facts.jsonl", with_split=False)
    runner = CliRunner()
    for flag in ("--items", "--data"):  # --data FILE: the old name of --items (deprecated)
        result = runner.invoke(cli.app, ["task", flag, str(tmp_path / "facts.jsonl"), "--model", "nonexistent-model",
                                         "--out", str(tmp_path / "o"), "--quiet"])
        assert result.exit_code == 2  # the model cannot load: one clear error line, no traceback
        result = runner.invoke(cli.app, ["task", flag, str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and "does not exist" in result.output


def test_errors(lm, tmp_path, facts) -> None:
    with pytest.raises(NeurolocError, match="`neuroloc task` takes a score"):
        run_study(lm, tmp_path / "o", items=str(facts), score="lape")
    with pytest.raises(NeurolocError, match="takes no option z0"):
        run_study(lm, tmp_path / "o", items=str(facts), score="ap", z0=1.0)
    with pytest.raises(NeurolocError, match="--max-tokens"):  # a setting the study cannot honour is refused
        run_study(lm, tmp_path / "o", items=str(facts), settings=RunSettings(max_tokens=8))
    items = load_prompts(facts)
    few = tmp_path / "few.jsonl"
    few.write_text("".join(line + "\n" for i, line in enumerate(facts.read_text().splitlines())
                           if items.labels[i] != "sum" or i in (12, 13)))
    with pytest.raises(NeurolocError, match="label 'sum' has 1 prompts"):
        run_study(lm, tmp_path / "o", items=str(few))
    with pytest.raises(NeurolocError, match="attention heads"):
        run_study(lm, tmp_path / "o", items=str(facts), modes=("value",), site=("attn",))
    assert not (tmp_path / "o").exists()


def test_contrast_with_bottom_k_selects_both_ends(lm, tmp_path, facts) -> None:
    """`contrast` + `bottom_k`: each label's k largest one-vs-rest Welch t (scipy) plus its bottom_k
    smallest, measured on the identification items' last-token activations."""
    from scipy import stats

    result = run_study(lm, tmp_path / "run", items=str(facts), score="contrast", k=3, bottom_k=2,
                       modes=("scale:2",), n_controls=1, dose=())
    ident = load_prompts(facts).split("identification")
    x = direct_features(lm, ident.prompts, lm.layout.sites("mlp")).astype(np.float64)
    for label in FACTS:
        y = np.array(ident.labels) == label
        t = stats.ttest_ind(x[y], x[~y], equal_var=False).statistic
        expected = set(np.argsort(-t, kind="stable")[:3]) | set(np.argsort(t, kind="stable")[:2])
        assert set(result.units[label].flat_indices().tolist()) == expected
    assert pd.read_csv(tmp_path / "run" / "dose_response.csv").empty


def test_ap_selects_by_average_precision_then_welch_t(lm, tmp_path, facts) -> None:
    """`ap`: each label's k units by sklearn's average precision of the last-token activation, ties
    (AP = 1 is common when a label has its own template) broken by scipy's Welch t."""
    from scipy import stats
    from sklearn.metrics import average_precision_score

    result = run_study(lm, tmp_path / "run", items=str(facts), score="ap", k=4, modes=("scale:0",), n_controls=1,
                       dose=())
    ident = load_prompts(facts).split("identification")
    x = direct_features(lm, ident.prompts, lm.layout.sites("mlp")).astype(np.float64)
    for label in FACTS:
        y = np.array(ident.labels) == label
        ap = np.array([average_precision_score(y, x[:, u]) for u in range(x.shape[1])])
        t = stats.ttest_ind(x[y], x[~y], equal_var=False).statistic
        expected = sorted(range(x.shape[1]), key=lambda u: (-round(ap[u], 12), -t[u], u))[:4]
        assert sorted(result.units[label].flat_indices().tolist()) == sorted(expected)


@pytest.mark.parametrize("score", ["ap", "gradxact"])
def test_a_bos_policy_reaches_every_forward_pass(lm, tmp_path, facts, score, monkeypatch) -> None:
    """With --bos none, the intact answers, the recording (or attribution), the effect matrix, the dose–response
    and the guard all encode without a BOS: every call of the one encoding path says so."""
    (tmp_path / "guard.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 2)
    calls = spy_bos(monkeypatch)
    run_study(lm, tmp_path / "run", items=str(facts), score=score, k=2, modes=("value",), n_controls=1,
              dose=(1,), benchmarks=f"perplexity:path={tmp_path / 'guard.txt'}",
              settings=RunSettings(bos="none", batch_size=9, progress=False))
    # intact + (1 target + 1 random) × 3 labels + dose (2 per label) scorings, 2 encodings each; the guard's
    # perplexity 1 + 6; and the recording / attribution
    assert len(calls) >= 2 * 13 + 7 + 1 and set(calls) == {"none"}, sorted(set(calls))


@pytest.fixture
def echo_benchmark():
    """A benchmark registered by this test module: mean log-probability of a few fixed texts."""
    texts = ["Paris is the capital of France.", "Two and two make four."]

    def build(options):
        chosen = texts[:options.limit] if options.limit else texts
        return Benchmark("echo", "test texts", lambda model, tokenizer: pd.DataFrame(
            [("echo", "all", "mean_logprob", float(np.mean([s.total for s in token_logprobs(
                model, tokenizer, chosen, batch_size=options.batch_size, bos=options.bos)])))],
            columns=["benchmark", "subset", "metric", "value"]))

    register_benchmark("echo", build, description="test texts' mean log-probability")
    yield texts
    BENCHMARKS.pop("echo")


def test_a_benchmark_registered_elsewhere_is_the_guard(lm, tmp_path, facts, echo_benchmark, monkeypatch) -> None:
    calls = spy_bos(monkeypatch)
    result = run_study(lm, tmp_path / "run", items=str(facts), k=3, modes=("scale:0",), n_controls=1, dose=(),
                       benchmarks="echo:limit=1", settings=RunSettings(bos="tokenizer", batch_size=4, progress=False))
    guard = result.guard
    intact = guard[guard.condition == "intact"].value.item()
    expected = token_logprobs(lm.model, lm.tokenizer, echo_benchmark[:1], batch_size=1, bos="tokenizer")[0].total
    assert intact == pytest.approx(expected, rel=1e-5)
    with lesion(lm, result.units["sum"], "scale:0"):
        lesioned = token_logprobs(lm.model, lm.tokenizer, echo_benchmark[:1], batch_size=1, bos="tokenizer")[0].total
    target = guard[(guard.intervened == "sum") & (guard.condition == "target")].value.item()
    assert target == pytest.approx(lesioned, rel=1e-5)
    assert set(calls) == {"tokenizer"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_cli_task_and_rerun_reproduce_the_run(model_dir, tmp_path, facts, echo_benchmark) -> None:
    """`neuroloc task` with a registered benchmark as the guard (no CLI change), then `neuroloc rerun
    OUT/manifest.json --out NEW`: the same tables, scores and units."""
    from neuroloc import cli

    runner = CliRunner()
    result = runner.invoke(cli.app, ["task", "--model", str(model_dir), "--items", str(facts), "--score", "ap",
                                     "--k", "3", "--mode", "scale:0", "--controls", "1", "--dose", "2", "--benchmarks",
                                     "echo", "--bos", "none", "--dtype", "float32", "--batch-size", "5",
                                     "--out", str(tmp_path / "a"), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["parameters"]["settings"]["bos"] == "none" and manifest["parameters"]["n_controls"] == 1
    result = runner.invoke(cli.app, ["rerun", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b"),
                                     "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("intact.csv", "answers.csv", "effects.csv", "effect_summary.csv", "dose_response.csv", "guard.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / name), pd.read_csv(tmp_path / "b" / name))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "scores.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "scores.parquet"))
    assert LabeledUnits.load(tmp_path / "a" / "units").sets == LabeledUnits.load(tmp_path / "b" / "units").sets
    again = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert again["parameters"] == manifest["parameters"]


def test_deprecated_run_task_still_runs(lm, tmp_path, facts) -> None:
    items = load_prompts(facts)
    with pytest.warns(DeprecationWarning):
        old = run_task(lm, items, tmp_path / "old", score="ap", k=3, modes=["scale:0"], n_random=1, dose_ks=[],
                       batch_size=4, guard_texts=["The quick brown fox."])
    new = run_study(lm, tmp_path / "new", items=str(facts), score="ap", k=3, modes=("scale:0",), n_controls=1,
                    dose=())
    assert old.units.sets == new.units.sets
    pd.testing.assert_frame_equal(old.effects, new.effects)
    assert set(old.guard.benchmark) == {"perplexity"}
