"""`neuroloc run language`: the paper end to end — localize the language network, lesion it against
random and magnitude-matched controls at several sizes, and write a self-contained HTML report.

Stages: `localize_stage` (writes localize/) → `lesion_stage` (writes lesion/) → with recordings,
`align_stage` (writes align/) → `write_language_report` (report.html, manifest.json), configured by one
`LanguageConfig`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..align.alignment import AlignmentResult
from ..errors import NeurolocError
from ..evaluate.benchmark import Benchmark
from ..evaluate.controls import summarize
from ..io import atomic_write_json, build_manifest, staged_output
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..record.distributed import DistContext
from ..report.figures import plot_dose_response, plot_lesion, plot_layer_distribution
from ..report.html import Section, write_report
from ..stimuli.base import StimulusSet
from .align import align, alignment_section
from .lesion import run_lesion_study
from .localize import layer_table, run_localize

__all__ = ["LanguageConfig", "align_stage", "lesion_stage", "localize_stage", "run_language", "write_language_report"]


@dataclass(frozen=True)
class LanguageConfig:
    """What `run_language` does: lesion sizes (`percents` of units, re-selected from one localizer
    fit), `n_controls` control sets per kind and size, the lesion `mode`, the control kinds, the first
    control seed, extra `parameters` recorded in the manifests, and optionally brain `recordings` (a path,
    table or DataArray; see `neuroloc.align`) that the language units are aligned with, against
    `align_controls` matched random unit sets (`align_options` go to `score_alignment`)."""

    percents: Sequence[float] = (0.25, 0.5, 1.0)
    n_controls: int = 2
    mode: str = "zero"
    control_kinds: Sequence[str] = ("random", "magnitude")
    seed: int = 0
    progress: bool = True
    parameters: dict = field(default_factory=dict)
    recordings: Any = None
    align_controls: int = 10
    align_options: dict = field(default_factory=dict)

    def check(self) -> None:
        if not self.percents:
            raise NeurolocError("percents is empty: give at least one lesion size (percent of units)")
        if isinstance(self.n_controls, bool) or not isinstance(self.n_controls, int) or self.n_controls < 1:
            raise NeurolocError(f"n_controls must be an int >= 1, got {self.n_controls!r}")

    def manifest_parameters(self, localizer: Localizer) -> dict:
        return {**localizer.get_params(), "percents": list(self.percents), "n_controls": self.n_controls,
                "mode": self.mode, "control_kinds": list(self.control_kinds), "seed": self.seed,
                **(self.parameters or {})}


def localize_stage(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out: Path,
                   config: LanguageConfig) -> Localizer:
    """Stage 1: fit the localizer on the language stimuli and write `out/localize/`."""
    return run_localize(lm, stimuli, localizer, out / "localize", seed=config.seed, extra_parameters=config.parameters)


def lesion_stage(lm: LoadedModel, localizer: Localizer, benchmarks: Sequence[Benchmark], out: Path,
                 config: LanguageConfig) -> pd.DataFrame:
    """Stage 2: lesion the units at every size against matched controls and write `out/lesion/`."""
    return run_lesion_study(
        lm, localizer.select(percent=max(config.percents)), benchmarks, out / "lesion", localizer=localizer,
        percents=list(config.percents), mode=config.mode, n_controls=config.n_controls,
        control_kinds=tuple(config.control_kinds), seed=config.seed, progress=config.progress,
        extra_parameters=config.parameters)


def align_stage(lm: LoadedModel, localizer: Localizer, out: Path, config: LanguageConfig) -> AlignmentResult:
    """Stage 3 (with recordings): align the largest unit set with the recordings against matched random
    sets, per layer too, and write `out/align/`."""
    units = localizer.select(percent=max(config.percents))
    options = {"layers": "all", "bos": localizer.bos, "progress": config.progress, **config.align_options}
    return align(lm, config.recordings, units, controls=config.align_controls, out=out / "align",
                 extra_parameters=config.parameters, **options)


def write_language_report(lm: LoadedModel, localizer: Localizer, benchmarks: Sequence[Benchmark],
                          results: pd.DataFrame, out: Path, config: LanguageConfig, timings: dict,
                          alignment: AlignmentResult | None = None) -> Path:
    """Stage 3: the manifest and a self-contained report.html in `out`."""
    summary = summarize(results)
    overall = summary[(summary.subset == "overall") | (summary.benchmark == "perplexity")]
    manifest = build_manifest("run language", config.manifest_parameters(localizer), model=lm.identity,
                              stimuli=localizer.stimuli_,
                              benchmarks=[{"name": b.name, "source": b.source} for b in benchmarks],
                              timings=timings)
    counts = layer_table(localizer)
    largest = max(config.percents)
    controls = " and ".join(f"{config.n_controls} {kind}" for kind in config.control_kinds)
    sections = [
        Section("Where the language units are",
                text=(f"Top {largest:g}% of {localizer.site} units by Welch t (sentences > non-words, "
                      f"{localizer.pooling}-token pooling), selected across all layers."),
                figures=[plot_layer_distribution(pd.DataFrame(localizer.select(percent=largest).per_layer_counts()),
                                                 title=f"Language-selective units per layer (top {largest:g}%)")],
                tables=[counts.groupby("site")[["n_units", "n_selected"]].sum().reset_index()]),
        Section("Lesion results",
                text=(f"Lesioning the language units ({config.mode}) vs. {controls} control sets of the same size "
                      "per layer. Effect = (target − control mean) / control sd."),
                figures=[plot_lesion(results, percent=largest if len(config.percents) > 1 else None)],
                tables=[overall.round(4)]),
    ]
    if len(config.percents) > 1:
        sections.append(Section("Dose–response", text="Each size re-selected from the same localizer scores.",
                                figures=[plot_dose_response(results)]))
    if alignment is not None:
        sections.append(alignment_section(alignment))
    with staged_output(out) as staging:
        atomic_write_json(staging / "manifest.json", manifest)
        write_report(staging / "report.html", f"The language network of {lm.identity.get('spec')}", sections,
                     manifest=manifest)
    return out / "report.html"


def run_language(lm: LoadedModel, stimuli: StimulusSet, benchmarks: Sequence[Benchmark], out_dir: str | Path,
                 config: LanguageConfig | None = None, *, localizer: Localizer | None = None,
                 **options) -> Path:
    """Run the whole study into `out_dir` (localize/, lesion/, report.html, manifest.json).

    `config` is a `LanguageConfig`; keyword `options` override its fields (`percents=[0.5, 1]`). The
    `localizer` (default: residual units, last-token pooling) is fitted once; every lesion size is
    re-selected from its scores. Under torchrun the ranks share the stimuli, then the lesion conditions;
    rank 0 aligns and writes the report. Returns the report's path.
    """
    try:
        config = replace(config or LanguageConfig(), **options)
    except TypeError as error:
        raise NeurolocError(f"run_language: {error}; the options are LanguageConfig's fields") from None
    config.check()
    localizer = localizer if localizer is not None else Localizer("residual", pooling="last",
                                                                  percent=max(config.percents))
    out = Path(out_dir)
    started = time.perf_counter()
    localize_stage(lm, stimuli, localizer, out, config)
    localized = time.perf_counter()
    results = lesion_stage(lm, localizer, benchmarks, out, config)
    finished = time.perf_counter()
    timings = {"localize_s": round(localized - started, 1), "lesion_s": round(finished - localized, 1)}
    ctx = DistContext.from_env()
    if ctx.is_main:
        alignment = None
        if config.recordings is not None:
            alignment = align_stage(lm, localizer, out, config)
            timings["align_s"] = round(time.perf_counter() - finished, 1)
        write_language_report(lm, localizer, benchmarks, results, out, config, timings, alignment)
    ctx.barrier()
    return out / "report.html"
