"""`neuroloc lesion`: lesion a unit set and matched controls, evaluate benchmarks, write results.

Every lesioned condition is paired with controls drawn for the same size and sites; dose–response
re-selects target sets of several sizes from the localizer's scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from ..evaluate.benchmark import Benchmark
from ..evaluate.controls import ControlData, draw_control, summarize
from ..evaluate.registry import build_benchmarks
from ..io import atomic_write_json, atomic_write_with, build_manifest, staged_output
from ..lesion import Intervention, lesion
from ..lesion.core import Positions, check_positions
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..record.distributed import DistContext, gather_across_ranks, shard_items
from ..report.figures import plot_dose_response, plot_lesion, save_figure
from ..units import UnitSet

__all__ = ["RESULT_COLUMNS", "Benchmark", "build_benchmarks", "evaluate", "lesion_conditions", "run_lesion_study",
           "unit_magnitudes"]

RESULT_COLUMNS = ["condition", "seed", "percent", "benchmark", "subset", "metric", "value"]


def evaluate(lm: LoadedModel, benchmarks: Sequence[Benchmark]) -> pd.DataFrame:
    """Every benchmark on the model as it is now (active lesions included), as one results frame."""
    return pd.concat([b.run(lm.model, lm.tokenizer) for b in benchmarks], ignore_index=True)


def unit_magnitudes(localizer: Localizer) -> np.ndarray:
    """Mean |activation| of every unit over both contrast conditions (for magnitude matching)."""
    return localizer.unit_magnitudes()


def lesion_conditions(target: UnitSet, *, n_controls: int, control_kinds: Sequence[str],
                      magnitudes: np.ndarray | None = None, seed: int = 0,
                      data: ControlData | None = None) -> list[tuple[str, int, UnitSet]]:
    """(condition, seed, units) for the target and each registered control kind × seed."""
    data = data if data is not None else ControlData(magnitudes=magnitudes)
    conditions = [("target", 0, target)]
    for kind in control_kinds:
        conditions += [(kind, s, draw_control(kind, target, s, data)) for s in range(seed, seed + n_controls)]
    return conditions


def run_lesion_study(lm: LoadedModel, units: UnitSet, benchmarks: Sequence[Benchmark], out_dir: str | Path, *,
                     localizer: Localizer | None = None, percents: Sequence[float] | None = None,
                     mode: str = "zero", n_controls: int = 5, control_kinds: Sequence[str] = ("random",),
                     seed: int = 0, progress: bool = True, extra_parameters: dict | None = None,
                     intervention_data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                     positions: Positions = None, dist: DistContext | None = None) -> pd.DataFrame:
    """Evaluate intact, target and control lesions; write results.csv, summary.csv, lesion.png
    (and dose_response.png with several sizes) and manifest.json into `out_dir`.

    Under torchrun the conditions (independent) are shared out over the ranks; every rank returns the
    whole results table, rank 0 writes.

    `intervention_data` holds the per-site data of modes that read it (`{"values": {...}}` for
    `value`, `{"vectors": {...}}` for `add`); `mean` reads the localizer's stored means. `positions`
    limits every lesion to some token positions (`neuroloc.lesion.lesion`)."""
    intervention = Intervention.parse(mode)
    positions = check_positions(positions)
    blind = [b.name for b in benchmarks if not b.declares_batches]
    if positions is not None and blind:
        raise NeurolocError(f"--positions cannot reach {', '.join(blind)}: its forward passes do not say which "
                            "tokens are padding; leave it out or lesion every position")
    units.check_compatible(lm.layout, lm.identity)
    if percents and localizer is None:
        raise NeurolocError("--percent re-selects units from localizer scores: pass a `neuroloc localize` output")
    data_kwargs = dict(intervention_data or {})
    if localizer is not None:
        data_kwargs.setdefault("means", localizer.means_)
    needed = intervention.method.data
    if needed is not None and needed not in data_kwargs:
        if needed == "means":
            raise NeurolocError("lesion mode 'mean' needs the unit means stored by `neuroloc localize`")
        raise NeurolocError(f"lesion mode {intervention.kind!r} needs per-site {needed}: pass "
                            f"intervention_data={{{needed!r}: ...}} (Python API)")
    data = ControlData(magnitudes=unit_magnitudes(localizer), scores=np.asarray(localizer.t_)) \
        if localizer is not None else ControlData()
    sizes = [(p, localizer.select(percent=p)) for p in percents] if percents else [(np.nan, units)]
    plan = [("intact", 0, np.nan, None)]
    for percent, target in sizes:
        plan += [(c, s, percent, u) for c, s, u in lesion_conditions(
            target, n_controls=n_controls, control_kinds=control_kinds, seed=seed, data=data)]
    ctx = dist or DistContext.from_env()
    mine = shard_items(list(enumerate(plan)), ctx)
    frames = []
    with progress_bar("lesion conditions", len(mine), progress) as advance:
        for index, (condition, s, percent, selected) in mine:
            if selected is None:
                frame = evaluate(lm, benchmarks)
            else:
                with lesion(lm, selected, intervention, positions=positions, **data_kwargs):
                    frame = evaluate(lm, benchmarks)
            frames.append((index, frame.assign(condition=condition, seed=s, percent=percent,
                                               n_units=0 if selected is None else len(selected))))
            advance(1)
    frames = sorted(gather_across_ranks(frames, ctx), key=lambda pair: pair[0])  # the plan's order
    results = pd.concat([frame for _, frame in frames], ignore_index=True)[RESULT_COLUMNS + ["n_units"]]
    if ctx.is_main:
        _write_lesion_outputs(lm, units, benchmarks, results, out_dir, localizer=localizer, percents=percents,
                              intervention=intervention, n_controls=n_controls, control_kinds=control_kinds,
                              seed=seed, extra_parameters={"positions": positions, **(extra_parameters or {})},
                              world_size=ctx.world_size)
    ctx.barrier()
    return results


def _write_lesion_outputs(lm: LoadedModel, units: UnitSet, benchmarks: Sequence[Benchmark], results: pd.DataFrame,
                          out_dir: str | Path, *, localizer: Localizer | None, percents: Sequence[float] | None,
                          intervention: Intervention, n_controls: int, control_kinds: Sequence[str], seed: int,
                          extra_parameters: dict | None, world_size: int) -> None:
    summary = summarize(results)
    with staged_output(out_dir) as staging:
        atomic_write_with(staging / "results.csv", lambda tmp: results.to_csv(tmp, index=False))
        atomic_write_with(staging / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
        lesioned_sizes = sorted(results.percent.dropna().unique())
        largest = lesioned_sizes[-1] if len(lesioned_sizes) > 1 else None
        save_figure(plot_lesion(results, percent=largest), staging / "lesion.png")
        if len(lesioned_sizes) > 1:
            save_figure(plot_dose_response(results), staging / "dose_response.png")
        atomic_write_json(staging / "manifest.json", build_manifest(
            "lesion",
            {"mode": str(intervention), "n_controls": n_controls, "control_kinds": list(control_kinds),
             "percents": list(percents) if percents else None, "seed": seed, "world_size": world_size,
             **(extra_parameters or {})},
            model=lm.identity,
            units={"n_units": len(units), "model": units.model,
                   "localizer": localizer.stimuli_ if localizer is not None else None},
            benchmarks=[{"name": b.name, "source": b.source} for b in benchmarks],
        ))
