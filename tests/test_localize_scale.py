"""`neuroloc localize` at scale: checkpoint/resume through the pipeline, and two-process torchrun runs of
the real commands (localize: a share of the stimuli per rank; lesion: a share of the conditions) equal to
one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroloc import Localizer, StimulusSet, wrap_model
from neuroloc.pipelines.localize import run_localize
from neuroloc.record.checkpoint import CHECKPOINT_DIR
from tests.tiny import tiny_model, tiny_tokenizer

SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "sentences and strings are contrasted here", "the dog jumps over the fox", "what is the answer"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp holily ree ne os", "rere ofuke sleoming pome"]


def stimuli() -> StimulusSet:
    return StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple("S" * 5 + "N" * 5), ("S", "N"))


def test_pipeline_checkpoint_is_reused_and_invalidated(tmp_path, monkeypatch):
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    first = run_localize(lm, stimuli(), Localizer("mlp", percent=5, batch_size=2), tmp_path, checkpoint_every=1)
    checkpoint = tmp_path / CHECKPOINT_DIR / "stats-rank0.safetensors"
    assert checkpoint.is_file()
    # A rerun with the same inputs reuses the finished recording: the model is never run.
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: pytest.fail("the model ran"))
    again = run_localize(lm, stimuli(), Localizer("mlp", percent=5, batch_size=2), tmp_path, checkpoint_every=1)
    np.testing.assert_array_equal(again.scores_, first.scores_)
    monkeypatch.undo()
    # Other parameters (another pooling) invalidate it.
    other = run_localize(lm, stimuli(), Localizer("mlp", pooling="mean", percent=5, batch_size=2), tmp_path,
                         checkpoint_every=1)
    assert not np.allclose(other.scores_, first.scores_)


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_equal_one(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "stimuli.csv"
    pd.DataFrame({"text": SENTENCES + NONWORDS, "condition": ["S"] * 5 + ["N"] * 5}).to_csv(data, index=False)
    command = ["localize", "--model", str(model_dir), "--localizer", str(data), "--site", "residual,mlp",
               "--percent", "5", "--batch-size", "2", "--dtype", "float32", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")

    def launch(processes: int, *arguments: str) -> None:
        prefix = ([torchrun, "--nproc_per_node", str(processes), "--master_port", "29517"] if processes > 1
                  else [sys.executable])
        done = subprocess.run([*prefix, "-m", "neuroloc", *arguments], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    launch(2, *command, "--out", str(tmp_path / "two"), "--keep-checkpoints")
    launch(1, *command, "--out", str(tmp_path / "one"))
    a = pd.read_parquet(tmp_path / "one" / "scores.parquet")
    b = pd.read_parquet(tmp_path / "two" / "scores.parquet")
    np.testing.assert_allclose(b.t, a.t, rtol=1e-5, atol=1e-6)
    assert (a.selected == b.selected).all()
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["world_size"] == 2
    assert list((tmp_path / "two" / CHECKPOINT_DIR).glob("stats-rank*.safetensors"))  # each rank checkpointed

    # lesion: 1 intact + (target + 2 random + 2 magnitude) × 2 sizes = 11 conditions shared by 2 ranks
    blimp = tmp_path / "blimp"
    blimp.mkdir()
    (blimp / "toy.jsonl").write_text("".join(
        json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": "toy"}) + "\n"
        for good, bad in [("the dog jumps", "the dog jump"), ("she looked", "she look"), ("keys were", "keys was")]))
    (tmp_path / "text.txt").write_text("\n".join(SENTENCES) + "\n")
    lesion = ["lesion", "--units", str(tmp_path / "one"), "--model", str(model_dir), "--benchmarks", "blimp,perplexity",
              "--blimp", str(blimp), "--perplexity-text", str(tmp_path / "text.txt"), "--percent", "2,5",
              "--controls", "2", "--control-kind", "random,magnitude", "--batch-size", "2", "--dtype", "float32",
              "--quiet"]
    launch(2, *lesion, "--out", str(tmp_path / "lesion-two"))
    launch(1, *lesion, "--out", str(tmp_path / "lesion-one"))
    single = pd.read_csv(tmp_path / "lesion-one" / "results.csv")
    shared = pd.read_csv(tmp_path / "lesion-two" / "results.csv")
    assert single.groupby("condition").seed.nunique().to_dict() == {"intact": 1, "magnitude": 2, "random": 2,
                                                                    "target": 1}
    pd.testing.assert_frame_equal(shared, single)  # same rows, same order, same values
    assert json.loads((tmp_path / "lesion-two" / "manifest.json").read_text())["world_size"] == 2
