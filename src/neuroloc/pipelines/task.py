"""The task study: task neurons (relations, knowledge, culture, skills) from labelled prompt–answer data.

1. Split the items into identification and held-out test items (the file's `split` column, else a
   stable hash) and score the intact model on the test items (accuracy, log p(answer | prompt)).
2. Score every unit for every label on the identification items with a registered score
   (`localize.score_functions.SCORES`, one namespace for every study): `average_precision` (alias `ap`;
   the pooled activation as a classifier of the label, Liu et al. 2025; ties broken by the Welch t),
   `one_vs_rest_welch` (alias `contrast`), or the attribution scores `gradxact` / `ig` (attribution of
   log p(answer | prompt) with the culture-neuron recipe: control mean subtracted, nuisance top units
   removed, z-score across labels ≥ z₀). Activations are recorded into the core's statistics (`Rows`,
   `Moments`), attributions into the `attribution` statistic; the `Localizer` scores and keeps each label's
   top k (one selection rule, `Scores.top`, for every score).
3. The class × class effect matrix: intervene on each label's units (each mode: suppress `scale:0`,
   enhance `scale:2`, `value` = each unit's median on the label's identification prompts, …) and
   score every label's test items, with random units of the same count per layer for every row;
   dose–response over k; the general-ability guard (registered benchmarks, e.g. perplexity, BLiMP).

Every stage runs under the config's run settings (BOS policy, batch size). Outputs: units/ (`LabeledUnits`),
scores.parquet, intact.csv, answers.csv, effects.csv, effect_summary.csv, dose_response.csv, guard.csv and
figures (the runner adds report.html and manifest.json).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Each, Factory, InstanceOf, Interval, Options, Valid, param
from ..errors import NeurolocError
from ..evaluate.answers import answer_accuracy, score_answers
from ..evaluate.benchmark import Benchmark
from ..evaluate.blimp import evaluate_blimp
from ..evaluate.perplexity import evaluate_perplexity
from ..evaluate.registry import BenchmarkSpec
from ..lesion import Intervention
from ..localize.attribution import POSITION_REDUCTIONS, Completeness, record_answer_attributions
from ..localize.attribution_scores import ATTRIBUTION_METHOD, CONTROL, NUISANCE
from ..localize.localizer import Localizer
from ..localize.reliability import Reliability, ReliabilityConfig, assess
from ..localize.score_functions import get_score
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..parse import parse_ints, parse_list
from ..record.checkpoint import collect_resumable
from ..record.collect import KINDS as RECORDED, collect
from ..record.recorder import Recorder
from ..record.stats import StatsStore
from ..report.figures import plot_layer_distribution, save_figure
from ..report.html import Section
from ..report.reliability_figures import reliability_figures
from ..report.task_figures import (effect_table, plot_accuracy, plot_effect_matrix, plot_guard,
                                   plot_task_dose_response)
from ..runner import RunContext, RunOptions, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..stimuli.design import Design
from ..stimuli.prompts import IDENTIFICATION, TEST, PromptSet, load_prompts
from ..studies.tasks.effects import EFFECT_COLUMNS, dose_response, effect_matrix, general_guard
from ..units import LabeledUnits, UnitSet
from . import fields
from .reliability import reliability_field, reliability_line, reliability_section, reliability_summary, write_reliability

__all__ = ["TaskConfig", "TaskInputs", "TaskResult", "run_task"]

_PROMPT_FILES = (".jsonl", ".json", ".csv", ".tsv")


def _is_items(value: str | None) -> bool:
    """`--data` given its old meaning (the prompt–answer data) rather than a data root."""
    return value is not None and (value == "relations" or Path(value).suffix.lower() in _PROMPT_FILES
                                  or Path(value).is_file())


@dataclass(frozen=True, kw_only=True)
class TaskConfig(StudyConfig):
    """Task neurons: score every unit per label of prompt–answer data (relations, knowledge, culture,
    skills), keep each label's top k, and test them causally on held-out items (the label × label effect
    matrix against matched random units, dose–response, a general-ability guard).

    Scores: average_precision (ap), one_vs_rest_welch (contrast) or any score of pooled activations that
    takes a one-vs-rest design; gradxact or ig (attribution with the culture-neuron recipe)."""

    command = "task"
    title = "Task neurons"

    items: str = param("relations", InstanceOf(str),
                       help="'relations' (the built-in relation set) or a JSONL/CSV/TSV prompt–answer file "
                            "(prompt, answer, label; optional split, choices). Formerly --data.")
    data: str | None = fields.data_root()
    score: str = fields.score("average_precision", help="How units are scored per label: average_precision (ap), "
                                                        "one_vs_rest_welch (contrast), welch, cohen_d; or an "
                                                        "attribution score, gradxact or ig.")
    k: int = param(100, Interval(int, 1, None), help="Units per label.")
    bottom_k: int = param(0, Interval(int, 0, None),
                          help="Activation scores: also each label's units whose activation drops most for it.")
    modes: tuple[str, ...] = param(("scale:0", "scale:2"), Each(Valid(Intervention.parse, "an intervention")),
                                   parse=parse_list, flag="--mode",
                                   help="Interventions, comma-separated: scale:0 (suppress), scale:2 (enhance), "
                                        "value (each unit's median on the label's prompts), zero, mean, add:K.")
    site: tuple[str, ...] = fields.sites(("mlp",), help="Site kinds, comma-separated (mlp, mlp_gate, attn); the k "
                                                        "units per label are chosen over all of them together.")
    pooling: str = fields.pooling("last", choices=("last", "mean"),
                                  help="How a prompt's tokens become one activation (activation scores, mode value).")
    control: str | None = param(None, InstanceOf(str), None,
                                help="Attribution scores: a control prompt–answer file whose mean attribution is "
                                     "subtracted (default with --items relations: the relation set's control).")
    nuisance: str | None = param(None, InstanceOf(str), None,
                                 help="Attribution scores: a nuisance prompt–answer file whose top units are removed "
                                      "(default with --items relations: the relation set's nuisance set).")
    nuisance_percent: float = param(1.0, Interval(float, 0, 100), help="Remove the nuisance set's top percent units.")
    z0: float | None = param(None, Interval(float, None, None), None,
                             help="Attribution scores: keep units whose z-score across labels is at least this.")
    reduce: str = param("max", Options(POSITION_REDUCTIONS), help="Attribution over positions: max or sum.")
    weight_by_p: bool = param(False, InstanceOf(bool), help="Weight attributions by p(answer | prompt).")
    steps: int = param(16, Interval(int, 1, None), help="Integrated-gradients steps.")
    n_controls: int = fields.n_controls(2, aliases={"--random-sets": None},
                                        help="Random unit sets (seeds) per label, matched to its units, in the "
                                             "effect matrix and the guard.")
    dose: tuple[int, ...] | None = param(None, Each(Interval(int, 1, None), empty=True), None, parse=parse_ints,
                                         help="Values of k for dose–response, e.g. 25,50,100,200, or none "
                                              "(default: k/4, k/2, k, 2k).")
    max_identification: int | None = param(None, Interval(int, 1, None), None,
                                           help="Items per label to localize on (default: all).")
    max_test: int | None = param(None, Interval(int, 1, None), None, help="Held-out items per label (default: all).")
    benchmarks: tuple[BenchmarkSpec, ...] = fields.benchmarks(
        (), "The general-ability guard: benchmarks scored intact and under every intervention, e.g. "
            "'perplexity:limit=50;blimp:limit=5' (default: none).")
    settings: RunSettings = param(Factory(lambda: RunSettings(batch_size=16)), help="How the model is run.")
    reliability: ReliabilityConfig | None = reliability_field("the identification items (facts)")

    def __post_init__(self) -> None:
        if _is_items(self.data):  # `--data FILE` (its meaning before --data became the data root)
            if self.items != "relations":
                raise NeurolocError(f"--data {self.data} and --items {self.items}: give the prompt–answer data "
                                    "with --items only (--data is the data root)")
            warnings.warn("--data for the prompt–answer data is deprecated; use --items (--data is the data root)",
                          FutureWarning, stacklevel=3)
            object.__setattr__(self, "items", self.data)
            object.__setattr__(self, "data", None)
        super().__post_init__()

    @property
    def attribution(self) -> bool:
        """Whether the score reads attributions (gradxact, ig) rather than activations."""
        return get_score(self.score).needs == ("attribution",)

    def check(self) -> None:
        super().check()
        function = get_score(self.score)
        recorded = set(function.needs) <= {"moments", "rows"}
        if "one_vs_rest" not in function.designs or not (recorded or self.attribution):
            raise NeurolocError(f"score (--score): `neuroloc task` takes a score of pooled prompt activations with a "
                                f"one-vs-rest design (average_precision, one_vs_rest_welch, welch, cohen_d) or an "
                                f"attribution score (gradxact, ig); {self.score} needs {', '.join(function.needs)}")
        function.check_options(self.score_options())
        if self.bottom_k and self.attribution:
            raise NeurolocError(f"bottom_k (--bottom-k) works with activation scores, not {self.score}")
        if self.reliability is not None and self.attribution:
            raise NeurolocError(f"the reliability analyses (--folds, ...) fold recorded activations; {self.score} "
                                "reads attributions: use an activation score (average_precision, one_vs_rest_welch)")
        if not self.attribution and (self.control or self.nuisance):
            raise NeurolocError(f"control (--control) and nuisance (--nuisance) sets are for the attribution scores "
                                f"(gradxact, ig), not {self.score}")
        if self.settings.max_tokens is not None:
            raise NeurolocError("max_tokens (--max-tokens): the task study scores whole prompts with their answers; "
                                "leave it out (shorten long prompts in the data instead)")
        if "value" in {Intervention.parse(m).kind for m in self.modes} and "attn" in self.site:
            raise NeurolocError("modes (--mode): 'value' sets units to activation values; attention heads are "
                                "recorded as output norms, so use it with mlp or mlp_gate sites only")

    def score_options(self) -> dict[str, Any]:
        """The options the score is given (an activation score refuses the attribution recipe's)."""
        options: dict[str, Any] = {} if self.z0 is None else {"z0": self.z0}
        if self.attribution:
            options.update(aggregate="mean", nuisance_percent=self.nuisance_percent)
        return options

    # -- inputs -------------------------------------------------------------------------------------
    def load_inputs(self) -> "TaskInputs":
        sources: dict = {}
        control = load_prompts(self.control) if self.control else None
        nuisance = load_prompts(self.nuisance) if self.nuisance else None
        if self.items == "relations":
            from ..stimuli.relations import load_relations

            relations = load_relations()
            items, sources = relations.prompts, {"relations": relations.versions}
            if self.attribution:  # the relation set's own control and nuisance sets
                control = control if control is not None else relations.control()
                nuisance = nuisance if nuisance is not None else relations.nuisance()
        else:
            items = load_prompts(self.items)
        benchmarks = [spec.build(self.settings, self.data) for spec in self.benchmarks]
        return TaskInputs(items, control, nuisance, benchmarks, sources).limited(self)

    # -- the study ----------------------------------------------------------------------------------
    def localizer(self, **options: Any) -> Localizer:
        """The scorer and selector of this config: k units per label over every site kind together."""
        return Localizer(list(self.site), score=self.score, pooling=self.pooling, count=self.k, per_kind=False,
                         options={**self.score_options(), **options} or None, settings=self.settings)

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: "TaskInputs") -> "TaskResult":
        settings, progress, test = self.settings, ctx.progress, inputs.test
        answers = score_answers(lm, test, batch_size=settings.batch_size, bos=settings.bos, progress=progress)
        intact = answer_accuracy(answers)
        modes = [str(Intervention.parse(m)) for m in self.modes]
        wants_values = any(Intervention.parse(m).kind == "value" for m in modes)
        localizer, units, scores, values, completeness, found = self._select(lm, ctx, inputs, wants_values)

        labels, n_units = list(units.labels), sum(localizer.widths_)
        ks = sorted(set(self.dose if self.dose is not None else
                        [max(1, self.k // 4), max(1, self.k // 2), self.k, 2 * self.k]))
        effects = effect_matrix(lm, units.sets, test, modes=modes, n_random=self.n_controls, seed=self.seed,
                                settings=settings, values=values, intact=intact, progress=progress)
        sizes = {k: _labeled(localizer.select(count=min(k, n_units)), labels).sets for k in ks}
        dose = dose_response(lm, sizes, test, mode=modes[0], n_random=1, seed=self.seed, settings=settings,
                             values=values, intact=intact, progress=progress) if ks else \
            pd.DataFrame(columns=EFFECT_COLUMNS + ["k"])
        guard = general_guard(lm, units.sets, inputs.benchmarks, modes=modes, n_random=self.n_controls,
                              seed=self.seed, values=values, progress=progress)
        return TaskResult(config=self, model=dict(lm.identity), units=units, scores=scores, intact=intact,
                          answers=answers.assign(prompt=test.prompts, answer=test.answers), effects=effects,
                          dose=dose, guard=guard, inputs=inputs, modes=modes, dose_ks=ks, labels=labels,
                          completeness=completeness.summary() if completeness is not None else None,
                          reliability=found, localizer=localizer)

    def _select(self, lm: LoadedModel, ctx: RunContext, inputs: "TaskInputs", wants_values: bool):
        """Record (activations or attributions), score every unit per label and select each label's units:
        (the fitted localizer, the units, the scores table, the values of mode `value` or None, IG's
        completeness or None, the reliability of the selection with --folds or None)."""
        ident = inputs.identification
        labels, sites = ident.label_names, lm.layout.sites(list(self.site))
        stimuli = StimulusSet(ident.name, tuple(ident.prompts), tuple(ident.labels))
        localizer, completeness, found = self.localizer(), None, None
        widths = {s.name: lm.layout.width(s.kind) for s in sites}
        design = Design.one_vs_rest(labels)
        if self.reliability is not None:
            found = self._reliability(lm, ctx, stimuli, localizer, design)
            stats = localizer.stats_
            activations = stats if not wants_values or stats.has("rows") else \
                self._activations(lm, ctx, stimuli, sites, ("rows",))
        elif self.attribution:
            stats, completeness = self._attributions(lm, inputs, sites, ctx.progress)
            activations = self._activations(lm, ctx, stimuli, sites, ("rows",)) if wants_values else None
        else:
            needs = set(localizer.score_function.needs) | ({"rows"} if wants_values else set())
            stats = activations = self._activations(lm, ctx, stimuli, sites, tuple(k for k in RECORDED if k in needs))
        if found is None:
            localizer.fit_stats(stats, model=lm.identity, design=design, widths=widths)
        units = _labeled(localizer.units_, labels)
        extra: dict[str, np.ndarray] = {}
        if self.bottom_k:
            low, extra["score_negative"] = self._bottom(localizer, stats, design, widths, labels, lm)
            units = LabeledUnits({label: units[label] | low[label] for label in labels})
        empty = [label for label in labels if len(units[label]) == 0]
        if empty:
            raise NeurolocError(f"no units pass the selection for labels {empty}; lower --z0 or --nuisance-percent")
        scores = localizer.scores_frame(units)
        for name, table in extra.items():  # rows in the localizer's label order, as the scores table
            scores[name] = np.concatenate(list(table))
        values = _label_values(activations, labels, sites) if wants_values else None
        return localizer, units, scores, values, completeness, found

    def _reliability(self, lm: LoadedModel, ctx: RunContext, stimuli: StimulusSet, localizer: Localizer,
                     design: Design) -> Reliability:
        """Fit `localizer` with statistics per fold of the identification items (one pass, by prompt text)
        and assess its selection."""
        localizer.design = design
        checkpoint = None
        if ctx.checkpointing:
            key = ctx.key(lm, data=stimuli.content_hash(), study=self.identity())
            checkpoint = ctx.checkpoint("prompts-folds", key)
        return assess(lm, stimuli, localizer, self.reliability, settings=self.settings.replace(progress=ctx.progress),
                      checkpoint=checkpoint)

    def _activations(self, lm: LoadedModel, ctx: RunContext, stimuli: StimulusSet, sites: list[Site],
                     kinds: tuple[str, ...]) -> StatsStore:
        """The identification prompts' pooled activations, recorded into `kinds` statistics per label
        (checkpointed when the run keeps checkpoints)."""
        settings = self.settings
        recorder = Recorder(lm, sites, pooling=self.pooling, batch_size=settings.batch_size, bos=settings.bos,
                            progress=ctx.progress, description="recording prompts")
        if ctx.checkpointing:
            key = ctx.key(lm, data=stimuli.content_hash(), study=self.identity(), kinds=list(kinds))
            return collect_resumable(recorder, stimuli, ctx.checkpoint("prompts", key), kinds=kinds)
        return collect(recorder, stimuli, kinds=kinds)

    def _attributions(self, lm: LoadedModel, inputs: "TaskInputs", sites: list[Site], progress: bool
                      ) -> tuple[StatsStore, Completeness | None]:
        """Attributions of the identification items per label, and of the control and nuisance sets."""
        options = dict(method=ATTRIBUTION_METHOD[self.score], settings=self.settings, reduce=self.reduce,
                       weight_by_p=self.weight_by_p, steps=self.steps, progress=progress)
        stats, _, completeness = record_answer_attributions(lm, inputs.identification, sites, **options)
        for label, extra in ((CONTROL, inputs.control), (NUISANCE, inputs.nuisance)):
            if extra is not None:
                record_answer_attributions(lm, extra, sites, label=label, store=stats, **options)
        return stats, completeness

    def _bottom(self, localizer: Localizer, stats: StatsStore, design: Design, widths: dict[str, int],
                labels: list[str], lm: LoadedModel) -> tuple[LabeledUnits, np.ndarray]:
        """Each label's `bottom_k` units whose activation drops most for it: the same score of the negated
        activation (a score with a `negate` option, like average precision), else the score's other end.
        Returns the units and the score of the drop (label rows in the localizer's order)."""
        n_units = sum(widths.values())
        if "negate" in localizer.score_function.options:
            below = self.localizer(negate=True).fit_stats(stats, model=lm.identity, design=design, widths=widths)
            return _labeled(below.select(count=min(self.bottom_k, n_units)), labels), below.result_.values
        return _labeled(localizer.select(count=min(self.bottom_k, n_units), largest=False), labels), \
            -localizer.result_.values


def _labeled(selected: UnitSet | LabeledUnits, labels: Sequence[str]) -> LabeledUnits:
    """A selection as units per label, in `labels` order (a one-label design selects a bare UnitSet)."""
    if isinstance(selected, UnitSet):
        return LabeledUnits({labels[0]: selected})
    return LabeledUnits({label: selected[label] for label in labels})


def _label_values(stats: StatsStore, labels: Sequence[str], sites: Sequence[Site]
                  ) -> dict[str, dict[str, torch.Tensor]]:
    """Per label and site, each unit's median pooled activation on the label's identification prompts (the
    replacement values of mode `value`)."""
    return {label: {s.name: torch.from_numpy(np.median(stats.get("rows", label, s.name).values().cpu().numpy(),
                                                       axis=0).astype(np.float32))
                    for s in sites} for label in labels}


@dataclass
class TaskInputs:
    """What a task study reads: the items (split into identification and test items, limited per label),
    the control and nuisance sets of the attribution scores (identification items only), the guard's
    benchmarks (data loaded once) and the sources of built-in data (package versions)."""

    items: PromptSet
    control: PromptSet | None
    nuisance: PromptSet | None
    benchmarks: list[Benchmark]
    sources: dict = field(default_factory=dict)
    identification: PromptSet | None = None
    test: PromptSet | None = None

    def limited(self, config: TaskConfig) -> "TaskInputs":
        """The splits, limited to the config's items per label and checked (before any model loads)."""
        ident = self.items.split(IDENTIFICATION).limit(config.max_identification)
        test = self.items.split(TEST).limit(config.max_test)
        ident.check_labels(2)
        test.check_labels(1)
        if set(ident.label_names) != set(test.label_names):
            raise NeurolocError(f"{self.items.name}: labels {sorted(set(ident.label_names) ^ set(test.label_names))} "
                                "are in only one split; every label needs identification and test items")
        reserved = {CONTROL, NUISANCE} & set(ident.label_names)
        if reserved:
            raise NeurolocError(f"{self.items.name}: the labels {sorted(reserved)} are reserved; rename them")
        def limit(extra: PromptSet | None) -> PromptSet | None:  # control and nuisance: identification items
            return extra.split(IDENTIFICATION).limit(config.max_identification) if extra is not None else None

        return TaskInputs(self.items, limit(self.control), limit(self.nuisance), self.benchmarks, self.sources,
                          ident, test)


@dataclass
class TaskResult(StudyResult):
    """Each label's units, every unit's scores, the intact model's answers and the causal tests; `localizer`
    is the fitted localizer that chose the units (its scores and statistics: unit magnitudes, e.g. for the
    atlas's magnitude-matched controls)."""

    units: LabeledUnits = None
    scores: pd.DataFrame = None
    intact: pd.DataFrame = None
    answers: pd.DataFrame = None
    effects: pd.DataFrame = None
    dose: pd.DataFrame = None
    guard: pd.DataFrame = None
    inputs: TaskInputs = None
    modes: list[str] = field(default_factory=list)
    dose_ks: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    completeness: dict | None = None
    reliability: Reliability | None = None
    localizer: Localizer | None = None

    def __post_init__(self) -> None:
        self.tables = {mode: {metric: effect_table(self.effects, mode, metric)
                              for metric in ("delta_accuracy", "delta_logprob")} for mode in self.modes}
        self.figures = {"accuracy": plot_accuracy(self.intact)}
        for mode in self.modes:
            self.figures[f"effects_{mode.replace(':', '')}"] = plot_effect_matrix(self.effects, mode)
        if not self.dose.empty:
            self.figures["dose_response"] = plot_task_dose_response(self.dose)
        if not self.guard.empty:
            self.figures["guard"] = plot_guard(self.guard)
        self.figures["layers"] = plot_layer_distribution(self.units.per_layer_counts(), "Selected units per layer",
                                                         group="label")
        self.summary = {
            "intact_accuracy": dict(zip(self.intact["label"], self.intact["accuracy"].round(4))),
            "n_units": {label: len(u) for label, u in self.units.items()},
            "diagonal_minus_random": {mode: {label: round(float(t["delta_accuracy"].loc[label, label]), 4)
                                             for label in self.labels} for mode, t in self.tables.items()},
            "ig_completeness": self.completeness,
        }
        self.reliability_figures = {}
        if self.reliability is not None:
            self.summary["reliability"] = reliability_summary(self.reliability)
            self.reliability_figures = reliability_figures(self.reliability.tables)

    def effect_summary(self) -> pd.DataFrame:
        """The effect tables (target − random) of every mode and metric, long."""
        rows = [t.stack().rename("value").reset_index().assign(mode=mode, metric=metric)
                for mode, by in self.tables.items() for metric, t in by.items()]
        return pd.concat(rows, ignore_index=True)

    def write(self, folder: Path) -> None:
        self.units.save(folder / "units")
        self.scores.to_parquet(folder / "scores.parquet", index=False)
        self.intact.to_csv(folder / "intact.csv", index=False)
        self.answers.to_csv(folder / "answers.csv", index=False)
        self.effects.to_csv(folder / "effects.csv", index=False)
        self.effect_summary().to_csv(folder / "effect_summary.csv", index=False)
        self.dose.to_csv(folder / "dose_response.csv", index=False)
        self.guard.to_csv(folder / "guard.csv", index=False)
        for name, figure in self.figures.items():
            save_figure(figure, folder / f"{name}.png")
        if self.reliability is not None:
            write_reliability(self.reliability, folder, self.reliability_figures)

    def sections(self) -> list[Section]:
        sections = [Section("Intact model", f"Accuracy per label on {len(self.inputs.test)} held-out items.",
                            [self.figures["accuracy"]], [self.intact.round(3)])]
        for mode in self.modes:
            sections.append(Section(f"Effect matrix: {mode}", "Change in accuracy when each label's units are "
                                    "intervened on, minus the mean change with random units of the same count per "
                                    "layer.", [self.figures[f"effects_{mode.replace(':', '')}"]],
                                    [self.tables[mode]["delta_logprob"].round(3)],
                                    caption="Table: the same for mean log p(answer | prompt)."))
        if "dose_response" in self.figures:
            sections.append(Section("Dose–response", None, [self.figures["dose_response"]]))
        if "guard" in self.figures:
            names = ", ".join(dict.fromkeys(b.name for b in self.inputs.benchmarks))
            sections.append(Section("General-ability guard", f"{names} under each intervention.",
                                    [self.figures["guard"]]))
        tables = [self.units.overlap()]
        if self.reliability is not None:
            reliability = self.summary["reliability"]
            tables.insert(0, pd.DataFrame({"label": self.labels, "units": [len(self.units[k]) for k in self.labels],
                                           "reliability": [reliability_line(reliability.get(k, {}))
                                                           for k in self.labels]}))
        sections.append(Section("Units", None, [self.figures["layers"]], tables))
        if self.reliability is not None:
            sections.append(reliability_section(self.reliability, "set of task units", self.reliability_figures))
        return sections

    def manifest_sections(self) -> dict[str, Any]:
        inputs = self.inputs
        return {"data": {"name": inputs.items.name, "sha256": inputs.items.content_hash(), "n_items": len(inputs.items),
                         "n_identification": len(inputs.identification), "n_test": len(inputs.test),
                         "control": inputs.control.content_hash() if inputs.control is not None else None,
                         "nuisance": inputs.nuisance.content_hash() if inputs.nuisance is not None else None,
                         "sources": inputs.sources},
                "labels": self.labels, "dose_ks": self.dose_ks,
                "benchmarks": [{"name": b.name, "source": b.source} for b in inputs.benchmarks]}

    def headline(self) -> str:
        accuracy = float(self.intact["accuracy"].mean())
        return (f"{len(self.labels)} labels, {int(np.mean([len(u) for _, u in self.units.items()]))} units each on "
                f"average; intact accuracy {accuracy:.3f}")


# ------------------------------------------------------------------------------ deprecated entry point
def run_task(lm: LoadedModel, data: PromptSet, out_dir: str | Path, *, score: str = "ap", k: int = 100,
             bottom_k: int = 0, modes: Sequence[str] = ("scale:0", "scale:2"), site: str = "mlp",
             pooling: str = "last", control: PromptSet | None = None, nuisance: PromptSet | None = None,
             nuisance_percent: float = 1.0, z0: float | None = None, reduce: str = "max", weight_by_p: bool = False,
             steps: int = 16, n_random: int = 2, dose_ks: Sequence[int] | None = None,
             guard_texts: Sequence[str] | None = None, blimp=None, guard_random: int | None = None,
             max_identification: int | None = None, max_test: int | None = None, batch_size: int = 16,
             seed: int = 0, bos: str = "prepend", progress: bool = False, sources: dict | None = None,
             extra_parameters: dict | None = None) -> TaskResult:
    """Deprecated (use `neuroloc.run(TaskConfig(...), out)`): the task study on in-memory items, written into
    `out_dir` through the runner. `guard_texts` (perplexity) and `blimp` (pairs from `load_blimp`) become the
    guard's benchmarks; the guard now draws as many random sets as the effect matrix (`n_random`)."""
    warnings.warn("run_task is deprecated; use neuroloc.run(neuroloc.TaskConfig(...), out)", DeprecationWarning,
                  stacklevel=2)
    if guard_random is not None and guard_random != n_random:
        warnings.warn(f"guard_random={guard_random} is deprecated: the guard uses n_random={n_random} random sets",
                      DeprecationWarning, stacklevel=2)
    settings = RunSettings(bos=bos, batch_size=batch_size, progress=progress)
    config = TaskConfig(items=data.name, score=score, k=k, bottom_k=bottom_k, modes=tuple(modes),
                        site=parse_list(site) if isinstance(site, str) else tuple(site), pooling=pooling,
                        nuisance_percent=nuisance_percent, z0=z0, reduce=reduce, weight_by_p=weight_by_p, steps=steps,
                        n_controls=n_random, dose=None if dose_ks is None else tuple(dose_ks),
                        max_identification=max_identification, max_test=max_test, seed=seed, settings=settings,
                        model=lm.identity.get("spec", "in-memory"))
    guard = []
    if guard_texts:
        texts = list(guard_texts)
        guard.append(Benchmark("perplexity", f"{len(texts)} texts", lambda model, tokenizer: evaluate_perplexity(
            model, tokenizer, texts, name="heldout", batch_size=batch_size, bos=bos)))
    if blimp:
        guard.append(Benchmark("blimp", "given pairs", lambda model, tokenizer: evaluate_blimp(
            model, tokenizer, blimp, batch_size=batch_size, bos=bos)))
    inputs = TaskInputs(data, control, nuisance, guard, dict(sources or {})).limited(config)
    return run(config, out_dir, lm=lm, inputs=inputs, options=RunOptions(overwrite=True))

