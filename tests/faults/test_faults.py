"""Faults a user meets, each injected into `python -m neuroloc ...` on a tiny model, with the promise checked:
one clear line (no traceback), an exit status that is not 0, nothing half-written in --out, and a rerun of the
same command that resumes or starts clean and ends with what an undisturbed run gives.

Every run goes through `tests/faults/inject.py` (one process that imports neuroloc once and forks a child per
run, so the whole suite costs two imports): first the undisturbed runs and every fault, then every rerun.
Each test then reads what its runs left behind. The signal faults stop a run at a counted place — the Nth
forward pass, the Nth finished lesion condition, the final write — never at a time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.faults import inputs

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--dtype", "float32", "--batch-size", "4", "--quiet"]


# ---------------------------------------------------------------------------------------------- the studies
def study_args(world: dict, study: str) -> list[str]:
    """The arguments (without --out) of each study's small run."""
    model = ["--model", world["model"], *COMMON]
    return {
        "localize": ["localize", "--localizer", world["contrast"], "--site", "residual,mlp", "--percent", "10"],
        "multilingual": ["multilingual", "--corpus", world["corpus"], "--percent", "5", "--n-identify", "6",
                         "--n-heldout", "3", "--no-steering", "--controls", "1"],
        "task": ["task", "--items", world["items"], "--score", "welch", "--k", "5", "--controls", "1", "--dose", "none"],
        "align": ["align", "--recordings", world["recordings"], "--units", world["units"], "--folds", "2",
                  "--controls", "1", "--ceiling", "none"],
        "pos": ["pos", "--treebank", world["treebank"], "--classes", "NOUN,VERB", "--k", "5", "--steps", "2",
                "--controls", "1", "--n-bootstrap", "5"],
        "lesion": ["lesion", "--units", world["units"], "--benchmarks", "perplexity", "--controls", "2", "--data",
                   world["data"]],
    }[study] + model


# Where each signal arrives. "start": in the 1st forward pass (nothing recorded); "first": in the 2nd forward pass (one batch recorded, no checkpoint yet: the
# interval is 60 s); "between": in the 4th, with a checkpoint every 2 batches (batches 1-2 saved, 3 not);
# "write": during the final write; "item1"/"item2": once the 1st/2nd lesion or deactivation condition is saved.
POINTS = {"start": ({"at": "forward", "n": 1}, None), "first": ({"at": "forward", "n": 2}, None), "between": ({"at": "forward", "n": 4}, 2),
          "write": ({"at": "write"}, None), "item1": ({"at": "item", "n": 1}, None),
          "item2": ({"at": "item", "n": 2}, None)}
SIGNAL_FAULTS = [
    ("localize", "SIGINT", "start"), ("localize", "SIGINT", "first"), ("localize", "SIGTERM", "between"), ("localize", "SIGKILL", "first"),
    ("localize", "SIGKILL", "between"), ("localize", "SIGINT", "write"), ("localize", "SIGKILL", "write"),
    ("multilingual", "SIGINT", "between"), ("multilingual", "SIGKILL", "between"), ("multilingual", "SIGTERM", "item1"),
    ("multilingual", "SIGKILL", "write"),
    ("task", "SIGTERM", "first"), ("task", "SIGKILL", "between"), ("task", "SIGINT", "write"),
    ("align", "SIGINT", "first"), ("align", "SIGTERM", "between"), ("align", "SIGKILL", "between"), ("align", "SIGTERM", "write"),
    ("pos", "SIGTERM", "first"), ("pos", "SIGINT", "item1"), ("pos", "SIGKILL", "write"),
    ("lesion", "SIGINT", "item1"), ("lesion", "SIGKILL", "item2"), ("lesion", "SIGTERM", "write"),
]


@dataclass
class Fault:
    """A run with a fault (or a bad input), what it should do, and an optional rerun."""

    id: str
    argv: list[str]
    fault: dict = field(default_factory=dict)
    checkpoint_batches: int | None = None
    rerun: list[str] | None = None  # the command run again afterwards (None: no rerun)
    same_as: str | None = None  # the undisturbed study whose outputs the rerun must reproduce
    message: str | None = None  # a regex the one error line must match
    status: int | None = None  # the exit status expected (None: any but 0)


def out_of(argv: list[str]) -> Path:
    return Path(argv[argv.index("--out") + 1])


# ---------------------------------------------------------------------------------------------- the world
def build(root: Path) -> dict:
    """Every input file, and the list of faults with their runs."""
    world = {"root": root, "model": inputs.save_model(root / "model"),
             "gpt2": inputs.save_model(root / "gpt2", "gpt2"),
             "contrast": inputs.write_stimuli(root / "contrast.csv", *inputs.contrast_texts()),
             "corpus": inputs.write_corpus(root / "corpus"), "items": inputs.write_items(root / "items.jsonl"),
             "treebank": inputs.write_treebank(root / "train.conllu"),
             "recordings": inputs.write_recordings(root / "recordings.csv"),
             "units": str(root / "base" / "localize")}
    from tests.test_seams import write_data

    world["data"] = str(write_data(root / "data"))
    faults = [*signal_faults(world), *input_faults(world)]
    world["faults"] = {f.id: f for f in faults}
    return world


def signal_faults(world: dict) -> list[Fault]:
    faults = []
    for study, name, point in SIGNAL_FAULTS:
        fault, every = POINTS[point]
        argv = [*study_args(world, study), "--out", str(world["root"] / "sig" / f"{study}-{name}-{point}")]
        faults.append(Fault(id=f"{study}-{name}-{point}", argv=argv, fault={"signal": name, **fault},
                            checkpoint_batches=every, rerun=argv, same_as=study,
                            status=-9 if name == "SIGKILL" else 130,
                            message=None if name == "SIGKILL" else rf"interrupted \({name}\)"))
    return faults


def input_faults(world: dict) -> list[Fault]:
    """Bad inputs and a hostile environment: each refused with one line before anything is written."""
    root = world["root"] / "bad"
    root.mkdir(parents=True, exist_ok=True)
    texts, conditions = inputs.contrast_texts()
    localize = lambda stimuli, *extra: ["localize", "--localizer", stimuli, "--site", "residual",  # noqa: E731
                                        "--model", world["model"], *COMMON, *extra]
    out = lambda name: ["--out", str(root / name)]  # noqa: E731
    faults = []

    def add(name, argv, message, **kw):
        faults.append(Fault(id=name, argv=[*argv, *out(name)], message=message, **kw))

    # --- stimuli
    add("empty-condition", localize(inputs.write_stimuli(root / "one-label.csv", texts[:12], ["S"] * 12),
                                    "--design", "S:N"), r"N")
    add("one-stimulus-condition", localize(inputs.write_stimuli(root / "one-n.csv", texts[:7], ["S"] * 6 + ["N"])),
        r"condition 'N' has only 1 item; .* at least 2")
    add("duplicate-stimuli-across-conditions",
        localize(inputs.write_stimuli(root / "dup.csv", texts + [texts[0]], conditions + ["N"])), r"duplicate|twice")
    long_text = " ".join(["the dog looked for the keys"] * 60)
    add("text-longer-than-context",
        localize(inputs.write_stimuli(root / "long.csv", texts + [long_text], conditions + ["S"])),
        r"tokens long.*at most 128")
    add("tokenizer-all-unknown", ["localize", "--localizer", world["contrast"], "--site", "residual",
                                  "--model", unknown_tokenizer_model(world), *COMMON], r"unknown")
    # --- units files
    units = Path(world["units"]) / "units.json"
    lesion = lambda units_path: ["lesion", "--units", units_path, "--benchmarks", "perplexity", "--controls", "1",  # noqa: E731
                                 "--data", world["data"], "--model", world["model"], *COMMON]
    add("units-of-another-model", lesion(str(root / "gpt2-units")), r"gpt2-units|model")
    for name, text in {"units-corrupted": lambda raw: "\x00\x13garbage{{" + raw[5:],
                       "units-truncated": lambda raw: raw[: len(raw) // 2],
                       "units-hand-edited-index": lambda raw: _edit_units(raw, index=10_000),
                       "units-hand-edited-site": lambda raw: _edit_units(raw, site="layers.9.residual")}.items():
        add(name, lesion(str(root / "units" / name / "units.json")), r"units\.json")
        world.setdefault("edits", {})[name] = (units, root / "units" / name / "units.json", text)
    # --- recordings
    table = inputs.recordings_table()
    nan_rows = table.copy()
    nan_rows.loc[[2, 5], ["v0", "v1", "v2"]] = np.nan
    align = lambda recordings, *extra: ["align", "--recordings", recordings, "--units", world["units"],  # noqa: E731
                                        "--folds", "2", "--controls", "1", "--ceiling", "none",
                                        "--model", world["model"], *COMMON, *extra]
    add("recordings-nan-rows-strict", align(inputs.write_recordings(root / "nan.csv", nan_rows), "--strict"),
        r"nan\.csv.*NaN|NaN.*nan\.csv")
    add("recordings-nan-rows-dropped", align(str(root / "nan.csv")), None, status=0)
    add("recordings-one-row", align(inputs.write_recordings(root / "one.csv", table.iloc[:1])),
        r"one\.csv: 1 stimulus but 2 folds.*at least 2 stimuli")
    dup = table.copy()
    dup.insert(0, "stimulus_id", [f"s{i}" for i in range(len(dup))])
    dup.loc[3, "stimulus_id"] = "s2"
    add("recordings-duplicate-ids", align(inputs.write_recordings(root / "dup-ids.csv", dup)),
        r"dup-ids\.csv.*s2")
    # --- the run and its folder
    add("out-is-a-file", localize(world["contrast"]), r"is a file")
    (root / "out-is-a-file").write_text("not a folder")
    add("read-only-out", localize(world["contrast"]), r"--out .*cannot write there", fault={"read_only": True})
    (root / "read-only-out").mkdir()
    base = study_args(world, "localize")
    add("disk-full-final-write", base, r"--out .*No space left.*checkpointed", fault={"disk_full": "write"},
        rerun=base + out("disk-full-final-write"))
    add("disk-full-checkpoint", base, r"No space left", fault={"disk_full": "checkpoint"}, checkpoint_batches=2,
        status=1, rerun=base + out("disk-full-checkpoint"))
    add("nan-activations", localize(world["contrast"]), r"non-finite.*layers\.0\.residual",
        fault={"nonfinite": "nan"})
    add("inf-activations", localize(world["contrast"]), r"non-finite.*layers\.0\.residual",
        fault={"nonfinite": "inf"})
    mismatched = localize(world["contrast"]) + out("mismatched-resume")
    faults.append(Fault(id="mismatched-resume-interrupted", argv=mismatched, fault={"signal": "SIGINT", "at": "forward",
                                                                                    "n": 2}, status=130,
                        message="interrupted",
                        rerun=[*localize(world["contrast"], "--pooling", "mean"), *out("mismatched-resume"),
                               "--resume"]))
    return faults


def _edit_units(raw: str, index: int | None = None, site: str | None = None) -> str:
    data = json.loads(raw)
    text = json.dumps(data)
    names = [n for n in _strings(data) if "[" in n]
    first = names[0]
    if index is not None:
        edited = first.split("[")[0] + f"[{index}]"
    else:
        edited = site + "[" + first.split("[", 1)[1]
    return text.replace(json.dumps(first), json.dumps(edited), 1)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def unknown_tokenizer_model(world: dict) -> str:
    """The tiny model with a tokenizer whose vocabulary holds nothing but its unknown token (and EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = world["root"] / "unk-model"
    if not folder.exists():
        from tests.tiny import tiny_model

        tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "<|endoftext|>": 1}, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>")
        tiny_model("llama").save_pretrained(folder)
        fast.save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------------------- running
def drive(runs: list[dict], folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runs.json").write_text(json.dumps(runs))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "faults" / "inject.py"), str(folder / "runs.json"),
                           str(folder / "results.json")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
                               "TRANSFORMERS_VERBOSITY": "error"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "results.json").read_text())


def snapshot(folder: Path) -> dict[str, float]:
    """Every path in (and including) `folder` with its modification time; {} when there is none."""
    if not folder.exists():
        return {}
    return {".": folder.stat().st_mtime, **{str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    world = build(root)
    base = {study: [*study_args(world, study), "--out", str(root / "base" / study)]
            for study in ("localize", "multilingual", "task", "align", "pos", "lesion")}
    runs = [{"id": "base-localize", "argv": base["localize"]},
            {"id": "gpt2-units", "argv": ["localize", "--localizer", world["contrast"], "--site", "residual",
                                          "--model", world["gpt2"], *COMMON, "--out", str(root / "bad" / "gpt2-units")]}]
    runs += [{"id": f"base-{s}", "argv": argv, "wait": s == "multilingual"} for s, argv in base.items()
             if s != "localize"]
    first = drive(runs, root / "runs-0")
    for name, (source, target, edit) in world["edits"].items():
        target.parent.mkdir(parents=True, exist_ok=True)
        for sibling in source.parent.iterdir():
            if sibling.is_file() and sibling.suffix in (".json", ".safetensors") and sibling.name != "manifest.json":
                target.parent.joinpath(sibling.name).write_bytes(sibling.read_bytes())
        target.write_text(edit(source.read_text()))
        (target.parent / "units.safetensors").unlink(missing_ok=True)
    faults = world["faults"].values()
    before = {f.id: snapshot(out_of(f.argv)) for f in faults}
    second = drive([{"id": f.id, "argv": f.argv, "fault": f.fault, "checkpoint_batches": f.checkpoint_batches}
                    for f in faults], root / "runs-1")
    after = {f.id: snapshot(out_of(f.argv)) for f in faults}
    states = {f.id: describe(out_of(f.argv)) for f in faults}
    third = drive([{"id": f"rerun-{f.id}", "argv": f.rerun} for f in faults if f.rerun], root / "runs-2")
    return {**world, "base": base, "results": {**first, **second, **third}, "before": before, "after": after,
            "states": states}


def describe(out: Path) -> dict:
    """What a fault left: the files in --out, and staging folders beside it."""
    siblings = sorted(p.name for p in out.parent.glob(f".{out.name}.*")) if out.parent.exists() else []
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    return {"exists": out.exists(), "files": files, "siblings": siblings}


# ---------------------------------------------------------------------------------------------- checks
def one_line(result: dict, pattern: str | None) -> None:
    """Exactly one error line, no traceback; matching `pattern`."""
    import re

    err = result["stderr"]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    if pattern:
        assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]


def outputs(folder: Path) -> dict[str, object]:
    """The result files of an output folder (tables and JSON), without times, paths, figures and the report."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if not path.is_file() or name.startswith(".") or "/." in name:
            continue
        if path.suffix == ".parquet":
            found[name] = pd.read_parquet(path)
        elif path.suffix in (".csv", ".tsv"):
            found[name] = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        elif path.suffix == ".json" and path.name != "manifest.json":
            found[name] = json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            found[name] = load_file(path)
        else:
            found[name] = None  # present (figures, the report, the manifest)
    return found


def assert_close(a, b, where: str) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-8, obj=where)
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_close(a[key], b[key], f"{where}[{key}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8, err_msg=where)
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8), where
    else:
        assert a == b, where


def assert_same_result(world: dict, out: Path, study: str) -> None:
    base = outputs(out_of(world["base"][study]))
    again = outputs(out)
    assert set(again) == set(base)
    for name in base:
        assert_close(base[name], again[name], name)


def assert_clean(out: Path) -> None:
    """A finished output: a manifest, no checkpoints, no staging beside it."""
    assert (out / "manifest.json").is_file()
    assert not (out / ".checkpoints").exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


# ---------------------------------------------------------------------------------------------- tests
def test_undisturbed_runs_succeed(world):
    for study, argv in world["base"].items():
        result = world["results"][f"base-{study}"]
        assert result["status"] == 0, result["stderr"][-2000:]
        assert_clean(out_of(argv))


@pytest.mark.parametrize("study, name, point", SIGNAL_FAULTS, ids=[f"{s}-{n}-{p}" for s, n, p in SIGNAL_FAULTS])
def test_signal(world, study, name, point):
    fault = world["faults"][f"{study}-{name}-{point}"]
    result, state = world["results"][fault.id], world["states"][fault.id]
    out = out_of(fault.argv)
    assert result["status"] == fault.status, result["stderr"][-2000:]
    if name != "SIGKILL":
        one_line(result, fault.message)
        assert not state["siblings"], state  # an interrupted write leaves no staging folder
    # nothing half-written: no output file, only checkpoints (complete files: no temporary ones)
    assert all(f.startswith(".checkpoints/") for f in state["files"]), state
    if point == "start" and name != "SIGKILL":  # nothing to resume from: nothing left, and it says so
        assert not state["exists"] and "before anything was checkpointed" in result["stderr"], (state, result)
    if name != "SIGKILL":
        assert not any(f.endswith(".tmp") for f in state["files"]), state
    rerun = world["results"][f"rerun-{fault.id}"]
    assert rerun["status"] == 0, rerun["stderr"][-2000:]
    if any(f.endswith(".safetensors") for f in state["files"]) and study != "lesion":
        assert "resuming from" in rerun["stderr"], rerun["stderr"][-2000:]
    if study == "pos" and point.startswith("item"):  # the attribution stage was finished: not redone
        assert "key neurons of the interrupted run are reused" in rerun["stderr"], rerun["stderr"][-2000:]
    assert_clean(out)
    assert_same_result(world, out, study)


INPUT_FAULTS = ["empty-condition", "one-stimulus-condition", "duplicate-stimuli-across-conditions",
                "text-longer-than-context", "tokenizer-all-unknown", "units-of-another-model", "units-corrupted",
                "units-truncated", "units-hand-edited-index", "units-hand-edited-site", "recordings-nan-rows-strict",
                "recordings-nan-rows-dropped", "recordings-one-row", "recordings-duplicate-ids", "out-is-a-file",
                "read-only-out", "disk-full-final-write", "disk-full-checkpoint", "nan-activations",
                "inf-activations", "mismatched-resume-interrupted"]


@pytest.mark.parametrize("name", INPUT_FAULTS)
def test_input(world, name):
    fault = world["faults"][name]
    result = world["results"][name]
    out = out_of(fault.argv)
    if fault.status == 0:  # counted and reported: a warning line, and the run completes
        assert result["status"] == 0, result["stderr"][-2000:]
        assert "Traceback" not in result["stderr"] and "warning:" in result["stderr"], result["stderr"][-2000:]
        assert_clean(out)
        return
    assert result["status"] != 0 if fault.status is None else result["status"] == fault.status, result["stderr"]
    one_line(result, fault.message)
    state = world["states"][name]
    assert not state["siblings"], state
    if world["before"][name]:
        assert world["after"][name] == world["before"][name]  # a folder or file that was there is untouched
    else:
        assert all(f.startswith(".checkpoints/") for f in state["files"]), state
        if not fault.rerun:
            assert not state["exists"], state  # refused before the work: nothing made
    if fault.rerun and name.startswith("mismatched"):
        rerun = world["results"][f"rerun-{name}"]
        assert rerun["status"] == 2, rerun["stderr"]
        one_line(rerun, r"unfinished run.*other settings")
    elif fault.rerun:
        rerun = world["results"][f"rerun-{name}"]
        assert rerun["status"] == 0, rerun["stderr"][-2000:]
        assert_clean(out)
        assert_same_result(world, out, "localize")
