"""The multilingual study on the core: every forward pass honours the run settings' BOS policy, an
interrupted run resumes to the same result, and two torchrun processes give what one process gives."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuroloc import MultilingualConfig, RunSettings, run, wrap_model
from neuroloc.errors import NeurolocError
from neuroloc.interrupts import Interrupted
from neuroloc.stimuli.corpora import MultilingualCorpus
from neuroloc.text import encoding
from neuroloc.units import LabeledUnits

from .tiny import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(percent=5, n_identify=8, n_heldout=3, steer_prompts=2, steer_tokens=3)


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), copy.deepcopy(tiny_tokenizer()))


def _corpus() -> MultilingualCorpus:
    texts = {"en": [f"The dog {i} runs home." for i in range(12)],
             "de": [f"Der Hund {i} läuft heim." for i in range(12)],
             "fr": [f"Le chien {i} court." for i in range(12)]}
    return MultilingualCorpus(texts, {k: [str(i) for i in range(12)] for k in texts}, "test", parallel=True)


def _forwards(model: torch.nn.Module, stop_at: int | None = None) -> tuple[list[torch.Tensor], object]:
    """Every forward pass's real tokens (a hook on the whole model); raise `Interrupted` at call `stop_at`."""
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        if stop_at is not None and len(seen) + 1 == stop_at:
            raise Interrupted("SIGINT")
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        seen.append(ids[mask.bool()] if mask is not None and mask.shape == ids.shape else ids.flatten())

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_every_forward_pass_uses_the_bos_policy_asked_for(lm, monkeypatch) -> None:
    original, encoded = encoding.encode, []
    for module in [m for name, m in sys.modules.items() if name.startswith("neuroloc") and m is not None]:
        if getattr(module, "encode", None) is original:
            def spy(tokenizer, texts, *, bos, max_tokens=None, where=module.__name__):
                encoded.append((where, bos))
                return original(tokenizer, texts, bos=bos, max_tokens=max_tokens)
            monkeypatch.setattr(module, "encode", spy)
    config = MultilingualConfig(settings=RunSettings(bos="none", batch_size=3, progress=False), **SMALL)
    seen, handle = _forwards(lm.model)
    try:
        config.run(lm, inputs=config.prepare(_corpus()))
    finally:
        handle.remove()
    where = {w for w, _ in encoded}
    assert {"neuroloc.record.recorder", "neuroloc.evaluate.scoring", "neuroloc.studies.languages.steering"} <= where
    assert {bos for _, bos in encoded} == {"none"}
    prompts = [ids for ids in seen if ids.numel() > 1]  # generation steps after the first feed one token
    assert len(prompts) > 20
    bos = lm.tokenizer.bos_token_id
    assert all(not (ids == bos).any() for ids in prompts)  # no forward pass saw a BOS


def test_an_interrupted_run_resumes_to_the_same_result(lm, tmp_path) -> None:
    config = MultilingualConfig(model="tiny", settings=RunSettings(batch_size=2, progress=False), **SMALL)
    inputs = config.prepare(_corpus())
    seen, handle = _forwards(lm.model)
    try:
        whole = run(config, tmp_path / "whole", lm=lm, inputs=inputs)
    finally:
        handle.remove()
    # counting: 3 languages × 8 texts in batches of 2 = 12 passes; deactivation: 7 conditions (intact; per
    # language its units and one control) × 3 languages × 2 batches of the 3 held-out texts = 42
    counting, per_condition, total = 12, 6, len(seen)
    out, done = tmp_path / "resumed", 0
    for stop_at in (5, counting - 4 + per_condition + 5):  # in the counting, then in the second condition
        seen, handle = _forwards(lm.model, stop_at)
        try:
            with pytest.raises(Interrupted):
                run(config, out, lm=lm, inputs=inputs)
        finally:
            handle.remove()
        done += len(seen)
        assert not (out / "manifest.json").exists() and (out / ".checkpoints").is_dir()
    seen, handle = _forwards(lm.model)
    try:
        resumed = run(config, out, lm=lm, inputs=inputs)
    finally:
        handle.remove()
    # nothing done before an interrupt is done again, except the unfinished condition's 4 passes
    assert done + len(seen) == total + 4
    assert resumed.units == whole.units
    for name in ("scores.parquet", "layers.csv", "overlap.csv", "deactivation.csv", "steering.csv",
                 "steering_generations.csv"):
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        pd.testing.assert_frame_equal(read(out / name), read(tmp_path / "whole" / name), check_exact=True)
    assert not (out / ".checkpoints").exists()


def test_score_names_and_their_old_spellings() -> None:
    assert MultilingualConfig(score="specific-related").score == "specific_related"
    with pytest.raises(NeurolocError, match="--score: 'welch' is not a score that assigns units to languages"):
        MultilingualConfig(score="welch")
    with pytest.raises(NeurolocError, match="--steer-pairs takes SOURCE:TARGET pairs"):
        MultilingualConfig(steer_pairs="en-de")
    assert MultilingualConfig(steer_pairs="en:de, de:en").steer_pairs == (("en", "de"), ("de", "en"))
    with pytest.raises(NeurolocError, match="--steer-pairs names it"):
        MultilingualConfig(steer_pairs="en:it").prepare(_corpus())
    config = MultilingualConfig(languages="en,de", steer_pairs="en:de", settings=RunSettings(bos="none"))
    assert MultilingualConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # `neuroloc rerun`


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_equal_one(tmp_path) -> None:
    model_dir, data = tmp_path / "model", tmp_path / "data"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data.mkdir()
    for lang, texts in _corpus().texts.items():
        (data / f"{lang}.txt").write_text("\n".join(texts), encoding="utf-8")
    command = ["multilingual", "--model", str(model_dir), "--corpus", str(data), "--percent", "5", "--n-identify", "8",
               "--n-heldout", "3", "--steer-prompts", "2", "--steer-tokens", "3", "--batch-size", "2",
               "--dtype", "float32", "--keep-checkpoints", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")

    def launch(processes: int, out: Path) -> None:
        prefix = ([torchrun, "--nproc_per_node", str(processes), "--master_port", "29533"] if processes > 1
                  else [sys.executable])
        done = subprocess.run([*prefix, "-m", "neuroloc", *command, "--out", str(out)], env=env, capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(2, tmp_path / "two")
    launch(1, tmp_path / "one")
    one, two = tmp_path / "one", tmp_path / "two"
    assert LabeledUnits.load(two / "units" / "languages") == LabeledUnits.load(one / "units" / "languages")
    assert LabeledUnits.load(two / "units" / "categories") == LabeledUnits.load(one / "units" / "categories")
    for name in ("scores.parquet", "layers.csv", "overlap.csv", "deactivation.csv", "steering.csv",
                 "steering_generations.csv"):
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        a, b = read(one / name), read(two / name)
        numeric = a.select_dtypes("number").columns
        pd.testing.assert_frame_equal(a.drop(columns=numeric), b.drop(columns=numeric))
        np.testing.assert_allclose(b[numeric].to_numpy(float), a[numeric].to_numpy(float), rtol=1e-6, atol=1e-9)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["counting"]["world_size"] == 2
    assert manifest["counting"]["tokens_per_language"] == json.loads((one / "manifest.json").read_text())[
        "counting"]["tokens_per_language"]
    assert sorted(p.name for p in (two / ".checkpoints").glob("counts-rank*.safetensors")) == [
        "counts-rank0.safetensors", "counts-rank1.safetensors"]  # each process counted its share
