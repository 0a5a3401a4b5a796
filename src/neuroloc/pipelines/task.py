"""`neuroloc task`: task neurons (relations, knowledge, culture, skills) from labelled prompt–answer data.

1. Split the items into identification and held-out test items (the file's `split` column, else a
   stable hash) and score the intact model on the test items (accuracy, log p(answer | prompt)).
2. Score every unit for every label on the identification items: `ap` (average precision of the
   pooled activation, one label vs the rest; Liu et al. 2025; ties broken by the Welch t), `contrast` (one-vs-rest Welch t),
   `gradxact` or `ig` (attribution of log p(answer | prompt) with the culture-neuron recipe: control
   mean subtracted, nuisance top units removed, z-score across labels ≥ z₀). Keep each label's top k.
3. The class × class effect matrix: intervene on each label's units (each mode: suppress `scale:0`,
   enhance `scale:2`, `value` = each unit's median on the label's identification prompts, …) and
   score every label's test items, with random units of the same count per layer for every row;
   dose–response over k; the general-ability guard (perplexity on held-out text, BLiMP).

Outputs: units/ (`LabeledUnits`), scores.parquet, intact.csv, answers.csv, effects.csv,
effect_summary.csv, dose_response.csv, guard.csv, figures, report.html and manifest.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from ..evaluate.answers import answer_accuracy, score_answers
from ..io import atomic_write_json, atomic_write_with, build_manifest, staged_output
from ..lesion import Intervention
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..report.figures import plot_layer_distribution, save_figure
from ..report.html import Section, write_report
from ..report.task_figures import (effect_table, plot_accuracy, plot_effect_matrix, plot_guard,
                                   plot_task_dose_response)
from ..stimuli.prompts import IDENTIFICATION, TEST, PromptSet
from ..studies.tasks.culnig import ATTRIBUTION_SCORES, attribution_means, culnig_select
from ..studies.tasks.effects import EFFECT_COLUMNS, dose_response, effect_matrix, general_guard
from ..studies.tasks.scores import (ACTIVATION_SCORES, activation_contrast_scores, average_precision_scores,
                                    prompt_features)
from ..units import LabeledUnits, UnitSet

__all__ = ["TASK_SCORES", "TaskResult", "run_task"]

TASK_SCORES = ACTIVATION_SCORES + ATTRIBUTION_SCORES


@dataclass
class TaskResult:
    """What `run_task` found; `summary` holds the headline numbers (also in manifest.json)."""

    out_dir: Path
    units: LabeledUnits
    intact: pd.DataFrame
    effects: pd.DataFrame
    dose: pd.DataFrame
    guard: pd.DataFrame
    summary: dict


def _unit_frame(sites: list[Site], widths: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "unit": [f"{s.name}[{i}]" for s, w in zip(sites, widths) for i in range(w)],
        "site": np.concatenate([[s.kind] * w for s, w in zip(sites, widths)]),
        "layer": np.concatenate([[s.layer] * w for s, w in zip(sites, widths)]),
        "index": np.concatenate([np.arange(w) for w in widths]),
    })


def _label_values(features: np.ndarray, items: PromptSet, sites: list[Site], widths: list[int]
                  ) -> dict[str, dict[str, torch.Tensor]]:
    """Per label and site, each unit's median pooled activation on the label's identification prompts."""
    out = {}
    for label in items.label_names:
        median = np.median(features[items.indices(label)], axis=0)
        out[label] = {s.name: torch.from_numpy(part.astype(np.float32))
                      for s, part in zip(sites, np.split(median, np.cumsum(widths)[:-1]))}
    return out


def run_task(
    lm: LoadedModel,
    data: PromptSet,
    out_dir: str | Path,
    *,
    score: str = "ap",
    k: int = 100,
    bottom_k: int = 0,
    modes: Sequence[str] = ("scale:0", "scale:2"),
    site: str = "mlp",
    pooling: str = "last",
    control: PromptSet | None = None,
    nuisance: PromptSet | None = None,
    nuisance_percent: float = 1.0,
    z0: float | None = None,
    reduce: str = "max",
    weight_by_p: bool = False,
    steps: int = 16,
    n_random: int = 2,
    dose_ks: Sequence[int] | None = None,
    guard_texts: Sequence[str] | None = None,
    blimp=None,
    guard_random: int = 1,
    max_identification: int | None = None,
    max_test: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    bos: str = "prepend",
    progress: bool = False,
    sources: dict | None = None,
    extra_parameters: dict | None = None,
) -> TaskResult:
    """Localize each label's units on the identification items and test them causally on held-out ones.

    `bottom_k` (ap, contrast) adds each label's units whose activation drops most for it.
    `max_identification` / `max_test` keep the first N items per label of each split (control and
    nuisance sets: their identification items, as many per label); `dose_ks`
    (default k/4, k/2, k, 2k) run with the first mode and one random set; `guard_texts` (perplexity)
    and `blimp` (pairs from `load_blimp`) are optional. `sources` (e.g. package versions of the
    built-in relation data) go into the manifest.
    """
    started = time.perf_counter()
    if score not in TASK_SCORES:
        raise NeurolocError(f"unknown task score {score!r}; choose one of {', '.join(TASK_SCORES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeurolocError(f"k must be an int >= 1, got {k!r}")
    if bottom_k and score not in ACTIVATION_SCORES:
        raise NeurolocError(f"bottom_k works with the activation scores ({', '.join(ACTIVATION_SCORES)}), not {score!r}")
    modes = [str(Intervention.parse(m)) for m in modes]
    sites = lm.layout.sites([kind.strip() for kind in site.split(",")])
    widths = [lm.layout.width(s.kind) for s in sites]
    if "value" in modes and any(s.kind == "attn" for s in sites):
        raise NeurolocError("mode 'value' sets units to activation values; attention heads are recorded as output "
                            "norms, so use it with mlp or mlp_gate sites only")
    ident = data.split(IDENTIFICATION).limit(max_identification)
    test = data.split(TEST).limit(max_test)
    ident.check_labels(2)
    test.check_labels(1)
    if set(ident.label_names) != set(test.label_names):
        raise NeurolocError(f"{data.name}: labels {sorted(set(ident.label_names) ^ set(test.label_names))} are in only "
                            "one split; every label needs identification and test items")
    labels = ident.label_names

    answers = score_answers(lm, test, batch_size=batch_size, bos=bos, progress=progress)
    intact = answer_accuracy(answers)

    units_table = _unit_frame(sites, widths)
    features = None
    if score in ACTIVATION_SCORES or "value" in modes:
        features = prompt_features(lm, ident.prompts, sites, pooling=pooling, batch_size=batch_size, bos=bos,
                                   progress=progress)
    extra_columns: dict[str, np.ndarray] = {}
    completeness = None
    if score in ACTIVATION_SCORES:
        fn = average_precision_scores if score == "ap" else activation_contrast_scores
        values = fn(features, ident.labels, labels)
        # AP saturates at 1 for every unit that separates a label perfectly (e.g. one template per label):
        # ties are broken by the one-vs-rest Welch t, then by the lower index
        ties = activation_contrast_scores(features, ident.labels, labels) if score == "ap" else values
        rankings = {label: np.lexsort((np.arange(values.shape[1]), -ties[r], -values[r]))
                    for r, label in enumerate(labels)}
        if score == "ap":
            extra_columns["t"] = ties
        if bottom_k:  # units whose activation DROPS for the label: the same score of the negated activation
            below = fn(-features, ident.labels, labels) if score == "ap" else -values
            extra_columns["score_negative"] = below
            low = {label: np.lexsort((np.arange(below.shape[1]), -below[r]))[:bottom_k]
                   for r, label in enumerate(labels)}
    else:
        options = dict(method=score, reduce=reduce, weight_by_p=weight_by_p, steps=steps, batch_size=batch_size,
                       bos=bos, progress=progress)
        means = attribution_means(lm, ident, sites, **options)
        control = control.split(IDENTIFICATION).limit(max_identification) if control is not None else None
        nuisance = nuisance.split(IDENTIFICATION).limit(max_identification) if nuisance is not None else None
        completeness = means.completeness.summary() if means.completeness is not None else None
        control_mean = attribution_means(lm, control, sites, **options).overall() if control is not None else None
        nuisance_mean = attribution_means(lm, nuisance, sites, **options).overall() if nuisance is not None else None
        largest = max([k, *(dose_ks or [2 * k])])
        rankings, tables = culnig_select(means.means, labels, largest, control=control_mean, nuisance=nuisance_mean,
                                         nuisance_percent=nuisance_percent, z0=z0)
        values = tables["score"]
        extra_columns = {"z": tables["z"], "nuisance": np.broadcast_to(tables["nuisance"], values.shape)}

    def make_units(indices: np.ndarray) -> UnitSet:
        return UnitSet.from_flat(np.asarray(indices, dtype=np.int64), sites, widths, model=lm.identity)

    selected = {label: rankings[label][:k] for label in labels}
    if bottom_k and score in ACTIVATION_SCORES:
        selected = {label: np.concatenate([top, np.setdiff1d(low[label], top)]) for label, top in selected.items()}
    empty = [label for label in labels if len(selected[label]) == 0]
    if empty:
        raise NeurolocError(f"no units pass the selection for labels {empty}; lower --z0 or --nuisance-percent")
    units = LabeledUnits({label: make_units(selected[label]) for label in labels})
    unit_values = _label_values(features, ident, sites, widths) if "value" in modes else None

    effects = effect_matrix(lm, units.sets, test, modes=modes, n_random=n_random, seed=seed, values=unit_values,
                            intact=intact, batch_size=batch_size, progress=progress)
    ks = sorted(set(dose_ks if dose_ks is not None else [max(1, k // 4), max(1, k // 2), k, 2 * k]))
    dose = dose_response(lm, rankings, make_units, test, ks, mode=modes[0], n_random=1, seed=seed,
                         values=unit_values, intact=intact, batch_size=batch_size, progress=progress) if ks else \
        pd.DataFrame(columns=EFFECT_COLUMNS + ["k"])
    guard = general_guard(lm, units.sets, texts=guard_texts, blimp=blimp, modes=modes, n_random=guard_random,
                          seed=seed, values=unit_values, batch_size=batch_size, progress=progress)

    frames = []
    for r, label in enumerate(labels):
        frame = units_table.assign(label=label, score=values[r], selected=units[label].flat_mask().numpy())
        for name, table in extra_columns.items():
            frame[name] = table[r]
        frames.append(frame)
    scores = pd.concat(frames, ignore_index=True)
    summaries = {mode: {metric: effect_table(effects, mode, metric) for metric in ("delta_accuracy", "delta_logprob")}
                 for mode in modes}
    summary = {
        "intact_accuracy": dict(zip(intact["label"], intact["accuracy"].round(4))),
        "n_units": {label: len(u) for label, u in units.items()},
        "diagonal_minus_random": {mode: {label: round(float(t["delta_accuracy"].loc[label, label]), 4)
                                         for label in labels} for mode, t in summaries.items()},
        "ig_completeness": completeness,
        "seconds": round(time.perf_counter() - started, 1),
    }
    parameters = {"score": score, "k": k, "bottom_k": bottom_k, "modes": modes, "site": site, "pooling": pooling,
                  "nuisance_percent": nuisance_percent, "z0": z0, "reduce": reduce, "weight_by_p": weight_by_p,
                  "steps": steps, "n_random": n_random, "dose_ks": ks, "guard_random": guard_random,
                  "max_identification": max_identification, "max_test": max_test, "batch_size": batch_size,
                  "seed": seed, "bos": bos, "labels": labels, **(extra_parameters or {})}
    manifest = build_manifest("task", parameters, model=dict(lm.identity),
                              data={"name": data.name, "sha256": data.content_hash(), "n_items": len(data),
                                    "n_identification": len(ident), "n_test": len(test),
                                    "control": control.content_hash() if control is not None else None,
                                    "nuisance": nuisance.content_hash() if nuisance is not None else None,
                                    "guard_texts": len(guard_texts or []), "sources": sources or {}},
                              summary=summary)
    out = Path(out_dir)
    with staged_output(out) as stage:
        units.save(stage / "units")
        atomic_write_with(stage / "scores.parquet", lambda p: scores.to_parquet(p, index=False))
        intact.to_csv(stage / "intact.csv", index=False)
        answers.assign(prompt=test.prompts, answer=test.answers).to_csv(stage / "answers.csv", index=False)
        effects.to_csv(stage / "effects.csv", index=False)
        rows = [t.stack().rename("value").reset_index().assign(mode=mode, metric=metric)
                for mode, by in summaries.items() for metric, t in by.items()]
        pd.concat(rows, ignore_index=True).to_csv(stage / "effect_summary.csv", index=False)
        dose.to_csv(stage / "dose_response.csv", index=False)
        guard.to_csv(stage / "guard.csv", index=False)
        figures = {"accuracy.png": plot_accuracy(intact)}
        for mode in modes:
            figures[f"effects_{mode.replace(':', '')}.png"] = plot_effect_matrix(effects, mode)
        if not dose.empty:
            figures["dose_response.png"] = plot_task_dose_response(dose)
        if not guard.empty:
            figures["guard.png"] = plot_guard(guard)
        figures["layers.png"] = plot_layer_distribution(units.per_layer_counts(), "Selected units per layer",
                                                        group="label")
        sections = [Section("Intact model", f"Accuracy per label on {len(test)} held-out items.", [figures["accuracy.png"]],
                            [intact.round(3)])]
        for mode in modes:
            sections.append(Section(f"Effect matrix: {mode}", "Change in accuracy when each label's units are "
                                    "intervened on, minus the mean change with random units of the same count per layer.",
                                    [figures[f"effects_{mode.replace(':', '')}.png"]],
                                    [summaries[mode]["delta_logprob"].round(3)],
                                    caption="Table: the same for mean log p(answer | prompt)."))
        if "dose_response.png" in figures:
            sections.append(Section("Dose–response", None, [figures["dose_response.png"]]))
        if "guard.png" in figures:
            sections.append(Section("General-ability guard", "Perplexity on held-out text and BLiMP accuracy under "
                                    "each intervention.", [figures["guard.png"]]))
        sections.append(Section("Units", None, [figures["layers.png"]], [units.overlap()]))
        for name, fig in figures.items():
            save_figure(fig, stage / name)
        write_report(stage / "report.html", f"Task neurons: {data.name}", sections, manifest)
        atomic_write_json(stage / "manifest.json", manifest)
    return TaskResult(out, units, intact, effects, dose, guard, summary)
