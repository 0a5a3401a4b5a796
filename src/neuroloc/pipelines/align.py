"""The align study: score a unit set against brain recordings — cross-validated encoding models against
matched random unit sets, all units, whole layers, confound baselines and the noise ceiling."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..align.alignment import METRICS, AlignmentResult, score_alignment
from ..align.baselines import CONFOUNDS
from ..align.metric import group_folds
from ..align.recordings import Recordings, read_recordings
from ..config import Each, InstanceOf, Interval, Options, param
from ..errors import NeurolocError
from ..io import file_sha256
from ..models.loading import LoadedModel
from ..parse import parse_layers, parse_list
from ..report.align_figures import plot_alignment_controls, plot_alignment_layers
from ..report.figures import save_figure
from ..report.html import Section
from ..runner import RunContext, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..units import UnitSet
from . import fields
from .lesion import read_units, units_folder

__all__ = ["AlignConfig", "AlignInputs", "AlignResult", "align", "alignment_figures", "alignment_section"]


def _ceiling(value: str) -> str | float:
    """`auto`, `none`, or a number in (0, 1]."""
    if value in ("auto", "none"):
        return value
    try:
        number = float(value)
    except ValueError:
        raise NeurolocError(f"expected auto, none or a number in (0, 1], got {value!r}") from None
    if not 0 < number <= 1:
        raise NeurolocError(f"a given ceiling must be in (0, 1], got {number}")
    return number


def _confounds(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else parse_list(text)


@dataclass
class AlignInputs:
    """The recordings (read and checked) and the unit set (or None: layers and all units only)."""

    recordings: Recordings
    units: UnitSet | None
    source: dict


@dataclass(frozen=True, kw_only=True)
class AlignConfig(StudyConfig):
    """Brain alignment: cross-validated encoding scores of a unit set vs matched random units, whole layers,
    confounds and the noise ceiling."""

    command = "align"
    title = "Brain alignment"

    recordings: str = param(..., InstanceOf(str), aliases={"-r": None},
                            help="brain-score netCDF (.nc) or a CSV/TSV/Parquet table.")
    units: str | None = param(None, InstanceOf(str), None, aliases={"-u": None},
                              help="A `neuroloc localize` output or UnitSet folder (default: none; give --layers).")
    units_fold: int | None = fields.units_fold()
    n_controls: int = fields.n_controls(10, help="Random unit sets matched per layer and site (the null).")
    layers: str | tuple[int, ...] | None = param(None, Options(["all"]), Each(Interval(int, 0, None)), None,
                                                 parse=parse_layers, help="Score whole layers too: all, or e.g. 10,20.")
    site: tuple[str, ...] = fields.sites(help="Site kinds for --layers without --units.")
    pooling: str = fields.pooling(choices=("last", "mean"), help="last (brain-score) or mean over the stimulus's "
                                                                 "tokens.")
    context: bool = param(True, InstanceOf(bool),
                          help="Read each stimulus after the preceding stimuli of its passage (--no-context: alone).")
    max_context: int | None = param(None, Interval(int, 0, None), None, help="Read at most N preceding stimuli.")
    metric: str = param("ridge", Options(METRICS), help="ridge (penalty by leave-one-out) or linear.")
    alpha_per_target: bool = param(False, InstanceOf(bool), help="One ridge penalty per neuroid.")
    folds: int = param(10, Interval(int, 2, None), help="Cross-validation folds, grouped by passage/story.")
    ceiling: str | float = param("auto", Options(("auto", "none")), Interval(float, 0, 1, closed="right"),
                                 parse=_ceiling, help="auto (inter-subject), none, or a number in (0, 1].")
    ceiling_subsets: int = param(10, Interval(int, 1, None), help="Subject subsets per pool size (brain-score: 10).")
    ceiling_holdouts: int = param(5, Interval(int, 1, None), help="Held-out subjects per subset (brain-score: 5).")
    confounds: tuple[str, ...] = param(("position", "length"), Each(Options(CONFOUNDS), empty=True),
                                       parse=_confounds, help="Confound baselines, or none.")
    text_column: str | None = param(None, InstanceOf(str), None, help="Default: text, stimulus or sentence.")
    group_column: str | None = param(None, InstanceOf(str), None, help="Default: story, passage, … if present.")
    subject_column: str | None = param(None, InstanceOf(str), None, help="Default: subject, … if present.")
    roi_column: str | None = param(None, InstanceOf(str), None, help="Long tables; default: roi, froi_area, …")
    response_columns: tuple[str, ...] | None = param(None, Each(InstanceOf(str)), None, parse=parse_list,
                                                     help="Default: every numeric column.")
    strict: bool = param(False, InstanceOf(bool), help="Refuse NaN responses instead of dropping them.")

    def check(self) -> None:
        super().check()
        if self.units is None and not self.layers:
            raise NeurolocError("give --units (a unit set to score) or --layers (whole layers), or both")
        if self.units_fold is not None and self.units is None:
            raise NeurolocError("--fold picks the units of one fold of a localize output: give --units too")

    def read_options(self) -> dict[str, Any]:
        options = {"text": self.text_column, "group": self.group_column, "subject": self.subject_column,
                   "roi": self.roi_column, "strict": self.strict}
        if self.response_columns:
            options["response_columns"] = list(self.response_columns)
        return options

    def read_recordings(self) -> tuple[Recordings, dict]:
        """The recordings file, read and checked (columns, enough stimuli and groups for the folds), and a
        record of its source; reading warnings (dropped NaN rows) are kept as notes."""
        path = Path(self.recordings)
        if not path.is_file():
            raise NeurolocError(f"--recordings {path}: no such file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recordings = read_recordings(path, **self.read_options())
        try:
            group_folds(recordings.groups, self.folds, seed=self.seed)
        except NeurolocError as error:
            raise NeurolocError(f"--recordings {path}: {error}") from None
        return recordings, {"recordings": str(path), "sha256": file_sha256(path),
                            "notes": [str(w.message) for w in caught]}

    def load_inputs(self) -> AlignInputs:
        recordings, source = self.read_recordings()
        units = read_units(self.units, self.units_fold)[1] if self.units is not None else None
        if self.units is not None:
            source["units"] = str(units_folder(self.units, self.units_fold))
        return AlignInputs(recordings, units, source)

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: AlignInputs) -> "AlignResult":
        for note in inputs.source.get("notes", []):
            ctx.warn(note)
        if inputs.units is not None:
            inputs.units.check_compatible(lm.layout, lm.identity)
        checkpoint = None
        if ctx.checkpointing:  # the feature rows: a rerun of the same command resumes them
            checkpoint = ctx.checkpoint("features", ctx.key(lm, data=inputs.source.get("sha256") or inputs.recordings.content_hash(),
                                                           study=self.identity()))
        result = score_alignment(
            lm, inputs.recordings, inputs.units, controls=self.n_controls if inputs.units is not None else 0,
            layers=self.layers, site=",".join(self.site), pooling=self.pooling, context=self.context,
            max_context=self.max_context, metric=self.metric, alpha_per_target=self.alpha_per_target,
            folds=self.folds, ceiling=self.ceiling, ceiling_subsets=self.ceiling_subsets,
            ceiling_holdouts=self.ceiling_holdouts, confounds=self.confounds, seed=self.seed,
            batch_size=self.settings.batch_size, bos=self.settings.bos, progress=ctx.progress,
            checkpoint=checkpoint)
        return AlignResult(config=self, model=dict(lm.identity), alignment=result, source=inputs.source,
                           summary={"summary": result.summary.round(6).to_dict(orient="records")})


def alignment_figures(result: AlignmentResult) -> dict[str, Any]:
    """The figures a result supports: `layers` (with --layers) and `units_vs_random` (with controls)."""
    figures = {}
    summary = result.summary
    if (summary.kind == "layer").any():
        figures["layers"] = plot_alignment_layers(summary)
    if (summary.kind == "units").any() and (summary.kind == "random").any():
        figures["units_vs_random"] = plot_alignment_controls(summary)
    return figures


def _headline(result: AlignmentResult) -> str:
    summary = result.summary.set_index("features")
    rec = result.recordings
    n_subjects = len(rec["subjects"])
    lines = [f"{rec['n_stimuli']} stimuli in {rec['n_groups']} passages/stories, {rec['n_neuroids']} neuroid"
             f"{'s' if rec['n_neuroids'] != 1 else ''} from {n_subjects} subject{'s' if n_subjects != 1 else ''}; "
             f"{result.parameters['metric']} regression, {result.parameters['folds']} folds grouped by passage, "
             "Pearson r per neuroid, median over neuroids, mean over folds."]
    if result.ceiling is not None:
        row = result.ceiling.table.iloc[0]
        interval = f" (95% {row.low:.3f}–{row.high:.3f})" if pd.notna(row.low) else ""
        lines.append(f"Ceiling: {row.ceiling:.3f}{interval}; " + "; ".join(result.ceiling.notes or ["extrapolated "
                     "over the number of subjects as in brain-score"]) + ".")
    else:
        lines.append("No ceiling (none given, or a single subject): scores are not normalised.")
    if "units" in summary.index:
        u = summary.loc["units"]
        text = f"Unit set ({int(u.n_units)} unit{'' if int(u.n_units) == 1 else 's'}): r = {u.score:.3f}"
        if pd.notna(u.normalized):
            text += f", normalised {u.normalized:.3f}"
        if pd.notna(u.get("p", float("nan"))):
            spread = f" ± {u.random_sd:.3f}" if pd.notna(u.random_sd) else ""  # one random set has no sd
            text += (f"; random sets of the same size per layer: {u.random_mean:.3f}{spread}, "
                     f"rank {int(u['rank'])} of {int((result.summary.kind == 'random').sum()) + 1}, p = {u.p:.3g}")
        lines.append(text + ".")
    if "all" in summary.index:
        lines.append(f"All {int(summary.loc['all'].n_units)} units: r = {summary.loc['all'].score:.3f}.")
    for name, row in summary[summary.kind == "confound"].iterrows():
        lines.append(f"Confound baseline {name}: r = {row.score:.3f}.")
    for note in rec.get("notes", []):
        lines.append(f"Note: {note}.")
    return "\n".join(lines)


def alignment_section(result: AlignmentResult) -> Section:
    """One report section for an alignment (the language-network report adds it when given recordings)."""
    table = result.summary[result.summary.kind != "random"].drop(columns=["seed"])
    table = table.assign(layer=table.layer.astype("Int64").where(table.layer >= 0)).round(4)
    figures = result.figures or alignment_figures(result)
    caption = ("Scores are cross-validated; normalised by the inter-subject ceiling (or the one given)."
               if result.ceiling is not None else "Scores are cross-validated.")
    return Section("Brain alignment", text=_headline(result), figures=list(figures.values()), tables=[table],
                   caption=caption)


@dataclass
class AlignResult(StudyResult):
    """The alignment's tables and figures."""

    alignment: AlignmentResult = None
    source: dict = None

    def __post_init__(self) -> None:
        self.alignment.figures = alignment_figures(self.alignment)

    def write(self, folder: Path) -> None:
        result = self.alignment
        for name, table in (("scores", result.scores), ("summary", result.summary), ("by_roi", result.by_roi)):
            table.to_csv(folder / f"{name}.csv", index=False)
        if result.ceiling is not None:
            result.ceiling.table.to_csv(folder / "ceiling.csv", index=False)
            result.ceiling.points.to_csv(folder / "ceiling_points.csv", index=False)
        result.neuroid_scores.to_parquet(folder / "neuroids.parquet", index=False)
        for name, figure in result.figures.items():
            save_figure(figure, folder / f"{name}.png")

    def manifest_sections(self) -> dict[str, Any]:
        return {"data": {**(self.source or {}), "summary": self.alignment.recordings},
                "alignment": self.alignment.parameters}

    def sections(self) -> list[Section]:
        return [alignment_section(self.alignment)]

    def headline(self) -> str:
        shown = self.alignment.summary[self.alignment.summary.kind != "random"]
        columns = ["features", "n_units", "score"] + (["normalized"] if shown.normalized.notna().any() else [])
        return shown[columns].to_string(index=False)


def align(lm: LoadedModel, recordings: Any, units: UnitSet | None = None, *, controls: int = 10,
          out: str | Path | None = None, **options: Any) -> AlignmentResult:
    """Cross-validated brain alignment of `units` on `recordings` (a path, table, DataArray or Recordings).

    Options are `AlignConfig`'s fields (`layers="all"`, `folds=5`, `ceiling="none"`, ...; `bos`,
    `batch_size` and `progress` set the run settings). Returns the `AlignmentResult`; with `out`, every
    output is written there through the runner."""
    settings_options = {k: options.pop(k) for k in list(options) if k in ("bos", "batch_size", "progress",
                                                                          "max_tokens")}
    options.pop("extra_parameters", None)
    if options.get("ceiling", "auto") is None:
        options["ceiling"] = "none"
    source = {"recordings": "in memory"}
    if isinstance(recordings, (str, Path)) and Path(recordings).is_file():
        source = {"recordings": str(recordings), "sha256": file_sha256(recordings)}
    config = AlignConfig(model=lm.identity.get("spec", "in-memory"), settings=RunSettings(**settings_options),
                         recordings=source["recordings"], units="in-memory" if units is not None else None,
                         n_controls=controls, **options)
    inputs = AlignInputs(read_recordings(recordings, **config.read_options()), units, source)
    result = run(config, out, lm=lm, inputs=inputs) if out is not None else config.run(lm, inputs=inputs)
    return result.alignment
