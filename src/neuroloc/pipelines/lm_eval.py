"""`nl.lm_eval`: lm-evaluation-harness tasks on the intact model, a unit lesion and matched controls."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..evaluate.controls import summarize
from ..evaluate.lm_eval import evaluate_lm_eval, task_configs
from ..lesion import lesion
from ..models.loading import LoadedModel
from ..units import UnitSet
from .lesion import lesion_conditions


def lm_eval(lm: LoadedModel, tasks: str | Sequence[str], *, units: UnitSet | None = None, mode: str = "zero",
            n_controls: int = 0, control_kinds: Sequence[str] = ("random",), seed: int = 0, batch_size: int = 32,
            limit: int | None = None, summary: bool = False) -> pd.DataFrame:
    """Run harness `tasks` (see `neuroloc.evaluate.lm_eval.task_configs`) on the intact model and, with
    `units`, on the model with them lesioned (`mode`) and on `n_controls` matched control sets per kind.

    Returns rows condition, seed, n_units, benchmark, subset, metric, value — the lesion study's shape;
    `summary=True` returns `summarize`'s table instead (target vs controls, as `neuroloc lesion` writes)."""
    configs = task_configs(tasks)
    frames = [evaluate_lm_eval(lm.model, lm.tokenizer, configs, batch_size=batch_size, limit=limit)
              .assign(condition="intact", seed=0, percent=float("nan"), n_units=0)]
    if units is not None:
        for condition, s, selected in lesion_conditions(units, n_controls=n_controls, control_kinds=control_kinds,
                                                        seed=seed):
            with lesion(lm, selected, mode):
                frame = evaluate_lm_eval(lm.model, lm.tokenizer, configs, batch_size=batch_size, limit=limit)
            frames.append(frame.assign(condition=condition, seed=s, percent=float("nan"), n_units=len(selected)))
    results = pd.concat(frames, ignore_index=True)
    return summarize(results) if summary else results
