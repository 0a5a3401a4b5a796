"""`neuroloc align`: score units against brain recordings and write tables, figures, a manifest and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..align.alignment import AlignmentResult, score_alignment
from ..io import atomic_write_json, atomic_write_with, build_manifest, file_sha256, staged_output
from ..models.loading import LoadedModel
from ..report.align_figures import plot_alignment_controls, plot_alignment_layers
from ..report.figures import save_figure
from ..report.html import Section, write_report
from ..units import UnitSet


def alignment_figures(result: AlignmentResult) -> dict[str, Any]:
    """The figures a result supports: `layers` (with --layers) and `units_vs_random` (with controls)."""
    figures = {}
    summary = result.summary
    if (summary.kind == "layer").any():
        figures["layers"] = plot_alignment_layers(summary)
    if (summary.kind == "units").any() and (summary.kind == "random").any():
        figures["units_vs_random"] = plot_alignment_controls(summary)
    return figures


def align(lm: LoadedModel, recordings: Any, units: UnitSet | None = None, *, controls: int = 10,
          out: str | Path | None = None, extra_parameters: dict | None = None, **options: Any) -> AlignmentResult:
    """Cross-validated brain alignment of `units` (see `neuroloc.align.score_alignment` for options),
    with figures attached; with `out`, also writes scores.csv, summary.csv, by_roi.csv, ceiling.csv,
    neuroids.parquet, the figures, manifest.json and report.html (all or nothing)."""
    result = score_alignment(lm, recordings, units, controls=controls, **options)
    result.figures = alignment_figures(result)
    if out is not None:
        write_alignment(result, out, lm, recordings=recordings, extra_parameters=extra_parameters)
    return result


def _headline(result: AlignmentResult) -> str:
    summary = result.summary.set_index("features")
    rec = result.recordings
    lines = [f"{rec['n_stimuli']} stimuli in {rec['n_groups']} passages/stories, {rec['n_neuroids']} neuroids from "
             f"{len(rec['subjects'])} subject(s); {result.parameters['metric']} regression, "
             f"{result.parameters['folds']} folds grouped by passage, Pearson r per neuroid, median over neuroids, "
             "mean over folds."]
    if result.ceiling is not None:
        row = result.ceiling.table.iloc[0]
        interval = f" (95% {row.low:.3f}–{row.high:.3f})" if pd.notna(row.low) else ""
        lines.append(f"Ceiling: {row.ceiling:.3f}{interval}; " + "; ".join(result.ceiling.notes or ["extrapolated "
                     "over the number of subjects as in brain-score"]) + ".")
    if "units" in summary.index:
        u = summary.loc["units"]
        text = f"Unit set ({int(u.n_units)} units): r = {u.score:.3f}"
        if pd.notna(u.normalized):
            text += f", normalised {u.normalized:.3f}"
        if pd.notna(u.get("p", float("nan"))):
            text += (f"; random sets of the same size per layer: {u.random_mean:.3f} ± {u.random_sd:.3f}, "
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
    """One report section for a result (the language report adds it when given recordings)."""
    table = result.summary[result.summary.kind != "random"].drop(columns=["seed"]).round(4)
    figures = result.figures or alignment_figures(result)
    return Section("Brain alignment", text=_headline(result), figures=list(figures.values()),
                   tables=[table], caption="Scores are cross-validated; the ceiling is the inter-subject "
                                           "ceiling (or the one given).")


def write_alignment(result: AlignmentResult, out_dir: str | Path, lm: LoadedModel, *, recordings: Any = None,
                    extra_parameters: dict | None = None) -> Path:
    """Write every table, figure, the manifest and an HTML report into `out_dir` (staged, atomic)."""
    data = {}
    if isinstance(recordings, (str, Path)) and Path(recordings).is_file():
        data = {"recordings": str(recordings), "sha256": file_sha256(recordings)}
    manifest = build_manifest("align", {**result.parameters, **(extra_parameters or {})}, model=lm.identity,
                              data=data | {"summary": result.recordings},
                              results={"summary": result.summary.round(6).to_dict(orient="records")})
    with staged_output(out_dir) as staging:
        for name, table in (("scores", result.scores), ("summary", result.summary), ("by_roi", result.by_roi)):
            atomic_write_with(staging / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
        if result.ceiling is not None:
            atomic_write_with(staging / "ceiling.csv", lambda tmp: result.ceiling.table.to_csv(tmp, index=False))
            atomic_write_with(staging / "ceiling_points.csv",
                              lambda tmp: result.ceiling.points.to_csv(tmp, index=False))
        atomic_write_with(staging / "neuroids.parquet", lambda tmp: result.neuroid_scores.to_parquet(tmp, index=False))
        for name, figure in (result.figures or alignment_figures(result)).items():
            save_figure(figure, staging / f"{name}.png")
        atomic_write_json(staging / "manifest.json", manifest)
        write_report(staging / "report.html", f"Brain alignment of {lm.identity.get('spec')}",
                     [alignment_section(result)], manifest=manifest)
    return Path(out_dir)
