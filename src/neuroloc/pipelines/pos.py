"""The pos study: key neurons for parts of speech (Norouzi, Masjedi & Hitzler 2025), end to end.

1. Split the treebank by document into a selection/probe-training part and a held-out test part.
2. On the training part, attribute each word's next-word prediction to the units of `--site` (default `mlp`
   neurons; the registered scores `ig`, integrated gradients, or `gradxact`, gradient × activation) and keep,
   per class, the k
   neurons most often in a word's top percent — or rank neurons by a score of word-level activations
   (`one_vs_rest_welch`, alias `contrast`: the Welch t of the class against the other words). Both select
   through the Localizer's one selection rule. Every unit's mean |activation| over the training words is
   kept beside them (what magnitude-matched controls match, e.g. in the atlas).
3. Probe: a classifier on the word-level activations of the key neurons (union over classes) predicts
   UPOS on held-out sentences and on a second treebank, against random neurons (same per-layer
   counts, several seeds), all neurons of one layer and the majority baseline; selectivity = task −
   control-task accuracy (Hewitt & Liang 2019).
4. Specificity: zero each class's key neurons and measure the drop in next-word log-probability per
   class on the held-out sentences, against matched random lesions.

Every stage runs under the config's run settings (BOS policy, batch size). Outputs: key_neurons.json,
key_neurons/<CLASS>/ (UnitSet folders: `UnitSet.load(out / "key_neurons" / "NOUN")`), layers.csv,
magnitudes.csv, attributions.parquet, probe.csv, specificity.csv, specificity_summary.csv, layers.png, probe.png,
specificity.png (the runner adds report.html and manifest.json, with the split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Each, Factory, InstanceOf, Interval, Options, param
from ..data_paths import find_data
from ..errors import NeurolocError
from ..evaluate.controls import random_matched
from ..io import file_sha256
from ..localize.attribution import IG_RULES
from ..localize.score_functions import get_score
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..parse import parse_list
from ..probe import control_labels, evaluate_probe, majority_baseline, make_probe, probe_selectivity
from ..record.pooling import WORD_POOLINGS
from ..record.recorder import Recorder
from ..report.figures import plot_heatmap, plot_layer_distribution, plot_probe, save_figure
from ..report.html import Section
from ..runner import RunContext, RunOptions, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..stimuli.treebank import TaggedCorpus, read_conllu
from ..studies.pos.attribution import AttributionSummary, attribute
from ..studies.pos.key_neurons import (DEFAULT_CLASSES, KeyNeurons, contrast_key_neurons, resolve_classes,
                                       word_magnitudes)
from ..studies.pos.specificity import SpecificityResult, specificity
from ..units import UnitIndex, UnitSet
from . import fields

__all__ = ["DEFAULT_TREEBANK", "PROBE_COLUMNS", "PosConfig", "PosData", "PosInputs", "PosResult", "find_key_neurons",
           "lesion_key_neurons", "prepare_data", "probe_key_neurons", "read_tagged", "record_word_features",
           "run_pos"]

DEFAULT_TREEBANK = "ud/en_ewt-ud-dev.conllu"  # under the data root
_TEXT_FILES = (".conllu", ".txt")
PROBE_COLUMNS = ["neuron_set", "seed", "n_units", "split", "accuracy", "macro_f1", "selectivity",
                 "accuracy_ci_low", "accuracy_ci_high", "macro_f1_ci_low", "macro_f1_ci_high",
                 "control_accuracy", "n_train", "n_test"]


# ------------------------------------------------------------------------------------- features
def record_word_features(lm: LoadedModel, corpus: TaggedCorpus, columns: Mapping[Site, np.ndarray], *,
                         pooling: str = "word-mean", settings: RunSettings, progress: bool = False,
                         description: str = "recording probe features") -> tuple[pd.DataFrame, np.ndarray]:
    """Word-level activations of selected units: (words table, features).

    `columns[site]` lists the unit indices wanted at `site`; features are float32 (words, Σ columns),
    sites in sorted order, and the words table (sent_index, word_index, word, upos) follows the
    corpus order. Sites are recorded once, in one pass, and only the wanted units are kept.
    """
    sites = sorted(s for s, idx in columns.items() if len(idx))
    if not sites:
        raise NeurolocError("no units to record")
    table = corpus.words_table()[["sent_index", "word_index", "word", "upos"]]
    row_of = {(s, w): i for i, (s, w) in enumerate(zip(table["sent_index"], table["word_index"]))}
    index = {s: torch.as_tensor(np.asarray(columns[s], dtype=np.int64)) for s in sites}
    features = np.full((len(table), sum(len(columns[s]) for s in sites)), np.nan, dtype=np.float32)
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=settings.batch_size, max_tokens=settings.max_tokens,
                        bos=settings.bos, progress=progress, description=description)
    seen = np.zeros(len(table), dtype=bool)
    for batch in recorder.iter_batches(corpus.texts(), corpus.word_spans()):
        rows = np.array([row_of[r] for r in batch.rows], dtype=np.int64)
        parts = [batch.features[s][:, index[s].to(batch.features[s].device)].float().cpu().numpy() for s in sites]
        features[rows] = np.concatenate(parts, axis=1)
        seen[rows] = True
    return table[seen].reset_index(drop=True), features[seen]


def _columns(sets: Iterable[UnitSet]) -> dict[Site, np.ndarray]:
    """Per site, the sorted union of the unit indices the sets use."""
    wanted: dict[Site, set[int]] = {}
    for units in sets:
        for site, mask in units.masks.items():
            if mask.any():
                wanted.setdefault(site, set()).update(torch.nonzero(mask).flatten().tolist())
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in sorted(wanted.items())}


def _positions(units: UnitSet, columns: Mapping[Site, np.ndarray]) -> np.ndarray:
    """Where `units` sit among the recorded feature columns."""
    offsets, start = {}, 0
    for site in sorted(columns):
        offsets[site] = start
        start += len(columns[site])
    out = []
    for site, mask in units.masks.items():
        chosen = torch.nonzero(mask).flatten().numpy()
        if chosen.size:
            out.append(offsets[site] + np.searchsorted(columns[site], chosen))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class _Fitted:
    """A fitted probe passed to `evaluate_probe`, so one fit serves several test splits."""

    def __init__(self, model) -> None:
        self.model = model

    def fit(self, X, y) -> "_Fitted":  # already fitted
        return self

    def predict(self, X):
        return self.model.predict(X)


def _probe_rows(name: str, seed: int, n_units: int, X: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray],
                control: Mapping[str, np.ndarray], splits: Sequence[str], n_bootstrap: int) -> list[dict]:
    task = make_probe().fit(X["train"], y["train"])
    ctrl = make_probe().fit(X["train"], control["train"])
    rows = []
    for split in splits:
        scores = evaluate_probe(X["train"], y["train"], X[split], y[split], seed=seed, n_bootstrap=n_bootstrap,
                                probe=_Fitted(task))
        control_scores = evaluate_probe(X["train"], control["train"], X[split], control[split], seed=seed,
                                        n_bootstrap=1, probe=_Fitted(ctrl))
        rows.append({
            "neuron_set": name, "seed": seed, "n_units": n_units, "split": split,
            "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "selectivity": probe_selectivity(scores["accuracy"], control_scores["accuracy"]),
            "accuracy_ci_low": scores["accuracy_ci"][0], "accuracy_ci_high": scores["accuracy_ci"][1],
            "macro_f1_ci_low": scores["macro_f1_ci"][0], "macro_f1_ci_high": scores["macro_f1_ci"][1],
            "control_accuracy": control_scores["accuracy"], "n_train": len(y["train"]), "n_test": len(y[split]),
        })
    return rows


# ------------------------------------------------------------------------------------- the pipeline
def _limit(corpus: TaggedCorpus, n: int | None) -> TaggedCorpus:
    if n is None:
        return corpus
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise NeurolocError(f"a sentence limit must be an int >= 1, got {n!r}")
    return corpus.subset(range(min(n, len(corpus))))


def _data_record(corpus: TaggedCorpus, n_used: int) -> dict:
    record = {"source": corpus.source, "n_sentences_used": n_used}
    if corpus.source and Path(corpus.source).is_file():
        record["sha256"] = file_sha256(corpus.source)
    return record


def _mean_sd(values: pd.Series) -> dict:
    values = values.to_numpy(float)
    return {"mean": float(values.mean()) if values.size else None,
            "sd": float(values.std(ddof=1)) if values.size > 1 else None, "n": int(values.size)}


def _probe_summary(probe: pd.DataFrame) -> dict:
    out = {}
    for split, rows in probe.groupby("split", sort=False):
        entry = {}
        for name, group in rows.groupby("neuron_set", sort=False):
            entry[name] = {"accuracy": _mean_sd(group["accuracy"]),
                           "selectivity": _mean_sd(group["selectivity"].dropna()),
                           "macro_f1": _mean_sd(group["macro_f1"]), "n_units": int(group["n_units"].iloc[0])}
        out[split] = entry
    return out


def _is_treebank(value: str | None) -> bool:
    """`--data` given its old meaning (the training treebank) rather than a data root."""
    return value is not None and (Path(value).suffix.lower() in _TEXT_FILES or Path(value).is_file())


def _every(classes: tuple[str, ...]) -> bool:
    return len(classes) == 1 and classes[0].lower() == "all"


@dataclass(frozen=True, kw_only=True)
class PosConfig(StudyConfig):
    """Key neurons for parts of speech: attribute each word's prediction to MLP neurons (or score word-level
    activations), keep each class's k key neurons, probe them on held-out and fresh text against random
    neurons, and lesion them."""

    command = "pos"
    title = "Key neurons for parts of speech"

    treebank: str | None = param(None, InstanceOf(str), None,
                                 help=f"Training text: a CoNLL-U treebank, or a .txt file to tag with spaCy (default: "
                                      f"{DEFAULT_TREEBANK} under the data root). Formerly --data.")
    eval_treebank: str | None = param(None, InstanceOf(str), None, flag="--eval",
                                      help="A second treebank (or .txt) for out-of-domain probing.")
    data: str | None = fields.data_root()
    site: tuple[str, ...] = fields.sites(("mlp",), help="Site kinds whose units are attributed or scored, "
                                                        "comma-separated (mlp, mlp_gate, attn, residual); the k "
                                                        "key neurons per class are chosen over all of them "
                                                        "together; the probes' full layer is the first kind's.")
    score: str = fields.score("ig", aliases={"--method": None},
                              help="ig or gradxact (attribution), or a score of word activations with a one-vs-rest "
                                   "design, e.g. one_vs_rest_welch (contrast).")
    classes: tuple[str, ...] = param(DEFAULT_CLASSES, Each(InstanceOf(str)), parse=parse_list,
                                     help="UPOS classes, comma-separated, or 'all'.")
    k: int = param(100, Interval(int, 1, None), help="Key neurons per class.")
    top_percent: float = param(5.0, Interval(float, 0, 100, closed="right"),
                               help="Attribution: per word, the top percent of neurons that count for it.")
    absolute: bool = param(False, InstanceOf(bool), flag="--abs", help="Attribution: rank words' neurons by "
                                                                       "|attribution|.")
    steps: int = param(32, Interval(int, 1, None), help="Integrated-gradients steps.")
    rule: str = param("midpoint", Options(IG_RULES), help="Integrated-gradients rule.")
    baseline: str = param("zero", Options(["zero"]), help="Integrated-gradients baseline (Python: a mapping site "
                                                          "name → vector through PosInputs).")
    attribution_batch_size: int = param(64, Interval(int, 1, None),
                                        help="Single-token rows per attribution pass.")
    n_controls: int = fields.n_controls(5, aliases={"--random-sets": None},
                                        help="Random neuron sets (seeds) to compare with, in the probes and lesions.")
    probe_layer: int | None = param(None, Interval(int, 0, None), None,
                                    help="The full layer to compare with (default: the middle one).")
    test_fraction: float = param(0.2, Interval(float, 0, 1, closed="neither"),
                                 help="Held-out share of the training treebank's documents.")
    max_sentences: int | None = param(None, Interval(int, 1, None), None, help="First N sentences of --treebank.")
    max_eval_sentences: int | None = param(None, Interval(int, 1, None), None,
                                           help="First N sentences of --eval (default: --max-sentences).")
    specificity_sentences: int | None = param(None, Interval(int, 1, None), None,
                                              help="Held-out sentences scored by the lesion check (default: all).")
    probe_pooling: str = fields.pooling("word-mean", choices=WORD_POOLINGS, help="Word pooling of probe features.")
    contrast_pooling: str = fields.pooling("word-predict", choices=WORD_POOLINGS,
                                           help="Word pooling of activation scores and of the units' mean "
                                                "|activation| (magnitudes.csv).")
    n_bootstrap: int = param(1000, Interval(int, 1, None), help="Bootstrap resamples of probe confidence intervals.")
    settings: RunSettings = param(Factory(lambda: RunSettings(batch_size=16)), help="How the model is run.")

    def __post_init__(self) -> None:
        if _is_treebank(self.data):  # `--data FILE` (its meaning before --data became the data root)
            if self.treebank is not None:
                raise NeurolocError(f"--data {self.data} and --treebank {self.treebank}: give the training text "
                                    "with --treebank only (--data is the data root)")
            warnings.warn("--data for the training treebank is deprecated; use --treebank (--data is the data "
                          "root)", FutureWarning, stacklevel=3)
            object.__setattr__(self, "treebank", self.data)
            object.__setattr__(self, "data", None)
        super().__post_init__()

    @property
    def attribution(self) -> bool:
        return get_score(self.score).needs == ("attribution",)

    @property
    def every_class(self) -> bool:
        """All classes asked for: those without usable words (e.g. only inside merged tokens) are left out."""
        return _every(self.classes)

    def check(self) -> None:
        super().check()
        function = get_score(self.score)
        if not self.attribution and (function.needs != ("moments",) or "one_vs_rest" not in function.designs):
            raise NeurolocError(f"score (--score): `neuroloc pos` takes an attribution score (ig, gradxact) or a "
                                f"score of word-activation moments with a one-vs-rest design (one_vs_rest_welch, "
                                f"welch, cohen_d); {self.score} needs {', '.join(function.needs)}")
        if self.settings.max_tokens is not None:
            raise NeurolocError("max_tokens (--max-tokens): the pos study attributes, probes and scores every word of "
                                "whole sentences; leave it out")
        if self.rule == "trapezoid" and self.steps < 2:
            raise NeurolocError("steps (--steps): the trapezoid rule needs at least 2 steps")

    def load_inputs(self) -> "PosInputs":
        path = self.treebank or find_data(DEFAULT_TREEBANK, self.data)
        if path is None:
            raise NeurolocError(f"treebank (--treebank): give a CoNLL-U treebank or a .txt file, or a data root "
                                f"holding {DEFAULT_TREEBANK} with --data DIR")
        return PosInputs(read_tagged(path), read_tagged(self.eval_treebank) if self.eval_treebank else None)

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: "PosInputs") -> "PosResult":
        timings: dict[str, float] = {}
        data = prepare_data(lm, inputs.train, inputs.evaluation, self)
        tick = time.perf_counter()
        stages = ctx.item_log("stages", ctx.key(lm, data=_corpus_hash(data), study=self.identity()))
        found = stages.get_object("key_neurons") if stages is not None else None
        if found is None:
            found = find_key_neurons(lm, data, self, progress=ctx.progress, baseline=inputs.baseline)
            if stages is not None:  # the costly stage (attribution): an interrupted run resumes after it
                stages.put_object("key_neurons", found)
        else:
            ctx.warn("resuming: the key neurons of the interrupted run are reused (no attribution is redone)")
        key, attribution = found
        timings["key_neurons_s"] = round(time.perf_counter() - tick, 1)
        tick = time.perf_counter()
        probe, n_words = probe_key_neurons(lm, data, key, self, progress=ctx.progress)
        timings["probe_s"] = round(time.perf_counter() - tick, 1)
        tick = time.perf_counter()
        spec, spec_corpus = lesion_key_neurons(lm, data, key, self, progress=ctx.progress)
        timings["specificity_s"] = round(time.perf_counter() - tick, 1)
        return PosResult(config=self, model=dict(lm.identity), timings=timings, inputs=inputs, data=data,
                         key_neurons=key, attribution=attribution, probe=probe, specificity=spec, n_words=n_words,
                         n_specificity=len(spec_corpus))


def _corpus_hash(data: "PosData") -> str:
    """SHA-256 of every sentence the run reads (ids, words, tags): what its stage checkpoints depend on."""
    digest = hashlib.sha256()
    for corpus in (data.fit, data.test, data.evaluation):
        for sentence in corpus or ():
            digest.update(repr((sentence.sent_id, sentence.text, sentence.words, sentence.upos)).encode())
        digest.update(b"|")
    return digest.hexdigest()


def read_tagged(path: str | Path) -> TaggedCorpus:
    """A CoNLL-U treebank, or raw text (one text per line) tagged with spaCy."""
    path = Path(path)
    if path.suffix == ".conllu":
        return read_conllu(path)
    from ..evaluate.perplexity import load_texts
    from ..stimuli.spacy_tagging import tag_texts

    return tag_texts(load_texts(path))


@dataclass
class PosInputs:
    """What a pos study reads: the training corpus, the optional out-of-domain one, and (Python only) an
    integrated-gradients baseline per site name."""

    train: TaggedCorpus
    evaluation: TaggedCorpus | None = None
    baseline: Mapping[str, torch.Tensor] | None = None


@dataclass
class PosData:
    """The corpora of one run: the (limited) training treebank split by document into `fit` (selection
    and probe training) and `test`, the optional out-of-domain `evaluation` set, the chosen classes."""

    corpus: TaggedCorpus
    fit: TaggedCorpus
    test: TaggedCorpus
    evaluation: TaggedCorpus | None
    classes: list[str]
    probe_layer: int


def prepare_data(lm: LoadedModel, train: TaggedCorpus, eval_corpus: TaggedCorpus | None, config: PosConfig) -> PosData:
    """Stage 1: limit the corpora, choose the classes, split by document."""
    probe_layer = lm.layout.n_layers // 2 if config.probe_layer is None else config.probe_layer
    lm.layout.check(Site(probe_layer, config.site[0]))
    corpus = _limit(train, config.max_sentences)
    evaluation = (_limit(eval_corpus, config.max_eval_sentences or config.max_sentences)
                  if eval_corpus is not None else None)
    chosen = resolve_classes("all" if config.every_class else config.classes, [t for s in corpus for t in s.upos])
    fit_part, test_part = corpus.split(config.test_fraction, config.seed)
    shared = {s.sent_id for s in fit_part} & {s.sent_id for s in test_part}
    if shared:
        raise NeurolocError(f"train and test share sentences {sorted(shared)[:3]}: sentence ids must be unique")
    return PosData(corpus, fit_part, test_part, evaluation, chosen, probe_layer)


def find_key_neurons(lm: LoadedModel, data: PosData, config: PosConfig, *, progress: bool = False,
                     baseline: Mapping[str, torch.Tensor] | None = None
                     ) -> tuple[KeyNeurons, AttributionSummary | None]:
    """Stage 2: key neurons per class on the fitting part (attribution recipe, or a score of word activations)."""
    settings, sites = config.settings, lm.layout.sites(list(config.site))
    if not config.attribution:
        key = contrast_key_neurons(lm, data.fit, classes=data.classes, k=config.k, sites=sites,
                                   pooling=config.contrast_pooling, score=config.score, skip_rare=config.every_class,
                                   settings=settings, progress=progress)
        summary = None
    else:
        summary = attribute(lm, data.fit, classes=data.classes, method=config.score, sites=sites,
                            top_percent=config.top_percent, absolute=config.absolute, steps=config.steps,
                            rule=config.rule, baseline=baseline if baseline is not None else config.baseline,
                            batch_size=config.attribution_batch_size, bos=settings.bos, progress=progress)
        key = summary.key_neurons(config.k, skip_empty=config.every_class)
        key.magnitudes = word_magnitudes(lm, data.fit, key.units[key.classes[0]].sites,
                                         pooling=config.contrast_pooling, settings=settings, progress=progress)
    if not len(key.union()):
        raise NeurolocError("no key neurons were found; use more sentences")
    return key, summary


def probe_key_neurons(lm: LoadedModel, data: PosData, key: KeyNeurons, config: PosConfig, *,
                      progress: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """Stage 3: probes on the key neurons' word features vs. random sets, a full layer and the majority
    class, on held-out and out-of-domain words. Returns (probe table, words per split)."""
    seed, union = config.seed, key.union()
    randoms = [(seed + i, random_matched(union, seed + i)) for i in range(config.n_controls)]
    layer_site = Site(data.probe_layer, config.site[0])
    layer_units = UnitSet({layer_site: torch.ones(lm.layout.width(layer_site), dtype=torch.bool)}, lm.identity)
    sets = [("key", seed, union)] + [("random", s, u) for s, u in randoms] + [("layer", seed, layer_units)]
    columns = _columns(u for _, _, u in sets)
    parts = {"train": data.fit, "test": data.test}
    if data.evaluation is not None:
        parts["eval"] = data.evaluation
    tables, X = {}, {}
    for split, part in parts.items():
        tables[split], X[split] = record_word_features(lm, part, columns, pooling=config.probe_pooling,
                                                       settings=config.settings, progress=progress,
                                                       description=f"probe features ({split})")
    y = {split: tables[split]["upos"].to_numpy() for split in parts}
    types = np.concatenate([tables[split]["word"].str.lower().to_numpy() for split in parts])
    labels = np.concatenate([y[split] for split in parts])
    drawn = np.asarray(control_labels(types.tolist(), labels.tolist(), seed=seed))
    bounds = np.cumsum([0] + [len(y[split]) for split in parts])
    control = {split: drawn[bounds[i]:bounds[i + 1]] for i, split in enumerate(parts)}
    splits = [s for s in parts if s != "train"]
    rows: list[dict] = []
    for name, s, units in sets:
        cols = _positions(units, columns)
        rows += _probe_rows(name, s, len(units), {p: X[p][:, cols] for p in parts}, y, control, splits,
                            config.n_bootstrap)
    for split in splits:
        base = majority_baseline(y["train"], y[split], seed=seed, n_bootstrap=config.n_bootstrap)
        rows.append({"neuron_set": "majority", "seed": seed, "n_units": 0, "split": split,
                     "accuracy": base["accuracy"], "macro_f1": base["macro_f1"], "selectivity": np.nan,
                     "accuracy_ci_low": base["accuracy_ci"][0], "accuracy_ci_high": base["accuracy_ci"][1],
                     "macro_f1_ci_low": base["macro_f1_ci"][0], "macro_f1_ci_high": base["macro_f1_ci"][1],
                     "control_accuracy": np.nan, "n_train": len(y["train"]), "n_test": len(y[split])})
    return pd.DataFrame(rows, columns=PROBE_COLUMNS), {split: int(len(y[split])) for split in parts}


def lesion_key_neurons(lm: LoadedModel, data: PosData, key: KeyNeurons, config: PosConfig, *,
                       progress: bool = False) -> tuple[SpecificityResult, TaggedCorpus]:
    """Stage 4: zero each class's key neurons (and matched random sets) on held-out sentences."""
    corpus = _limit(data.test, config.specificity_sentences)
    result = specificity(lm, corpus, {c: u for c, u in key.units.items() if len(u)}, n_random=config.n_controls,
                         seed=config.seed, batch_size=config.settings.batch_size, skip_absent=config.every_class,
                         bos=config.settings.bos, progress=progress)
    return result, corpus


@dataclass
class PosResult(StudyResult):
    """The key neurons per class, the probes against random neurons, and the lesion check."""

    inputs: PosInputs = None
    data: PosData = None
    key_neurons: KeyNeurons = None
    attribution: AttributionSummary | None = None
    probe: pd.DataFrame = None
    specificity: SpecificityResult = None
    n_words: dict = field(default_factory=dict)
    n_specificity: int = 0

    def __post_init__(self) -> None:
        key, spec, data, config = self.key_neurons, self.specificity, self.data, self.config
        self.layers = key.layer_table()
        self.table = self.attribution.table(key) if self.attribution is not None else _contrast_table(key)
        value = "effect_sd" if np.isfinite(spec.summary["effect_sd"].to_numpy(float)).any() else "drop_target"
        label = ("Effect (control SDs of the random lesions' drop)" if value == "effect_sd"
                 else "Drop in mean log-prob (nats)")
        self.figures = {
            "layers": plot_layer_distribution(self.layers, group="class",
                                              title=f"Key neurons per layer ({config.score}, k={config.k})"),
            "probe": plot_probe(self.probe),
            "specificity": plot_heatmap(spec.matrix(value), "Lesioning key neurons: drop in next-word log-prob by "
                                        "class", label)}
        completeness = self.attribution.completeness if self.attribution is not None else None
        self.summary = {
            "score": config.score,
            "classes": key.classes,
            "n_sentences": {"train": len(data.fit), "test": len(data.test),
                            "eval": len(data.evaluation) if data.evaluation else 0, "specificity": self.n_specificity},
            "n_words": self.n_words,
            "attributed_words": dict(zip(key.classes, [int(key.n_words.get(c, 0)) for c in key.classes])),
            "key_counts": {c: len(key.units[c]) for c in key.classes},
            "key_union": len(key.union()),
            "probe_layer": data.probe_layer,
            "probe": _probe_summary(self.probe),
            "specificity": {"drop_target": spec.diagonal_contrast("drop_target"),
                            "effect_sd": spec.diagonal_contrast("effect_sd")},
            "ig_completeness": completeness.summary() if completeness is not None else None,
        }

    def write(self, folder: Path) -> None:
        key = self.key_neurons
        key.save(folder / "key_neurons")
        (folder / "key_neurons.json").write_text(json.dumps(
            {**key.to_json(), "parameters": self.config.to_dict(), "sites": [s.name for s in self.sites()]},
            indent=2, default=str))
        self.layers.to_csv(folder / "layers.csv", index=False)
        self.magnitudes().to_csv(folder / "magnitudes.csv", index=False)
        self.table.to_parquet(folder / "attributions.parquet", index=False)
        self.probe.to_csv(folder / "probe.csv", index=False)
        self.specificity.long.to_csv(folder / "specificity.csv", index=False)
        self.specificity.summary.to_csv(folder / "specificity_summary.csv", index=False)
        for name, figure in self.figures.items():
            save_figure(figure, folder / f"{name}.png")

    def sites(self) -> list[Site]:
        return self.key_neurons.units[self.key_neurons.classes[0]].sites

    def magnitudes(self) -> pd.DataFrame:
        """Every unit's mean |activation| over the training words (unit, site, layer, index, mean_abs_activation)."""
        units = self.key_neurons.units[self.key_neurons.classes[0]]
        return UnitIndex(units.sites, units.widths).table().assign(mean_abs_activation=self.key_neurons.magnitudes)

    def manifest_sections(self) -> dict[str, Any]:
        data, inputs = self.data, self.inputs
        return {"data": {"train": _data_record(inputs.train, len(data.corpus)),
                         "eval": _data_record(inputs.evaluation, len(data.evaluation))
                         if inputs.evaluation is not None else None},
                "split": {"train_documents": sorted(set(data.fit.groups())),
                          "test_documents": sorted(set(data.test.groups())),
                          "train_sentences": [s.sent_id for s in data.fit],
                          "test_sentences": [s.sent_id for s in data.test]},
                "selection": {"classes": data.classes, "probe_layer": data.probe_layer,
                              "sites": [s.name for s in self.sites()],
                              "baseline": "custom" if inputs.baseline is not None else self.config.baseline}}

    def sections(self) -> list[Section]:
        key = self.key_neurons
        text = (f"{self.config.score}: the {self.config.k} key neurons of each of {len(key.classes)} classes "
                f"({len(key.union())} in all) on {len(self.data.fit)} sentences.")
        accuracy = self.probe.groupby(["split", "neuron_set"], sort=False).accuracy.mean().unstack(0).round(3)
        return [Section("Key neurons", text, [self.figures["layers"]], [key.jaccard_table().round(3)]),
                Section("Probes", "Word-level probes on the key neurons against random neurons of the same count per "
                        "layer, a full layer and the majority class.", [self.figures["probe"]],
                        [accuracy.reset_index()]),
                Section("Specificity", "Zeroing each class's key neurons: drop in next-word log-probability by "
                        "class, against random lesions.", [self.figures["specificity"]],
                        [self.specificity.summary.round(4)])]

    def headline(self) -> str:
        key = self.probe[(self.probe.neuron_set == "key") & (self.probe.split == "test")]
        accuracy = f"; probe accuracy on held-out words {key.accuracy.mean():.3f}" if len(key) else ""
        return f"{len(self.key_neurons.union())} key neurons over {len(self.key_neurons.classes)} classes{accuracy}"


_LEGACY = {"method": "score", "n_random": "n_controls"}  # old option names of run_pos / the old PosConfig
_SETTINGS = ("batch_size", "bos", "progress")


def _legacy_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config fields, run settings) from old option names; a mapping baseline goes to the inputs."""
    fields_, settings = {}, {}
    for name, value in options.items():
        if name in _SETTINGS:
            settings[name] = value
        elif name == "extra_parameters":
            continue  # the manifest records every field now
        elif name == "classes" and (value is None or isinstance(value, str)):
            fields_["classes"] = ("all",) if value is None or value.lower() == "all" else parse_list(value)
        else:
            fields_[_LEGACY.get(name, name)] = value
    return fields_, settings


_dataclass_init = PosConfig.__init__


def _init(self: PosConfig, **kwargs: Any) -> None:
    """The old call form `PosConfig(method="gradxact", n_random=5, batch_size=16, bos=..., progress=...)` still
    works for one release (deprecated): old names map to the new fields and run settings."""
    if set(kwargs) & ({*_LEGACY, *_SETTINGS, "extra_parameters"}):
        warnings.warn("PosConfig(method=, n_random=, batch_size=, bos=, progress=, extra_parameters=) is deprecated; "
                      "use score=, n_controls= and settings=RunSettings(...)", DeprecationWarning, stacklevel=2)
        given_settings = kwargs.pop("settings", None)
        kwargs, settings = _legacy_options(kwargs)
        base = given_settings if given_settings is not None else RunSettings(batch_size=16)
        kwargs["settings"] = base.replace(**settings) if settings else base
    _dataclass_init(self, **kwargs)


PosConfig.__init__ = _init  # type: ignore[method-assign]


def run_pos(lm: LoadedModel, train: TaggedCorpus, out_dir: str | Path, config: PosConfig | None = None, *,
            eval_corpus: TaggedCorpus | None = None, **options) -> PosResult:
    """Deprecated (use `neuroloc.run(PosConfig(...), out)`): the pos study on in-memory corpora, written into
    `out_dir` through the runner. `options` override `config`'s fields; the old names still work (`method`
    → score, `n_random` → n_controls, `batch_size` / `bos` / `progress` → the run settings)."""
    warnings.warn("run_pos is deprecated; use neuroloc.run(neuroloc.PosConfig(...), out)", DeprecationWarning,
                  stacklevel=2)
    baseline = options.pop("baseline", None)
    custom = baseline if isinstance(baseline, Mapping) else None
    if isinstance(baseline, str):
        options["baseline"] = baseline
    changes, settings = _legacy_options(options)
    base = config or PosConfig(settings=RunSettings(batch_size=16, progress=False))
    known = {f.name for f in dataclasses.fields(PosConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise NeurolocError(f"run_pos: no option(s) {', '.join(unknown)}; the options are PosConfig's fields")
    config = base.replace(**changes, settings=base.settings.replace(**settings),
                          model=lm.identity.get("spec", "in-memory"))
    inputs = PosInputs(train, eval_corpus, custom)
    return run(config, out_dir, lm=lm, inputs=inputs, options=RunOptions(overwrite=True))


def _contrast_table(key: KeyNeurons) -> pd.DataFrame:
    """Per class × unit for a score of word activations: its value (`welch_t` for the Welch scores, else
    `score`) and key membership."""
    first = key.units[key.classes[0]]
    names = [f"{s.name}[{i}]" for s, w in zip(first.sites, first.widths) for i in range(w)]
    site_col = np.concatenate([[s.kind] * w for s, w in zip(first.sites, first.widths)])
    layer_col = np.concatenate([[s.layer] * w for s, w in zip(first.sites, first.widths)])
    index_col = np.concatenate([np.arange(w) for w in first.widths])
    frames = [pd.DataFrame({"class": c, "unit": names, "site": site_col, "layer": layer_col, "index": index_col,
                            "n_words": int(key.n_words.get(c, 0)),
                            "welch_t" if key.method in ("welch", "one_vs_rest_welch") else "score": key.scores[i],
                            "key": key.units[c].flat_mask().numpy()})
              for i, c in enumerate(key.classes)]
    return pd.concat(frames, ignore_index=True)
