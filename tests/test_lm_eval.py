"""The lm-evaluation-harness bridge on a tiny model: the shipped offline BLiMP tasks give our own BLiMP
numbers (intact and lesioned), the perplexity task gives a hand computation from our scorer, and
`neuroloc lesion --lm-eval` puts harness rows into the lesion study with its controls."""

import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import NeurolocError, UnitSet, evaluate_blimp, lesion, lm_eval, token_logprobs
from neuroloc.evaluate.lm_eval import blimp_tasks, evaluate_lm_eval, lm_eval_benchmark, perplexity_tasks, task_configs
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

pytest.importorskip("lm_eval")  # in the test extra (neuroloc[lm-eval]); skipped only where it is not installed
BLIMP = Path(__file__).parents[1].parent / "shared" / "data" / "blimp"
PHENOMENA = ["anaphor_gender_agreement", "determiner_noun_agreement_1", "regular_plural_subject_verb_agreement_1"]
LIMIT = 15


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def blimp_dir(tmp_path_factory):
    """The first LIMIT pairs of three phenomena (a temporary copy: the harness reads whole files)."""
    if not BLIMP.is_dir():
        pytest.skip("shared BLiMP data absent")
    directory = tmp_path_factory.mktemp("blimp")
    for uid in PHENOMENA:
        lines = (BLIMP / f"{uid}.jsonl").read_text().splitlines()[:LIMIT]
        (directory / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def _by_phenomenon(frame: pd.DataFrame) -> dict[str, float]:
    rows = frame[frame.benchmark.isin(["blimp", "lm-eval:blimp"]) & frame.metric.isin(["acc", "accuracy"])]
    return dict(zip(rows.subset, rows.value))


def test_bridge_gives_our_blimp_numbers(lm, blimp_dir):
    ours = evaluate_blimp(lm.model, lm.tokenizer, BLIMP, limit=LIMIT, phenomena=PHENOMENA, batch_size=8, bos="prepend")
    theirs = evaluate_lm_eval(lm.model, lm.tokenizer, blimp_tasks(BLIMP, PHENOMENA), batch_size=8, limit=LIMIT)
    expected = _by_phenomenon(ours)
    got = _by_phenomenon(theirs)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    assert 0 < expected["overall"] < 1  # a random model: neither all right nor all wrong


def test_bridge_on_a_lesioned_model_equals_our_lesioned_benchmarks(lm, blimp_dir, tmp_path):
    units = UnitSet.from_names([f"layers.{layer}.mlp[{i}]" for layer in (0, 1) for i in range(0, 48, 2)],
                               lm.layout)
    texts = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer"]
    (tmp_path / "en.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    with lesion(lm, units, "zero"):
        ours = evaluate_blimp(lm.model, lm.tokenizer, blimp_dir, batch_size=32, bos="prepend")
        total = sum(score.total for score in token_logprobs(lm.model, lm.tokenizer, texts, batch_size=32, bos="prepend"))
    results = lm_eval(lm, [f"blimp={blimp_dir}", f"perplexity:en={tmp_path / 'en.jsonl'}"], units=units,
                      mode="zero", n_controls=2)
    target = _by_phenomenon(results[results.condition == "target"])
    assert target == pytest.approx(_by_phenomenon(ours), abs=1e-12)
    assert set(results.condition) == {"intact", "target", "random"}
    assert len(results[results.condition == "random"].seed.unique()) == 2
    ppl = results[results.metric == "word_perplexity"].set_index(["condition", "seed"]).value
    words = sum(len(t.split()) for t in texts)
    assert ppl["target", 0] == pytest.approx(math.exp(-total / words), rel=1e-5)  # the lesion reached the harness
    assert ppl["intact", 0] != pytest.approx(ppl["target", 0], rel=1e-4)  # a random model moves a little


def test_perplexity_task_matches_our_scorer(lm, tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "what is the answer to the question"]
    path = tmp_path / "en.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    frame = evaluate_lm_eval(lm.model, lm.tokenizer, perplexity_tasks({"en": path}), batch_size=4)
    got = frame.set_index("metric").value
    total = sum(score.total for score in token_logprobs(lm.model, lm.tokenizer, texts, batch_size=32, bos="prepend"))
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert got["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(-total / n_bytes / math.log(2), rel=1e-5)


def test_task_specifications(tmp_path, blimp_dir):
    (tmp_path / "mine.yaml").write_text("task: mine\ndataset_path: json\n")
    tasks = task_configs(f"blimp={blimp_dir},perplexity:de={tmp_path / 'mine.yaml'},{tmp_path / 'mine.yaml'},hellaswag")
    names = [t if isinstance(t, str) else t["task"] for t in tasks]
    assert names[-3:] == ["neuroloc_perplexity_de", "mine", "hellaswag"]
    assert len([n for n in names if n.startswith("neuroloc_blimp_")]) == len(PHENOMENA)
    with pytest.raises(NeurolocError, match="not found"):
        task_configs(f"perplexity:de={tmp_path / 'absent.jsonl'}")
    with pytest.raises(NeurolocError, match="no BLiMP"):
        task_configs(f"blimp={tmp_path}")
    assert lm_eval_benchmark(f"blimp={blimp_dir}", batch_size=32).name == "lm-eval"


def test_lesion_cli_runs_harness_tasks_with_controls(tmp_path, blimp_dir):
    from neuroloc.cli import app

    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    UnitSet.from_names(["layers.1.mlp[3]", "layers.1.mlp[7]"], lm.layout).save(tmp_path / "units")
    one = tmp_path / "blimp"
    one.mkdir()
    (one / f"{PHENOMENA[0]}.jsonl").write_text((blimp_dir / f"{PHENOMENA[0]}.jsonl").read_text())  # 15 pairs
    result = CliRunner().invoke(app, ["lesion", "--units", str(tmp_path / "units"), "--model", str(model_dir),
                                      "--benchmarks", "", "--lm-eval", f"blimp={one}", "--controls", "2",
                                      "--limit", "10", "--dtype", "float32", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(results.benchmark) == {"lm-eval:blimp"}
    assert set(results.condition) == {"intact", "target", "random"}
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert "random_mean" in summary and (summary.subset == "overall").any()


def test_every_rank_of_a_launch_gets_its_own_harness_results(lm, blimp_dir, monkeypatch):
    """Under torchrun each rank evaluates its own lesion conditions whole: the harness, which keeps results
    for LOCAL_RANK 0 only, must run as the only process on every rank (and LOCAL_RANK is left as it was)."""
    tasks = blimp_tasks(blimp_dir, PHENOMENA[:1])
    alone = evaluate_lm_eval(lm.model, lm.tokenizer, tasks, batch_size=8, limit=5)
    monkeypatch.setenv("LOCAL_RANK", "1")
    second_rank = evaluate_lm_eval(lm.model, lm.tokenizer, tasks, batch_size=8, limit=5)
    pd.testing.assert_frame_equal(second_rank, alone)
    assert os.environ["LOCAL_RANK"] == "1"


def test_positions_cannot_reach_harness_tasks(lm, blimp_dir, tmp_path):
    from neuroloc import run_lesion_study

    units = UnitSet.from_names(["layers.1.mlp[3]"], lm.layout)
    with pytest.raises(NeurolocError, match="--positions cannot reach lm-eval"):
        run_lesion_study(lm, units, [lm_eval_benchmark(f"blimp={blimp_dir}", batch_size=32)], tmp_path / "out", positions="last",
                         progress=False)
    assert not (tmp_path / "out").exists()
