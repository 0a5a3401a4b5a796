"""The multilingual study (`neuroloc multilingual`): language-specific, -related and -agnostic units end to end.

1. Split every language's texts into identification and held-out texts by id (parallel data: the same
   sentences in every language).
2. Count, per language, how often each `mlp_gate` unit is > 0 over every token (or every response token)
   of the identification texts: a `Localizer` on token statistics (the `Recorder`, one `StatsStore`
   labelled by language), checkpointed, and under torchrun shared by the processes and merged exactly.
3. Select units with a registered score — `lape` (Tang et al., 2024) or `specific_related` (Zhang et al.,
   2025); write unit sets, scores, per-layer counts and the language × language overlap.
4. Deactivation matrix: zero each language's units, NLL per token on every language's held-out text,
   against matched random units.
5. Steering: continue held-out prompts of one language with another language's units enhanced, and
   measure the share of output in the enhanced language (langid), against random units.

Steps 4 and 5 are lists of independent conditions, shared out across torchrun processes and resumed one by
one from the run's checkpoints. Every stage encodes and batches with the config's run settings.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pandas as pd

from ..config import Each, Factory, InstanceOf, Interval, Options, Valid, param
from ..errors import NeurolocError
from ..io import atomic_write_json, atomic_write_with
from ..localize.localizer import Localizer
from ..localize.reliability import Reliability, ReliabilityConfig, assess
from ..models.loading import LoadedModel
from ..parse import parse_list, parse_pairs
from ..progress import progress_bar
from ..record.distributed import gather_across_ranks, merge_across_ranks, shard_items, shard_stimuli
from ..record.stats import StatsStore
from ..report.figures import save_figure
from ..report.html import Section
from ..report.reliability_figures import reliability_figures
from ..report.language_figures import (deactivation_matrix_frame, plot_language_layers, plot_language_matrix,
                                       steering_matrix_frame)
from ..runner import RunContext, StudyConfig, StudyResult
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..stimuli.corpora import MultilingualCorpus, load_corpus, split_corpus, unknown_token_shares
from ..stimuli.design import Design
from ..studies.languages import (SELECTION_SCORES, LanguageSelection, category_units, check_mode,
                                 deactivation_conditions, deactivation_summary, deactivation_table, generate_condition,
                                 language_identifier, language_units, overlap_table, per_layer_distribution,
                                 prompt_prefix, score_condition, scores_table, steering_conditions, steering_pairs,
                                 steering_tables)
from ..units import LabeledUnits
from . import fields
from .reliability import reliability_field, reliability_line, reliability_section, reliability_summary, write_reliability

__all__ = ["MultilingualConfig", "MultilingualInputs", "MultilingualResult"]

SITE_KIND = "mlp_gate"
OLD_SCORE_NAMES = {"specific-related": "specific_related"}  # the old --method spelling
T = TypeVar("T")


def _score_name(value: Any) -> Any:
    return OLD_SCORE_NAMES.get(value, value) if isinstance(value, str) else value


def _pairs(value: Any) -> Any:
    return tuple(tuple(pair) for pair in value)


def _check_pair(value: Any) -> None:
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
        raise NeurolocError(f"{value!r} is not a SOURCE:TARGET pair")


@dataclass
class MultilingualInputs:
    """The corpus (its languages chosen), its identification / held-out split and the identification texts
    as one stimulus set labelled by language."""

    corpus: MultilingualCorpus
    identify: MultilingualCorpus
    heldout: MultilingualCorpus
    stimuli: StimulusSet


@dataclass(frozen=True, kw_only=True)
class MultilingualConfig(StudyConfig):
    """Multilingual units: language-specific, -related and -agnostic units (LAPE or Zhang et al.'s split),
    the deactivation matrix and output-language steering.

    Counts how often each mlp_gate unit is > 0 over every token of each language's identification texts
    (default: the parallel UD PUD treebanks), selects units with a registered score, zeroes each
    language's units on held-out text of every language, and steers generation towards a language."""

    command = "multilingual"
    title = "Multilingual units"
    shares_work = True

    corpus: str | None = param(None, InstanceOf(str), None,
                               help="Folder with ud/*_pud-ud-test.conllu or one file per language (en.txt, "
                                    "de.conllu); a CSV/JSONL with a language column; or hf:NAME (default: the PUD "
                                    "treebanks under the data root).")
    data: str | None = fields.data_root()
    languages: tuple[str, ...] | None = param(None, Each(InstanceOf(str)), None, parse=parse_list,
                                              help="Codes, e.g. en,de,zh (default: all in the data).")
    score: str = param("lape", Options(SELECTION_SCORES, noun="score that assigns units to languages"),
                       coerce=_score_name, aliases={"--method": None},
                       help="lape (Tang et al. 2024) or specific_related (Zhang et al. 2025), registered scores "
                            "on token statistics.")
    percent: float = param(1.0, Interval(float, 0, 100, closed="right"), help="Percent of all units kept.")
    quantile: float = param(0.95, Interval(float, 0, 1, closed="left"),
                            help="Probability bar: this quantile of all unit × language probabilities.")
    n_identify: int = param(300, Interval(int, 1, None), help="Texts per language to find the units on.")
    n_heldout: int = param(100, Interval(int, 0, None),
                           help="Held-out texts per language (deactivation, steering).")
    n_controls: int = fields.n_controls(1, help="Matched random unit sets per language.")
    deactivation: bool = param(True, InstanceOf(bool), help="The deactivation matrix.")
    deactivation_texts: int | None = param(None, Interval(int, 1, None), None,
                                           help="Held-out texts per language scored (default: all).")
    steering: bool = param(True, InstanceOf(bool), help="Steer the output language.")
    steer_mode: str = param("mean", Valid(check_mode, "mean or scale:K"),
                            help="mean (each unit's mean activation when active) or scale:K.")
    steer_prompts: int = param(8, Interval(int, 1, None), help="Prompts per source language.")
    steer_tokens: int = param(24, Interval(int, 1, None), help="Tokens generated per prompt.")
    steer_pairs: tuple[tuple[str, str], ...] | None = param(
        None, Each(Valid(_check_pair, "a SOURCE:TARGET pair")), None, parse=parse_pairs, coerce=_pairs,
        help="SOURCE:TARGET pairs, e.g. en:de,de:en (default: all).")
    response_only: bool = param(False, InstanceOf(bool),
                                help="Count only response tokens (needs a 'prompt' column).")
    max_unknown_share: float = param(0.05, Interval(float, 0, 1),
                                     help="Refuse a language whose share of unknown tokens exceeds this.")
    settings: RunSettings = param(Factory(lambda: RunSettings(batch_size=16)), help="How the model is run.")
    reliability: ReliabilityConfig | None = reliability_field(
        "the identification texts (with parallel data a sentence and its translations stay together)")

    # -- inputs ---------------------------------------------------------------------------------------
    def corpus_spec(self) -> str | None:
        """The corpus to read: --corpus; else a --data that is not a data root (a folder without ud/), read
        as a corpus with a deprecation warning (--data used to name the corpus); else None (PUD)."""
        if self.corpus is not None or self.data is None:
            return self.corpus
        if Path(self.data).is_dir() and (Path(self.data) / "ud").is_dir():
            return None
        warnings.warn(f"--data {self.data}: --data names the data root now; give the corpus with --corpus",
                      FutureWarning, stacklevel=2)
        return self.data

    def load_inputs(self) -> MultilingualInputs:
        spec = self.corpus_spec()
        corpus = load_corpus(spec, self.languages, data_root=self.data if spec is None else None)
        return self.prepare(corpus)

    def prepare(self, corpus: MultilingualCorpus) -> MultilingualInputs:
        """Split a loaded corpus (its languages already chosen) and check it against the settings."""
        if len(corpus.languages) < 2:
            raise NeurolocError(f"a language-neuron study needs at least two languages, got {corpus.languages}")
        unknown = sorted({lang for pair in self.steer_pairs or () for lang in pair} - set(corpus.languages))
        if unknown and self.steering:
            raise NeurolocError(f"--steer-pairs names {', '.join(unknown)}, which the corpus does not have "
                                f"(it has {', '.join(corpus.languages)})")
        identify, heldout = split_corpus(corpus, self.n_identify, self.n_heldout, seed=self.seed)
        stimuli = identify.stimulus_set("identification texts", response_only=self.response_only)
        return MultilingualInputs(corpus, identify, heldout, stimuli)

    # -- compute --------------------------------------------------------------------------------------
    def localizer(self, languages: Sequence[str], settings: RunSettings) -> Localizer:
        """Token statistics of every mlp_gate unit, one label per language, scored by `score`."""
        return Localizer(SITE_KIND, score=self.score, design=Design.groups(list(languages)), pooling="tokens",
                         percent=self.percent, quantile=self.quantile, settings=settings)

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: MultilingualInputs) -> "MultilingualResult":
        settings = self.settings.replace(progress=ctx.progress)
        languages = inputs.corpus.languages
        unknown = unknown_token_shares(lm.tokenizer, inputs.corpus, max_share=self.max_unknown_share)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        localizer, reused, found = self._count(lm, ctx, inputs, languages, settings)
        timings["count_s"] = round(time.perf_counter() - started, 1)
        selection = LanguageSelection.from_localizer(localizer)
        sites = lm.layout.sites(SITE_KIND)
        widths = [lm.layout.width(SITE_KIND)] * len(sites)
        per_language = language_units(selection, sites, widths, model=lm.identity)
        deactivation = steering = generations = None
        started = time.perf_counter()
        if self.deactivation:
            deactivation = self._deactivate(lm, ctx, inputs.heldout, per_language, settings)
        timings["deactivation_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        if self.steering:
            steering, generations = self._steer(lm, ctx, inputs.heldout, per_language, localizer.stats_, settings)
        timings["steering_s"] = round(time.perf_counter() - started, 1)
        stats = localizer.stats_
        return MultilingualResult(
            config=self, model=dict(lm.identity), timings=timings, selection=selection, stats=stats,
            units=per_language, categories=category_units(selection, sites, widths, model=lm.identity),
            layers=per_layer_distribution(selection, sites, widths),
            overlap=overlap_table(selection.assignment, languages, categories=selection.category),
            scores=scores_table(selection, sites, widths), deactivation=deactivation, steering=steering,
            generations=generations, unknown=unknown, reliability=found,
            counting={**self._counting(stats, inputs.identify), "statistics_reused": reused,
                      "world_size": ctx.dist.world_size},
            corpus={"identification": inputs.identify.describe(), "heldout": inputs.heldout.describe(),
                    "source": inputs.corpus.source},
            site={"kind": SITE_KIND, "meaning": lm.layout.describe()["mlp_gate"], "gated": lm.layout.gated})

    def _counting(self, stats: StatsStore, identify: MultilingualCorpus) -> dict[str, Any]:
        """What was counted (for the manifest)."""
        tokens = {lang: stats.count(lang, "tokens") for lang in identify.languages}
        return {"tokens": "every token of each text except the BOS the encoding prepends; padding never"
                          + ("; only the tokens after each text's prompt" if self.response_only else ""),
                "implementation": "neuroloc.Localizer(pooling='tokens'): Recorder → StatsStore token statistics",
                "tokens_per_language": tokens,
                "tokens_per_character": None if self.response_only else {
                    lang: round(n / max(1, sum(map(len, identify.texts[lang]))), 4) for lang, n in tokens.items()}}

    def _count(self, lm: LoadedModel, ctx: RunContext, inputs: MultilingualInputs, languages: Sequence[str],
               settings: RunSettings) -> tuple[Localizer, bool, Reliability | None]:
        """The fitted localizer (statistics of every process merged), whether the counts came whole from a
        checkpoint, and with --folds its reliability (counts per fold from the same single pass)."""
        localizer = self.localizer(languages, settings)
        stimuli = inputs.stimuli
        if self.reliability is not None:
            return self._count_folds(lm, ctx, inputs, localizer, settings)
        checkpoint = None
        if ctx.checkpointing:  # keyed by what the counts depend on, so a change of selection reuses them
            key = ctx.key(lm, data=stimuli.content_hash(), site=SITE_KIND, settings=self.settings.identity())
            checkpoint = ctx.checkpoint("counts", key)
        recorded = localizer.record(lm, shard_stimuli(stimuli, ctx.dist), checkpoint=checkpoint)
        reused = checkpoint is not None and checkpoint.resumed_from == len(checkpoint.done)
        localizer.fit_recorded(lm, stimuli, merge_across_ranks(recorded, ctx.dist))
        return localizer, reused, None

    def _count_folds(self, lm: LoadedModel, ctx: RunContext, inputs: MultilingualInputs, localizer: Localizer,
                     settings: RunSettings) -> tuple[Localizer, bool, Reliability]:
        """Counts per fold of the identification texts in one pass, and the reliability of the selection.
        With parallel data the folds go by sentence id, so no sentence is in one fold and its translation
        in another."""
        if ctx.dist.world_size > 1:
            raise NeurolocError("the reliability analyses (--folds, --null, ...) run in one process: run "
                                "`neuroloc multilingual` with them without a launcher")
        stimuli = inputs.stimuli
        if inputs.identify.parallel:
            ids = [text_id for lang in inputs.identify.texts for text_id in inputs.identify.ids[lang]]
            stimuli = replace(stimuli, groups=tuple(ids))
        checkpoint = None
        if ctx.checkpointing:
            key = ctx.key(lm, data=stimuli.content_hash(), site=SITE_KIND, settings=self.settings.identity(),
                          study=self.identity())
            checkpoint = ctx.checkpoint("counts-folds", key)
        found = assess(lm, stimuli, localizer, self.reliability, settings=settings, checkpoint=checkpoint)
        reused = checkpoint is not None and checkpoint.resumed_from == len(checkpoint.done)
        return localizer, reused, found

    def _deactivate(self, lm: LoadedModel, ctx: RunContext, heldout: MultilingualCorpus, units: LabeledUnits,
                    settings: RunSettings) -> pd.DataFrame:
        texts = {lang: items[:self.deactivation_texts] for lang, items in heldout.texts.items()}
        if not any(texts.values()):
            raise NeurolocError("no held-out text to evaluate the deactivations on; raise --n-heldout")
        conditions = deactivation_conditions(units, n_controls=self.n_controls, seed=self.seed)
        key = {"study": self.identity(), "texts": texts, "units": {k: u.names() for k, u in units.items()}}
        scored = _shared(lm, ctx, "deactivation", key, conditions,
                         lambda condition: score_condition(lm, condition, texts, settings=settings))
        return deactivation_table(scored)

    def _steer(self, lm: LoadedModel, ctx: RunContext, heldout: MultilingualCorpus, units: LabeledUnits,
               stats: StatsStore, settings: RunSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
        languages = heldout.languages
        prompts = {lang: [prompt_prefix(t) for t in heldout.texts[lang][:self.steer_prompts]] for lang in languages}
        values = {lang: {site: stats.get("tokens", lang, site).mean_when_active().float()
                         for site in stats.sites("tokens")} for lang in languages}
        pairs = steering_pairs(languages, units, self.steer_pairs)
        identify = language_identifier(sorted(set(languages) | set(units.labels)))
        conditions = steering_conditions(units, pairs, n_controls=self.n_controls, seed=self.seed)
        key = {"study": self.identity(), "prompts": prompts, "units": {k: u.names() for k, u in units.items()}}

        def work(condition) -> pd.DataFrame:
            texts = generate_condition(lm, condition, prompts, mode=self.steer_mode, values=values,
                                       max_new_tokens=self.steer_tokens, settings=settings)
            return pd.DataFrame({"generated": texts})

        generated = [frame.generated.tolist() for frame in _shared(lm, ctx, "steering", key, conditions, work)]
        return steering_tables(conditions, generated, prompts, pairs, identify)


def _shared(lm: LoadedModel, ctx: RunContext, name: str, key: dict[str, Any], conditions: Sequence[T],
            work: Callable[[T], pd.DataFrame]) -> list[pd.DataFrame]:
    """`work(condition)` for this process's share of `conditions` (finished ones read back from the run's
    checkpoints, valid for the model and `key`), every process's frames gathered in the conditions' order."""
    log = ctx.item_log(name, ctx.key(lm, **key)) if ctx.checkpointing else None
    mine = shard_items(list(enumerate(conditions)), ctx.dist)
    done = []
    with progress_bar(name, len(mine), ctx.progress) as advance:
        for index, condition in mine:
            frame = log.get(condition.id) if log is not None else None
            if frame is None:
                frame = work(condition)
                if log is not None:
                    log.put(condition.id, frame)
            done.append((index, frame))
            advance(1)
    return [frame for _, frame in sorted(gather_across_ranks(done, ctx.dist), key=lambda pair: pair[0])]


@dataclass
class MultilingualResult(StudyResult):
    """The selection, its unit sets and tables, the deactivation matrix and the steering results."""

    selection: LanguageSelection = None
    stats: StatsStore = None
    units: LabeledUnits = None
    categories: LabeledUnits = None
    layers: pd.DataFrame = None
    overlap: pd.DataFrame = None
    scores: pd.DataFrame = None
    deactivation: pd.DataFrame | None = None
    steering: pd.DataFrame | None = None
    generations: pd.DataFrame | None = None
    unknown: dict = None
    counting: dict = None
    corpus: dict = None
    site: dict = None
    reliability: Reliability | None = None

    def __post_init__(self) -> None:
        self.random_panel = None  # the controls' deactivation matrix: in the report, not a file
        self.deactivation_summary = deactivation_summary(self.deactivation) if self.deactivation is not None else None
        self.summary = self._summary()
        self.figures = self._figures()

    def _summary(self) -> dict:
        selection = self.selection
        summary = {"n_units": selection.counts(), "lambda": selection.lambda_, "bar": selection.bar,
                   "units_per_language": {lang: len(u) for lang, u in self.units.items()}}
        if self.deactivation_summary is not None and not self.deactivation_summary.empty:
            summary["deactivation"] = self.deactivation_summary.round(5).to_dict("records")
        if self.steering is not None and not self.steering.empty:
            summary["steering_share_target"] = self.steering.groupby("condition").share_target.mean().round(4).to_dict()
        if self.reliability is not None:
            summary["reliability"] = reliability_summary(self.reliability)
        return summary

    def _figures(self) -> dict:
        figures = {"layers": plot_language_layers(self.layers),
                   "overlap": plot_language_matrix(self.overlap, "Units shared by two languages\n(agnostic units "
                                                                 "left out)", "units", fmt=".0f")}
        if self.deactivation is not None and not self.deactivation.empty:
            figures["deactivation"] = plot_language_matrix(deactivation_matrix_frame(self.deactivation, "target"),
                                                           "NLL change when a language's\nunits are zeroed",
                                                           "Δ NLL per token (nats)")
            if self.config.n_controls:
                self.random_panel = plot_language_matrix(
                    deactivation_matrix_frame(self.deactivation, "random"),
                    f"Matched random units\n(mean of {self.config.n_controls})", "Δ NLL per token (nats)")
        if self.steering is not None and not self.steering.empty:
            figures["steering"] = plot_language_matrix(steering_matrix_frame(self.steering, "target"),
                                                       "Steering: output in the\nenhanced language vs. intact",
                                                       "Δ share")
        self.reliability_figures = reliability_figures(self.reliability.tables) if self.reliability else {}
        return figures

    def write(self, folder: Path) -> None:
        self.units.save(folder / "units" / "languages")
        self.categories.save(folder / "units" / "categories")
        self.stats.save(folder / "stats.safetensors")
        atomic_write_with(folder / "scores.parquet", lambda p: self.scores.to_parquet(p, index=False))
        atomic_write_with(folder / "layers.csv", lambda p: self.layers.to_csv(p, index=False))
        atomic_write_with(folder / "overlap.csv", lambda p: self.overlap.to_csv(p))
        atomic_write_json(folder / "selection.json", {"score": self.selection.method,
                                                      "languages": self.selection.languages, **self.summary})
        if self.deactivation is not None:
            atomic_write_with(folder / "deactivation.csv", lambda p: self.deactivation.to_csv(p, index=False))
            atomic_write_with(folder / "deactivation_summary.csv",
                              lambda p: self.deactivation_summary.to_csv(p, index=False))
        if self.steering is not None:
            atomic_write_with(folder / "steering.csv", lambda p: self.steering.to_csv(p, index=False))
            atomic_write_with(folder / "steering_generations.csv", lambda p: self.generations.to_csv(p, index=False))
        for name, figure in self.figures.items():
            save_figure(figure, folder / f"{name}.png")
        if self.reliability is not None:
            write_reliability(self.reliability, folder, self.reliability_figures)

    def manifest_sections(self) -> dict[str, Any]:
        languages = self.selection.languages
        return {"site": self.site, "counting": self.counting, "corpus": self.corpus,
                "unknown_token_share": self.unknown,
                "language_identifier": {"package": "langid", "restricted_to": languages}
                if self.steering is not None else None}

    def sections(self) -> list[Section]:
        config, selection = self.config, self.selection
        totals = selection.counts()
        described = ("LAPE (Tang et al., 2024): lowest-entropy units" if selection.method == "lape" else
                     f"Zhang et al. (2025): normalised entropy − λ·normalised max probability, λ = "
                     f"{selection.lambda_:.4g}")
        counts = pd.DataFrame([{"language": lang, "units": int(selection.assignment[k].sum()),
                                **{c: int((selection.assignment[k] & (selection.category == c)).sum())
                                   for c in ("specific", "related", "agnostic")},
                                "unknown token share": self.unknown.get(lang, 0.0)}
                               for k, lang in enumerate(selection.languages)])
        if self.reliability is not None:
            counts["reliability"] = [reliability_line(self.summary["reliability"].get(lang, {}))
                                     for lang in selection.languages]
        sections = [Section(
            "Language units",
            text=(f"Site: {SITE_KIND} ({self.site['meaning']}). {described}; top {config.percent:g}% of units, "
                  f"probability bar = the {config.quantile:g} quantile of all activation probabilities "
                  f"({selection.bar:.4g}). Category totals: {totals['specific']} specific, {totals['related']} "
                  f"related, {totals['agnostic']} agnostic. BOS policy: {config.settings.bos}."),
            figures=[self.figures["layers"]], tables=[counts]),
            Section("Overlap between languages", figures=[self.figures["overlap"]])]
        if self.reliability is not None:
            sections.append(reliability_section(self.reliability, "set of language units", self.reliability_figures))
        if "deactivation" in self.figures:
            panels = [self.figures["deactivation"]] + ([self.random_panel] if self.random_panel else [])
            sections.append(Section(
                "Deactivation matrix",
                text=("Rows: the language whose units are zeroed; columns: the held-out text scored. The papers' "
                      "claim: the diagonal rises far more than the rest, and far more than for random units of the "
                      "same count per layer."),
                figures=panels, tables=[self.deactivation_summary.round(4)]))
        if "steering" in self.figures:
            table = self.steering.groupby("condition")[["share_target", "share_source"]].mean().reset_index()
            sections.append(Section(
                "Steering the output language",
                text=(f"Prompts in one language (rows), the other language's units enhanced ({config.steer_mode}); "
                      "output language identified with langid restricted to the study's languages."),
                figures=[self.figures["steering"]], tables=[table.round(4)]))
        return sections

    def headline(self) -> str:
        totals = self.summary["n_units"]
        return f"{totals['specific']} specific, {totals['related']} related, {totals['agnostic']} agnostic units"
