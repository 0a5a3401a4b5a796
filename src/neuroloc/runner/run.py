"""`run(config, out)`: the one runner every study goes through, from the command line or from Python.

Order of work, so that nothing is spent on a run that cannot succeed: the launcher policy (a study that does
not share its work refuses torchrun), the output folder (`OutputFolder.prepare`), the study's inputs
(`StudyConfig.load_inputs`), the model spec — all before the model loads; then the model, the study, and
on the main process the staged write of every file with the manifest and report. SIGINT/SIGTERM end the
study between two updates with its checkpoints saved (`neuroloc.interrupts`); a rerun of the same command
resumes from them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import Config, InstanceOf, Interval, param
from ..errors import NeurolocError
from ..interrupts import Interrupted, interruptible
from ..io import source_commit
from ..models.loading import LoadedModel, check_model_spec, load_model
from ..record.distributed import DistContext
from .context import RunContext, quiet
from .output import OutputFolder
from .study import StudyConfig, StudyResult

__all__ = ["RunOptions", "run"]


@dataclass(frozen=True, kw_only=True)
class RunOptions(Config):
    """How a run treats its output folder and checkpoints (never part of a result)."""

    overwrite: bool = param(False, InstanceOf(bool),
                            help="Replace an output folder that holds another run or other files (as a whole, "
                                 "when the new run has finished).")
    resume: bool = param(False, InstanceOf(bool),
                         help="Continue the unfinished run in --out (a run of the same command and settings "
                              "resumes without it; with it, anything else is refused).")
    keep_checkpoints: bool = param(False, InstanceOf(bool), help="Keep --out/.checkpoints/ after the run succeeds.")
    checkpoint_every: float = param(60.0, Interval(float, 0, None),
                                    help="Seconds between checkpoints of a recording (also saved when "
                                         "interrupted); 0: no checkpoints.")
    checkpoint_batches: int | None = param(None, Interval(int, 1, None), None, cli=False,
                                           help="Also checkpoint every so many batches.")


def launcher_check(config: StudyConfig, command: str | None = None) -> DistContext:
    """This process's place in a launch; a study that does not share its work refuses a launcher."""
    launched = DistContext.launched()
    if launched.enabled and not config.shares_work:
        raise NeurolocError(f"`neuroloc {command or config.command}` runs in one process: launch it without torchrun "
                            "or accelerate (it does not share its work across processes)")
    return launched


def run(config: StudyConfig, out: str | Path | None = None, *, lm: LoadedModel | None = None, inputs: Any = None,
        options: RunOptions | None = None, log: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None) -> StudyResult:
    """Run `config`'s study: on `lm` (default: load `config.model` with its run settings), with `inputs`
    (default: `config.load_inputs()`), writing every output into `out` (None: nothing is written). Returns
    the result on every process. `log` prints progress lines (default: nothing), `warn` warnings (default:
    Python warnings)."""
    options = options or RunOptions()
    source_commit()  # read (and cached) as the run starts: the manifest, written at the end, names the code that ran
    launched = launcher_check(config)
    folder = OutputFolder(out, config.command, config.identity()) if out is not None else None
    if folder is not None and launched.is_main:
        folder.prepare(overwrite=options.overwrite, resume=options.resume)
        if folder.resuming and log:
            log(f"resuming the unfinished run in {folder.path}")
    try:
        inputs = config.load_inputs() if inputs is None else inputs
        if lm is None:
            check_model_spec(config.model)
        dist = DistContext.from_env()
        dist.barrier()  # the main process has claimed the folder
        if lm is None:
            if log:
                log(f"loading {config.model} ({config.settings.dtype})")
            lm = load_model(config.model, dtype=config.settings.dtype, device=dist.device(config.settings.device))
        ctx = RunContext(settings=config.settings, out=folder.path if folder else None,
                         every_seconds=options.checkpoint_every or None, every_batches=options.checkpoint_batches,
                         dist=dist, log=log if (log and dist.is_main) else quiet)
        if warn is not None:
            ctx.warn = warn if dist.is_main else quiet
        with interruptible():
            started = time.perf_counter()
            result = config.run(lm, ctx, inputs)
            result.timings["total_s"] = round(time.perf_counter() - started, 1)
            if folder is not None and dist.is_main:
                folder.commit(result, keep_checkpoints=options.keep_checkpoints)
        dist.barrier()
        return result
    except Interrupted as interrupt:
        if folder is not None and launched.is_main:
            interrupt.checkpointed = folder.holds_checkpoints()
            if not interrupt.checkpointed:
                folder.abandon()
        raise
    except BaseException:
        if folder is not None and launched.is_main and not folder.holds_checkpoints():
            folder.abandon()
        raise
