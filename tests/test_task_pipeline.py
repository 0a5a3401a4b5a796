"""The task pipeline and CLI end to end on a tiny model: every output, the effect matrix's structure
(random units of the same count per layer for every row), and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from neuroloc.errors import NeurolocError
from neuroloc.evaluate.answers import answer_accuracy, score_answers
from neuroloc.lesion import lesion
from neuroloc.models.loading import wrap_model
from neuroloc.pipelines.task import run_task
from neuroloc.stimuli.prompts import PromptSet, load_prompts
from neuroloc.units import LabeledUnits
from tests.tiny import tiny_model, tiny_tokenizer

FACTS = {
    "capital": [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
                ("Peru", "Lima"), ("Chile", "Santiago")],
    "continent": [("France", "Europe"), ("Japan", "Asia"), ("Peru", "South America"), ("Kenya", "Africa"),
                  ("Italy", "Europe"), ("Chile", "South America")],
    "sum": [("1 + 2", "3"), ("2 + 2", "4"), ("15 + 4", "19"), ("3 + 4", "7"), ("5 + 1", "6"), ("2 + 7", "9")],
}
TEMPLATES = {"capital": "The capital of {} is", "continent": "{} is a country in", "sum": "{} ="}


def write_facts(path, with_split: bool = True) -> None:
    rows = []
    for label, facts in FACTS.items():
        for i, (subject, answer) in enumerate(facts):
            row = {"prompt": TEMPLATES[label].format(subject), "answer": answer, "label": label}
            if with_split:
                row["split"] = "train" if i % 2 == 0 else "test"
            rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.mark.parametrize("score", ["ap", "gradxact"])
def test_run_task_writes_everything(lm, tmp_path, score) -> None:
    write_facts(tmp_path / "facts.jsonl")
    items = load_prompts(tmp_path / "facts.jsonl")
    control = PromptSet(["Answer:"] * len(items), items.answers, items.labels, items.splits)
    out = tmp_path / "run"
    result = run_task(lm, items, out, score=score, k=5, modes=["scale:0", "value"], n_random=2, dose_ks=[2, 5],
                      control=control if score == "gradxact" else None, z0=0.5 if score == "gradxact" else None,
                      guard_texts=["The quick brown fox jumps over the lazy dog."] * 3, batch_size=4)
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
        direct = answer_accuracy(score_answers(lm, test, batch_size=3)).set_index("label")
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
    assert manifest["parameters"]["score"] == score and manifest["data"]["n_test"] == 9
    assert result.summary["n_units"] == {l: len(u) for l, u in units.items()}
    guard = pd.read_csv(out / "guard.csv")
    assert set(guard.condition) == {"intact", "target", "random"}


def test_value_mode_sets_units_to_the_label_median(lm, tmp_path) -> None:
    """`value` replaces each unit by its median pooled activation on the label's identification items."""
    from neuroloc.pipelines.task import _label_values
    from neuroloc.studies.tasks.scores import prompt_features

    write_facts(tmp_path / "f.jsonl")
    ident = load_prompts(tmp_path / "f.jsonl").split("identification")
    sites = lm.layout.sites("mlp")
    widths = [lm.layout.width("mlp")] * len(sites)
    features = prompt_features(lm, ident.prompts, sites, batch_size=4)
    values = _label_values(features, ident, sites, widths)
    rows = ident.indices("sum")
    assert torch.allclose(values["sum"][sites[1].name], torch.from_numpy(np.median(features[rows][:, 48:], 0)))


def test_cli_task(tmp_path) -> None:
    from neuroloc import cli

    write_facts(tmp_path / "facts.jsonl", with_split=False)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["task", "--data", str(tmp_path / "facts.jsonl"), "--model", "nonexistent-model",
                                     "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2  # the model cannot load: one clear error line, no traceback
    result = runner.invoke(cli.app, ["task", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_errors(lm, tmp_path) -> None:
    write_facts(tmp_path / "facts.jsonl")
    items = load_prompts(tmp_path / "facts.jsonl")
    with pytest.raises(NeurolocError, match="unknown task score"):
        run_task(lm, items, tmp_path / "o", score="lape")
    with pytest.raises(NeurolocError, match="label 'sum' has 1 prompts"):
        run_task(lm, items.subset([i for i in range(len(items)) if items.labels[i] != "sum" or i in (12, 13)]),
                 tmp_path / "o")
    with pytest.raises(NeurolocError, match="attention heads"):
        run_task(lm, items, tmp_path / "o", modes=["value"], site="attn")
    assert not (tmp_path / "o").exists()


def test_contrast_with_bottom_k_selects_both_ends(lm, tmp_path) -> None:
    """`contrast` + `bottom_k`: each label's k largest one-vs-rest Welch t (scipy) plus its bottom_k
    smallest, measured on the identification items' last-token activations."""
    from scipy import stats

    from neuroloc.studies.tasks.scores import prompt_features

    write_facts(tmp_path / "facts.jsonl")
    items = load_prompts(tmp_path / "facts.jsonl")
    result = run_task(lm, items, tmp_path / "run", score="contrast", k=3, bottom_k=2, modes=["scale:2"],
                      n_random=1, dose_ks=[], batch_size=8)
    ident = items.split("identification")
    x = prompt_features(lm, ident.prompts, lm.layout.sites("mlp"), batch_size=8).astype(np.float64)
    for label in FACTS:
        y = np.array(ident.labels) == label
        t = stats.ttest_ind(x[y], x[~y], equal_var=False).statistic
        expected = set(np.argsort(-t, kind="stable")[:3]) | set(np.argsort(t, kind="stable")[:2])
        assert set(result.units[label].flat_indices().tolist()) == expected
    assert pd.read_csv(tmp_path / "run" / "dose_response.csv").empty


def test_ap_selects_by_average_precision_then_welch_t(lm, tmp_path) -> None:
    """`ap`: each label's k units by sklearn's average precision of the last-token activation, ties
    (AP = 1 is common when a label has its own template) broken by scipy's Welch t."""
    from scipy import stats
    from sklearn.metrics import average_precision_score

    from neuroloc.studies.tasks.scores import prompt_features

    write_facts(tmp_path / "facts.jsonl")
    items = load_prompts(tmp_path / "facts.jsonl")
    result = run_task(lm, items, tmp_path / "run", score="ap", k=4, modes=["scale:0"], n_random=1, dose_ks=[],
                      batch_size=8)
    ident = items.split("identification")
    x = prompt_features(lm, ident.prompts, lm.layout.sites("mlp"), batch_size=8).astype(np.float64)
    for label in FACTS:
        y = np.array(ident.labels) == label
        ap = np.array([average_precision_score(y, x[:, u]) for u in range(x.shape[1])])
        t = stats.ttest_ind(x[y], x[~y], equal_var=False).statistic
        expected = sorted(range(x.shape[1]), key=lambda u: (-round(ap[u], 12), -t[u], u))[:4]
        assert sorted(result.units[label].flat_indices().tolist()) == sorted(expected)
