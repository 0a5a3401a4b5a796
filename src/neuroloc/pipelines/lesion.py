"""The lesion study: lesion a unit set and matched controls, evaluate benchmarks, write results.

Every lesioned condition is paired with controls drawn for the same size and sites; dose–response
re-selects target sets of several sizes from the localizer's scores. Conditions are independent: under
torchrun they are shared out over the processes, and each finished condition is checkpointed, so an
interrupted study resumes with the conditions still to do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Each, Factory, InstanceOf, Options, param
from ..errors import NeurolocError
from ..evaluate.benchmark import Benchmark
from ..evaluate.conditions import Condition, evaluate_conditions
from ..evaluate.conditions import run_benchmarks as evaluate
from ..evaluate.controls import ControlData, draw_control, summarize
from ..evaluate.registry import BenchmarkSpec, build_benchmarks
from ..io import file_sha256
from ..lesion import Intervention, lesion
from ..lesion.core import check_positions
from ..localize.localizer import LOCALIZER_FILE, Localizer
from ..models.loading import LoadedModel
from ..parse import parse_positions
from ..progress import progress_bar
from ..record.distributed import DistContext, gather_across_ranks, shard_items
from ..report.figures import plot_dose_response, plot_lesion, save_figure
from ..report.html import Section
from ..runner import RunContext, RunOptions, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..units import UnitSet
from . import fields
from .reliability import FOLDS_FOLDER, fold_folder

__all__ = ["RESULT_COLUMNS", "Benchmark", "LesionConfig", "LesionInputs", "LesionResult", "PlannedCondition",
           "build_benchmarks", "evaluate", "evaluate_plan", "lesion_conditions", "run_lesion_study", "unit_magnitudes"]

RESULT_COLUMNS = ["condition", "seed", "percent", "benchmark", "subset", "metric", "value"]
DEFAULT_BENCHMARKS = (BenchmarkSpec("blimp"), BenchmarkSpec("syntaxgym"), BenchmarkSpec("perplexity"))
TRUNK_CACHE_BYTES = 2 * 2**30  # residual streams kept below the lesions (evaluate.conditions); beyond it, recomputed


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


def units_folder(path: str | Path, fold: int | None = None) -> Path:
    """The folder the units are read from: `path`, or with `fold` its folds/fold-K/ (units chosen on that
    fold of the localizer's stimuli alone)."""
    path = Path(path)
    if fold is None:
        return path
    folded = fold_folder(path, fold)
    if not folded.is_dir():
        found = sorted(p.name for p in (path / FOLDS_FOLDER).glob("fold-*")) if (path / FOLDS_FOLDER).is_dir() else []
        raise NeurolocError(f"--fold {fold}: {path} holds no units of fold {fold} "
                            f"({'folds: ' + ', '.join(found) if found else 'no folds/'}); localize with "
                            f"`neuroloc localize --folds K --out {path}` first")
    return folded


def read_units(path: str | Path, fold: int | None = None) -> tuple[Localizer | None, UnitSet]:
    """(the fitted Localizer or None, its units): a `neuroloc localize` output, or a bare UnitSet folder;
    with `fold`, the localizer fitted on that fold of its stimuli alone."""
    if not Path(path).exists():
        raise NeurolocError(f"--units {path}: no such folder; give a `neuroloc localize` output or a UnitSet folder")
    path = units_folder(path, fold)
    fitted = Localizer.load(path) if (path / LOCALIZER_FILE).is_file() else None
    return fitted, fitted.units_ if fitted else UnitSet.load(path)


@dataclass(frozen=True)
class PlannedCondition:
    """One condition of a lesion plan: the columns its result rows get (condition, seed, percent, ...), the
    units it lesions (None: the intact model) and the per-site data its intervention reads (e.g. means)."""

    columns: Mapping[str, Any]
    units: UnitSet | None
    data: Mapping[str, Any] = field(default_factory=dict)


def evaluate_plan(lm: LoadedModel, ctx: RunContext, plan: Sequence[PlannedCondition], benchmarks: Sequence[Benchmark],
                  *, intervention: Intervention, positions: Any, data: Mapping[str, Any], key: Mapping[str, Any],
                  name: str = "conditions") -> list[pd.DataFrame]:
    """Every planned condition's benchmark rows (with its columns and `n_units`), in plan order, on every rank.

    Conditions are shared out over torchrun processes; each finished one is saved in the run's item log
    `name` (keyed by the model, `key`, the benchmarks and the plan), so an interrupted run resumes with the
    conditions still to do. `data` is the per-site data every intervention reads, updated by a condition's own."""
    log = None
    if ctx.checkpointing:
        log = ctx.item_log(name, ctx.key(lm, **key, benchmarks=[(b.name, b.source) for b in benchmarks],
                                         plan=[([str(v) for v in p.columns.values()],
                                                None if p.units is None else p.units.names()) for p in plan]))
    mine = shard_items(list(enumerate(plan)), ctx.dist)
    finished = {index: log.get(str(index)) for index, _ in mine} if log is not None else {}
    todo = [(index, item) for index, item in mine if finished.get(index) is None]
    conditions = [Condition(str(item.columns.get("condition", index)), None if item.units is None else
                            (lambda item=item: lesion(lm, item.units, intervention, positions=positions,
                                                      **{**data, **item.data})))
                  for index, item in todo]

    def keep(position: int, frame: pd.DataFrame) -> None:
        index, item = todo[position]
        finished[index] = frame.assign(**item.columns, n_units=0 if item.units is None else len(item.units))
        if log is not None:
            log.put(str(index), finished[index])

    with progress_bar(f"lesion {name}", len(mine), ctx.progress, completed=len(mine) - len(todo)) as advance:
        evaluate_conditions(lm, conditions, benchmarks, cache_bytes=TRUNK_CACHE_BYTES, progress=advance,
                            finished=keep)
    frames = sorted(gather_across_ranks([(index, finished[index]) for index, _ in mine], ctx.dist),
                    key=lambda pair: pair[0])  # the plan's order
    return [frame for _, frame in frames]


@dataclass
class LesionInputs:
    """What a lesion study reads: the units (and the localizer that chose them, for sizes, magnitudes and
    means), the benchmarks (data loaded once), and per-site data of modes that read it (`{"values": ...}`
    for `value`, `{"vectors": ...}` for `add`; Python only)."""

    units: UnitSet
    localizer: Localizer | None
    benchmarks: list[Benchmark]
    settings: RunSettings
    intervention_data: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    source: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LesionConfig(StudyConfig):
    """Lesion units and matched controls at one or several sizes; evaluate benchmarks on each."""

    command = "lesion"
    title = "Lesion study"
    shares_work = True
    bos_from_inputs = True

    units: str = param(..., InstanceOf(str), aliases={"-u": None},
                       help="A `neuroloc localize` output (or a UnitSet folder).")
    units_fold: int | None = fields.units_fold()
    mode: str = fields.intervention()
    positions: str | tuple[int, ...] | None = param(None, Options(["last"]), Each(InstanceOf(int)), None,
                                                    parse=parse_positions,
                                                    help="Lesion only these token positions: last, or integers "
                                                         "like 1,-2 (negative from each text's end); default all.")
    benchmarks: tuple[BenchmarkSpec, ...] = fields.benchmarks(
        DEFAULT_BENCHMARKS, "Benchmarks with options: blimp,syntaxgym or 'blimp:limit=30;perplexity:path=text.txt'.")
    data: str | None = fields.data_root()
    n_controls: int = fields.n_controls(5)
    control_kinds: tuple[str, ...] = fields.control_kinds(("random",))
    sizes: tuple[float, ...] | None = fields.sizes(None, "Re-select the units at these sizes (percent of each "
                                                         "site kind's units) from the localizer's scores, e.g. "
                                                         "0.125,0.25,0.5,1.")
    settings: RunSettings = param(Factory(lambda: RunSettings(bos=None)), help="How the model is run.")

    def check(self) -> None:
        super().check()
        check_positions(self.positions)

    def load_inputs(self) -> LesionInputs:
        localizer, units = read_units(self.units, self.units_fold)
        if self.sizes and localizer is None:
            raise NeurolocError("sizes (--sizes) re-select units from localizer scores: give a `neuroloc "
                                "localize` output as --units")
        settings = self.scoring_settings(localizer)
        benchmarks = [spec.build(settings, self.data) for spec in self.benchmarks]
        if not benchmarks:
            raise NeurolocError("benchmarks (--benchmarks): give at least one benchmark")
        folder = units_folder(self.units, self.units_fold)
        units_file = folder / "units.safetensors"
        source = {"path": str(folder), "sha256": file_sha256(units_file) if units_file.is_file() else None}
        return LesionInputs(units, localizer, benchmarks, settings, source=source)

    def scoring_settings(self, localizer: Localizer | None) -> RunSettings:
        """The run settings every benchmark text is scored under: the BOS policy asked for, else the
        localizer's, else prepend."""
        if self.settings.bos is not None:
            return self.settings
        return self.settings.replace(bos=localizer.bos if localizer is not None else RunSettings().bos)

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: LesionInputs) -> "LesionResult":
        intervention = Intervention.parse(self.mode)
        positions = check_positions(self.positions)
        localizer, units = inputs.localizer, inputs.units
        blind = [b.name for b in inputs.benchmarks if not b.declares_batches]
        if positions is not None and blind:
            raise NeurolocError(f"--positions cannot reach {', '.join(blind)}: its forward passes do not say which "
                                "tokens are padding; leave it out or lesion every position")
        units.check_compatible(lm.layout, lm.identity)
        if self.sizes and localizer is None:
            raise NeurolocError("--sizes re-selects units from localizer scores: pass a `neuroloc localize` output")
        data_kwargs = dict(inputs.intervention_data or {})
        if localizer is not None:
            data_kwargs.setdefault("means", localizer.means_)
        needed = intervention.method.data
        if needed is not None and needed not in data_kwargs:
            if needed == "means":
                raise NeurolocError("lesion mode 'mean' needs the unit means stored by `neuroloc localize`")
            raise NeurolocError(f"lesion mode {intervention.kind!r} needs per-site {needed}: pass "
                                f"intervention_data={{{needed!r}: ...}} (Python API)")
        controls = ControlData(magnitudes=unit_magnitudes(localizer), scores=np.asarray(localizer.t_)) \
            if localizer is not None else ControlData()
        sizes = [(p, localizer.select(percent=p)) for p in self.sizes] if self.sizes else [(np.nan, units)]
        plan = [PlannedCondition({"condition": "intact", "seed": 0, "percent": np.nan}, None)]
        for percent, target in sizes:
            plan += [PlannedCondition({"condition": c, "seed": s, "percent": percent}, u) for c, s, u in
                     lesion_conditions(target, n_controls=self.n_controls, control_kinds=self.control_kinds,
                                       seed=self.seed, data=controls)]
        frames = evaluate_plan(lm, ctx, plan, inputs.benchmarks, intervention=intervention, positions=positions,
                               data=data_kwargs, key={"study": self.identity(), "units": inputs.source})
        results = pd.concat(frames, ignore_index=True)[RESULT_COLUMNS + ["n_units"]]
        return LesionResult(config=self, model=dict(lm.identity), results=results, inputs=inputs,
                            intervention=str(intervention), positions=positions, world_size=ctx.dist.world_size)


@dataclass
class LesionResult(StudyResult):
    """Every condition's benchmark rows (`results`) and the summary against the controls."""

    results: pd.DataFrame = None
    inputs: LesionInputs = None
    intervention: str = ""
    positions: Any = None
    world_size: int = 1

    def __post_init__(self) -> None:
        self.table = summarize(self.results)
        sizes = sorted(self.results.percent.dropna().unique())
        largest = sizes[-1] if len(sizes) > 1 else None
        self.figures = {"lesion": plot_lesion(self.results, percent=largest)}
        if len(sizes) > 1:
            self.figures["dose_response"] = plot_dose_response(self.results)
        self.summary = {"n_conditions": int(self.results.groupby(["condition", "seed", "percent"], dropna=False)
                                            .ngroups), "n_rows": len(self.results)}

    def write(self, folder: Path) -> None:
        self.results.to_csv(folder / "results.csv", index=False)
        self.table.to_csv(folder / "summary.csv", index=False)
        for name, figure in self.figures.items():
            save_figure(figure, folder / f"{name}.png")

    def manifest_sections(self) -> dict[str, Any]:
        localizer = self.inputs.localizer
        return {"units": {"n_units": len(self.inputs.units), "model": self.inputs.units.model, **self.inputs.source,
                          "localizer": localizer.stimuli_ if localizer is not None else None},
                "scoring": {"bos": self.inputs.settings.bos, "intervention": self.intervention,
                            "positions": self.positions},
                "benchmarks": [{"name": b.name, "source": b.source} for b in self.inputs.benchmarks],
                "world_size": self.world_size}

    def sections(self) -> list[Section]:
        overall = self.table[(self.table.subset == "overall") | (self.table.benchmark == "perplexity")]
        text = (f"Lesion ({self.intervention}) of {self._units_text()} against {self.config.n_controls} "
                f"control set{'s' if self.config.n_controls != 1 else ''} of each kind"
                f"{' per size' if self.results.percent.notna().any() else ''} "
                f"({self._controls_text()}). Effect = (target − control mean) / control sd.")
        sections = [Section("Lesion results", text=text, figures=[self.figures["lesion"]], tables=[overall.round(4)])]
        if "dose_response" in self.figures:
            sections.append(Section("Dose–response", text="Each size re-selected from the same localizer scores.",
                                    figures=[self.figures["dose_response"]]))
        return sections

    def _units_text(self) -> str:
        """The lesioned units as the options chose them: the set given, or one re-selection per size."""
        target = self.results[self.results.condition == "target"].dropna(subset=["percent"])
        sizes = target.groupby("percent").n_units.first().to_dict()
        if not sizes:
            n = len(self.inputs.units)
            return f"{n} unit{'' if n == 1 else 's'}"
        return "the units at each size (" + ", ".join(
            f"{percent:g}%: {n} unit{'' if n == 1 else 's'}" for percent, n in sorted(sizes.items())) + ")"

    def _controls_text(self) -> str:
        match = {"random": "random: the same count per layer and site",
                 "magnitude": "magnitude: similar mean |activation|, the same count per layer and site"}
        return "; ".join(match.get(kind, kind) for kind in self.config.control_kinds)

    def headline(self) -> str:
        return f"{len(self.results)} result rows"


def run_lesion_study(lm: LoadedModel, units: UnitSet, benchmarks: Sequence[Benchmark], out_dir: str | Path, *,
                     localizer: Localizer | None = None, percents: Sequence[float] | None = None,
                     mode: str = "zero", n_controls: int = 5, control_kinds: Sequence[str] = ("random",),
                     seed: int = 0, progress: bool = True, extra_parameters: dict | None = None,
                     intervention_data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                     positions=None, dist: DistContext | None = None) -> pd.DataFrame:
    """Deprecated (use `neuroloc.run(LesionConfig(...), out)`): the lesion study on in-memory units and
    built benchmarks, written into `out_dir` through the runner. Returns the results table."""
    warnings.warn("run_lesion_study is deprecated; use neuroloc.run(neuroloc.LesionConfig(...), out)",
                  DeprecationWarning, stacklevel=2)
    settings = RunSettings(progress=progress)
    settings = settings.replace(bos=localizer.bos) if localizer is not None else settings
    config = LesionConfig(units="in-memory", mode=mode, positions=positions, benchmarks=(), n_controls=n_controls,
                          control_kinds=tuple(control_kinds), sizes=tuple(percents) if percents else None, seed=seed,
                          settings=settings, model=lm.identity.get("spec", "in-memory"))
    if percents and localizer is None:
        raise NeurolocError("--percent re-selects units from localizer scores: pass a `neuroloc localize` output")
    inputs = LesionInputs(units, localizer, list(benchmarks), settings, dict(intervention_data or {}))
    return run(config, out_dir, lm=lm, inputs=inputs, options=RunOptions(overwrite=True)).results
