"""`neuroloc run language`: the paper end to end — localize the language network, lesion it against
random and magnitude-matched controls at several sizes, and write a self-contained HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..evaluate.controls import summarize
from ..io import atomic_write_json, build_manifest, staged_output
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..report.figures import plot_dose_response, plot_lesion, plot_layer_distribution
from ..report.html import Section, write_report
from ..stimuli.base import StimulusSet
from .lesion import Benchmark, run_lesion_study
from .localize import layer_table, run_localize


def run_language(lm: LoadedModel, stimuli: StimulusSet, benchmarks: Sequence[Benchmark], out_dir: str | Path, *,
                 localizer: Localizer, percents: Sequence[float], n_controls: int, mode: str = "zero",
                 seed: int = 0, progress: bool = True, parameters: dict | None = None) -> Path:
    """Run the whole study into `out_dir` (localize/, lesion/, report.html, manifest.json)."""
    out = Path(out_dir)
    started = time.perf_counter()
    run_localize(lm, stimuli, localizer, out / "localize", seed=seed, extra_parameters=parameters)
    localized = time.perf_counter()
    results = run_lesion_study(
        lm, localizer.select(percent=max(percents)), benchmarks, out / "lesion", localizer=localizer,
        percents=percents, mode=mode, n_controls=n_controls, control_kinds=("random", "magnitude"), seed=seed,
        progress=progress, extra_parameters=parameters)
    finished = time.perf_counter()
    summary = summarize(results)
    overall = summary[(summary.subset == "overall") | (summary.benchmark == "perplexity")]
    timings = {"localize_s": round(localized - started, 1), "lesion_s": round(finished - localized, 1)}
    manifest = build_manifest("run language", {**localizer.get_params(), "percents": list(percents),
                                               "n_controls": n_controls, "mode": mode, "seed": seed,
                                               **(parameters or {})},
                              model=lm.identity, stimuli=localizer.stimuli_,
                              benchmarks=[{"name": b.name, "source": b.source} for b in benchmarks],
                              timings=timings)
    counts = layer_table(localizer)
    largest = max(percents)
    sections = [
        Section("Where the language units are",
                text=(f"Top {largest:g}% of {localizer.site} units by Welch t (sentences > non-words, "
                      f"{localizer.pooling}-token pooling), selected across all layers."),
                figures=[plot_layer_distribution(pd.DataFrame(localizer.select(percent=largest).per_layer_counts()),
                                                 title=f"Language-selective units per layer (top {largest:g}%)")],
                tables=[counts.groupby("site")[["n_units", "n_selected"]].sum().reset_index()]),
        Section("Lesion results",
                text=(f"Zeroing the language units ({mode}) vs. {n_controls} random and {n_controls} "
                      "magnitude-matched control sets of the same size per layer. Effect = (target − control "
                      "mean) / control sd."),
                figures=[plot_lesion(results, percent=largest if len(percents) > 1 else None)],
                tables=[overall.round(4)]),
    ]
    if len(percents) > 1:
        sections.append(Section("Dose–response", text="Each size re-selected from the same localizer scores.",
                                figures=[plot_dose_response(results)]))
    with staged_output(out) as staging:
        atomic_write_json(staging / "manifest.json", manifest)
        write_report(staging / "report.html", f"The language network of {lm.identity.get('spec')}", sections,
                     manifest=manifest)
    return out / "report.html"
