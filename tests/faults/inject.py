"""Run `python -m neuroloc ...` commands with a fault injected at a chosen, deterministic point.

    python tests/faults/inject.py RUNS.json RESULTS.json

RUNS.json is a list of runs: {"id", "argv" (the arguments after `neuroloc`), "fault" (optional, below),
"checkpoint_batches" (optional: also checkpoint every so many batches, so "between checkpoints" is a place
a count reaches, not a time), "wait" (optional: start only when every earlier run has ended)}; two runs go
at a time ($FAULTS_PARALLEL). This process imports neuroloc, torch and transformers once and runs no
tensor code itself; every run is a child forked from it (a real process with real signals, its own exit
status and its own stdout/stderr files) that executes `neuroloc`'s `__main__` exactly as `python -m
neuroloc` does. RESULTS.json maps each id to {"status": exit code, or -signal when killed, "stdout",
"stderr"}.

Faults (`fault`):
- {"signal": NAME, "at": "forward", "n": N}: the process sends itself NAME on entering its Nth forward pass
  of the model (1: before anything was recorded);
- {"signal": NAME, "at": "write"}: ... while the final write is under way (the study's files and the
  manifest are in the staging folder, the report is not);
- {"signal": NAME, "at": "item", "n": N}: ... once the Nth finished unit of work (a lesion condition, a pos stage) is
  saved;
- {"disk_full": "write" | "checkpoint"}: every file write of the final write (or the second checkpoint
  save) fails with ENOSPC, as on a full disk;
- {"read_only": true}: every write under --out's parent fails with EACCES, as on a read-only folder (the
  tests run as root, where chmod does not stop a write);
- {"nonfinite": "nan" | "inf"}: layer 0's output holds NaN (or inf) at one position of every pass.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (imported once here, so that every child starts warm)
import transformers  # noqa: F401

import neuroloc.cli  # noqa: F401
import neuroloc.pipelines.align  # noqa: F401
import neuroloc.pipelines.lesion  # noqa: F401
import neuroloc.pipelines.localize  # noqa: F401
import neuroloc.pipelines.multilingual  # noqa: F401
import neuroloc.pipelines.pos  # noqa: F401
import neuroloc.pipelines.task  # noqa: F401
from neuroloc.record import checkpoint as checkpoint_module
from neuroloc.runner import output as output_module

run_module = sys.modules["neuroloc.runner.run"]  # the module (the package exports the function `run`)


def _signal(name: str) -> None:
    os.kill(os.getpid(), getattr(signal, name))


def _out_of(argv: list[str]) -> Path:
    for flag in ("--out", "-o"):
        if flag in argv:
            return Path(argv[argv.index(flag) + 1]).resolve()
    raise ValueError("no --out")


def _wrap_model(transform) -> None:
    """Apply `transform(lm)` to the model the runner loads."""
    load = run_module.load_model

    def loaded(*args, **kwargs):
        lm = load(*args, **kwargs)
        transform(lm)
        return lm

    run_module.load_model = loaded


def _failing_writes(error: int, under: Path | None = None, after_calls: int = 0) -> None:
    """Every write (Python's open in a writing mode, parquet, safetensors) fails with `error`."""
    message = os.strerror(error)

    def refuse(path) -> None:
        if under is None or str(Path(path).resolve()).startswith(str(under)):
            raise OSError(error, message, str(path))

    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike)):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = open_
    import pandas as pd
    import safetensors.torch

    to_parquet, save_file = pd.DataFrame.to_parquet, safetensors.torch.save_file

    def parquet(self, path, *args, **kwargs):
        refuse(path)
        return to_parquet(self, path, *args, **kwargs)

    def save(tensors, filename, *args, **kwargs):
        refuse(filename)
        return save_file(tensors, filename, *args, **kwargs)

    pd.DataFrame.to_parquet = parquet
    safetensors.torch.save_file = checkpoint_module.save_file = save
    os_open = os.open

    def os_open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return os_open(path, flags, *args, **kwargs)

    os.open = os_open_  # tempfile.mkstemp, Path.touch


def install(fault: dict, argv: list[str], checkpoint_batches: int | None) -> None:
    """Patch this (child) process so that `fault` happens."""
    if checkpoint_batches:
        init = checkpoint_module.Checkpoint.__init__

        def every(self, *args, **kwargs):
            init(self, *args, **{**kwargs, "every": checkpoint_batches})

        checkpoint_module.Checkpoint.__init__ = every
    if not fault:
        return
    name = fault.get("signal")
    at = fault.get("at")
    if at == "forward":
        def arm(lm):
            calls = {"n": 0}

            def hook(module, args):
                calls["n"] += 1
                if calls["n"] == fault["n"]:
                    _signal(name)

            lm.model.register_forward_pre_hook(hook)

        _wrap_model(arm)
    elif at == "write":
        write_report = output_module.write_report

        def report(*args, **kwargs):
            _signal(name)
            return write_report(*args, **kwargs)

        output_module.write_report = report
    elif at == "item":
        done = {"n": 0}

        def counted(put):
            def put_(self, *args, **kwargs):
                put(self, *args, **kwargs)
                done["n"] += 1
                if done["n"] == fault["n"]:
                    _signal(name)
            return put_

        checkpoint_module.ItemLog.put = counted(checkpoint_module.ItemLog.put)
        checkpoint_module.ItemLog.put_object = counted(checkpoint_module.ItemLog.put_object)
    elif fault.get("disk_full") == "write":
        write_result = output_module.write_result

        def full(result, folder):
            _failing_writes(errno.ENOSPC)
            return write_result(result, folder)

        output_module.write_result = full
    elif fault.get("disk_full") == "checkpoint":
        save, calls = checkpoint_module.Checkpoint.save, {"n": 0}

        def save_(self, stats):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            return save(self, stats)

        checkpoint_module.Checkpoint.save = save_
    elif fault.get("read_only"):
        _failing_writes(errno.EACCES, under=_out_of(argv))
    elif fault.get("nonfinite"):
        value = float(fault["nonfinite"])

        def poison(lm):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                hidden[:, -1, 3] = value
                return output

            lm.layout.layers[0].register_forward_hook(hook)

        _wrap_model(poison)
    else:
        raise ValueError(f"unknown fault {fault}")


def child(spec: dict, folder: Path) -> None:
    """In the forked child: redirect output, install the fault, run `python -m neuroloc ARGV`."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(folder / f"{spec['id']}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["neuroloc", *spec["argv"]]
    install(spec.get("fault") or {}, spec["argv"], spec.get("checkpoint_batches"))
    code = 0
    try:
        runpy.run_module("neuroloc", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # an escaped exception: what `python -m` does (traceback, status 1)
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    runs = json.loads(Path(sys.argv[1]).read_text())
    results_path = Path(sys.argv[2])
    folder = results_path.parent
    parallel = int(os.environ.get("FAULTS_PARALLEL", "2"))
    results, running, started = {}, {}, {}

    def reap() -> None:
        pid, status = os.wait()
        run_id = running.pop(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        results[run_id] = {name: (folder / f"{run_id}.{name}").read_text(errors="replace")
                           for name in ("stdout", "stderr")}
        results[run_id].update(status=code, seconds=round(time.perf_counter() - started.pop(pid), 2))

    for spec in runs:
        while running and (len(running) >= parallel or spec.get("wait")):
            reap()
        pid = os.fork()
        if pid == 0:
            try:
                child(spec, folder)
            except BaseException:  # the harness itself failed: say so in the run's stderr
                import traceback

                traceback.print_exc()
            finally:
                os._exit(99)
        running[pid], started[pid] = spec["id"], time.perf_counter()
    while running:
        reap()
    results_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
