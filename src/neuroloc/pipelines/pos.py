"""`neuroloc pos`: key neurons for parts of speech (Norouzi, Masjedi & Hitzler 2025), end to end.

1. Split the treebank by document into a selection/probe-training part and a held-out test part.
2. On the training part, attribute each word's next-word prediction to `mlp` neurons (integrated
   gradients or gradient × activation) and keep, per class, the k neurons most often in a word's top
   percent — or rank neurons by a Welch t contrast (`method="contrast"`).
3. Probe: a classifier on the word-level activations of the key neurons (union over classes) predicts
   UPOS on held-out sentences and on a second treebank, against random neurons (same per-layer
   counts, several seeds), all neurons of one layer and the majority baseline; selectivity = task −
   control-task accuracy (Hewitt & Liang 2019).
4. Specificity: zero each class's key neurons and measure the drop in next-word log-probability per
   class on the held-out sentences, against matched random lesions.

Outputs (written all at once into `out_dir`): key_neurons.json, key_neurons/<CLASS>/ (UnitSet
folders: `UnitSet.load(out_dir / "key_neurons" / "NOUN")`), layers.csv, attributions.parquet,
probe.csv, specificity.csv, specificity_summary.csv, layers.png, probe.png, specificity.png and
manifest.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from ..evaluate.controls import random_matched
from ..io import atomic_write_json, atomic_write_with, build_manifest, file_sha256, staged_output
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..studies.pos.attribution import ATTRIBUTION_METHODS, AttributionSummary, attribute
from ..studies.pos.key_neurons import DEFAULT_CLASSES, KeyNeurons, contrast_key_neurons, resolve_classes
from ..studies.pos.specificity import SpecificityResult, specificity
from ..stimuli.treebank import TaggedCorpus
from ..probe import control_labels, evaluate_probe, majority_baseline, make_probe, probe_selectivity
from ..record.recorder import Recorder
from ..report.figures import plot_heatmap, plot_layer_distribution, plot_probe, save_figure
from ..units import UnitSet

__all__ = ["METHODS", "PROBE_COLUMNS", "PosConfig", "PosData", "PosResult", "find_key_neurons", "lesion_key_neurons",
           "prepare_data", "probe_key_neurons", "record_word_features", "run_pos"]

METHODS = ATTRIBUTION_METHODS + ("contrast",)
PROBE_COLUMNS = ["neuron_set", "seed", "n_units", "split", "accuracy", "macro_f1", "selectivity",
                 "accuracy_ci_low", "accuracy_ci_high", "macro_f1_ci_low", "macro_f1_ci_high",
                 "control_accuracy", "n_train", "n_test"]


@dataclass
class PosResult:
    """What `run_pos` found; `summary` holds the headline numbers (also in manifest.json)."""

    out_dir: Path
    key_neurons: KeyNeurons
    probe: pd.DataFrame
    specificity: SpecificityResult | None
    summary: dict


# ------------------------------------------------------------------------------------- features
def record_word_features(lm: LoadedModel, corpus: TaggedCorpus, columns: Mapping[Site, np.ndarray], *,
                         pooling: str = "word-mean", batch_size: int = 16, bos: str = "prepend",
                         progress: bool = False, description: str = "recording probe features") -> tuple[pd.DataFrame, np.ndarray]:
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
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=batch_size, bos=bos, progress=progress,
                        description=description)
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


@dataclass(frozen=True)
class PosConfig:
    """Everything `run_pos` can be told (see its docstring); `PosConfig(method="gradxact", k=50)`.

    `batch_size` is texts per recording/scoring batch, `attribution_batch_size` single-token rows per
    attribution pass; `max_sentences` keeps the first sentences of the training treebank (and of the
    evaluation one, unless `max_eval_sentences`); `specificity_sentences` caps the held-out sentences
    the lesion check scores."""

    method: str = "ig"
    classes: str | Iterable[str] | None = DEFAULT_CLASSES
    k: int = 100
    top_percent: float = 5.0
    steps: int = 32
    n_random: int = 5
    probe_layer: int | None = None
    test_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 16
    progress: bool = True
    max_sentences: int | None = None
    max_eval_sentences: int | None = None
    specificity_sentences: int | None = None
    attribution_batch_size: int = 64
    rule: str = "midpoint"
    baseline: str | Mapping[str, torch.Tensor] | None = "zero"
    absolute: bool = False
    probe_pooling: str = "word-mean"
    contrast_pooling: str = "word-predict"
    n_bootstrap: int = 1000
    bos: str = "prepend"
    extra_parameters: dict | None = None

    def check(self) -> None:
        if self.method not in METHODS:
            raise NeurolocError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise NeurolocError(f"k must be an int >= 1, got {self.k!r}")

    @property
    def every_class(self) -> bool:
        """All classes asked for: those without usable words (e.g. only inside merged tokens) are left out."""
        return self.classes is None or (isinstance(self.classes, str) and self.classes.lower() == "all")

    def parameters(self, classes: list[str], probe_layer: int, sites: Sequence[Site]) -> dict:
        """The manifest's record of this configuration."""
        return {
            "method": self.method, "classes": classes, "k": self.k, "top_percent": self.top_percent,
            "steps": self.steps, "rule": self.rule,
            "baseline": self.baseline if isinstance(self.baseline, str) or self.baseline is None else "custom",
            "absolute": self.absolute, "n_random": self.n_random, "probe_layer": probe_layer,
            "test_fraction": self.test_fraction, "seed": self.seed, "batch_size": self.batch_size,
            "attribution_batch_size": self.attribution_batch_size, "max_sentences": self.max_sentences,
            "max_eval_sentences": self.max_eval_sentences, "specificity_sentences": self.specificity_sentences,
            "probe_pooling": self.probe_pooling,
            "contrast_pooling": self.contrast_pooling if self.method == "contrast" else None,
            "n_bootstrap": self.n_bootstrap, "bos": self.bos, "sites": [s.name for s in sites], **(self.extra_parameters or {}),
        }


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
    config.check()
    probe_layer = lm.layout.n_layers // 2 if config.probe_layer is None else config.probe_layer
    lm.layout.check(Site(probe_layer, "mlp"))
    corpus = _limit(train, config.max_sentences)
    evaluation = (_limit(eval_corpus, config.max_eval_sentences or config.max_sentences)
                  if eval_corpus is not None else None)
    chosen = resolve_classes(config.classes, [t for s in corpus for t in s.upos])
    fit_part, test_part = corpus.split(config.test_fraction, config.seed)
    shared = {s.sent_id for s in fit_part} & {s.sent_id for s in test_part}
    if shared:
        raise NeurolocError(f"train and test share sentences {sorted(shared)[:3]}: sentence ids must be unique")
    return PosData(corpus, fit_part, test_part, evaluation, chosen, probe_layer)


def find_key_neurons(lm: LoadedModel, data: PosData, config: PosConfig) -> tuple[KeyNeurons, AttributionSummary | None]:
    """Stage 2: key neurons per class on the fitting part (attribution recipe, or the Welch contrast)."""
    if config.method == "contrast":
        key = contrast_key_neurons(lm, data.fit, classes=data.classes, k=config.k, pooling=config.contrast_pooling,
                                   batch_size=config.batch_size, skip_rare=config.every_class,
                                   bos=config.bos, progress=config.progress)
        summary = None
    else:
        summary = attribute(lm, data.fit, classes=data.classes, method=config.method, top_percent=config.top_percent,
                            absolute=config.absolute, steps=config.steps, rule=config.rule, baseline=config.baseline,
                            batch_size=config.attribution_batch_size, bos=config.bos, progress=config.progress)
        key = summary.key_neurons(config.k, skip_empty=config.every_class)
    if not len(key.union()):
        raise NeurolocError("no key neurons were found; use more sentences")
    return key, summary


def probe_key_neurons(lm: LoadedModel, data: PosData, key: KeyNeurons,
                      config: PosConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Stage 3: probes on the key neurons' word features vs. random sets, a full layer and the majority
    class, on held-out and out-of-domain words. Returns (probe table, words per split)."""
    seed, union = config.seed, key.union()
    randoms = [(seed + i, random_matched(union, seed + i)) for i in range(config.n_random)]
    layer_site = Site(data.probe_layer, "mlp")
    layer_units = UnitSet({layer_site: torch.ones(lm.layout.width("mlp"), dtype=torch.bool)}, lm.identity)
    sets = [("key", seed, union)] + [("random", s, u) for s, u in randoms] + [("layer", seed, layer_units)]
    columns = _columns(u for _, _, u in sets)
    parts = {"train": data.fit, "test": data.test}
    if data.evaluation is not None:
        parts["eval"] = data.evaluation
    tables, X = {}, {}
    for split, part in parts.items():
        tables[split], X[split] = record_word_features(lm, part, columns, pooling=config.probe_pooling,
                                                       batch_size=config.batch_size, bos=config.bos,
                                                       progress=config.progress,
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


def lesion_key_neurons(lm: LoadedModel, data: PosData, key: KeyNeurons,
                       config: PosConfig) -> tuple[SpecificityResult, TaggedCorpus]:
    """Stage 4: zero each class's key neurons (and matched random sets) on held-out sentences."""
    corpus = _limit(data.test, config.specificity_sentences)
    result = specificity(lm, corpus, {c: u for c, u in key.units.items() if len(u)}, n_random=config.n_random,
                         seed=config.seed, batch_size=config.batch_size, skip_absent=config.every_class,
                         bos=config.bos, progress=config.progress)
    return result, corpus


def _write_outputs(out_dir: str | Path, lm: LoadedModel, train: TaggedCorpus, eval_corpus: TaggedCorpus | None,
                   data: PosData, key: KeyNeurons, attribution: AttributionSummary | None, probe: pd.DataFrame,
                   spec: SpecificityResult, parameters: dict, summary: dict, config: PosConfig) -> None:
    """Stage 5: every output at once (all or nothing)."""
    layers = key.layer_table()
    table = attribution.table(key) if attribution is not None else _contrast_table(key)
    with staged_output(out_dir) as staging:
        key.save(staging / "key_neurons")
        atomic_write_json(staging / "key_neurons.json", {**key.to_json(), "parameters": parameters})
        atomic_write_with(staging / "layers.csv", lambda tmp: layers.to_csv(tmp, index=False))
        atomic_write_with(staging / "attributions.parquet", lambda tmp: table.to_parquet(tmp, index=False))
        atomic_write_with(staging / "probe.csv", lambda tmp: probe.to_csv(tmp, index=False))
        atomic_write_with(staging / "specificity.csv", lambda tmp: spec.long.to_csv(tmp, index=False))
        atomic_write_with(staging / "specificity_summary.csv", lambda tmp: spec.summary.to_csv(tmp, index=False))
        save_figure(plot_layer_distribution(layers, title=f"Key neurons per layer ({config.method}, k={config.k})",
                                            group="class"), staging / "layers.png")
        save_figure(plot_probe(probe), staging / "probe.png")
        value = "effect_sd" if np.isfinite(spec.summary["effect_sd"].to_numpy(float)).any() else "drop_target"
        label = ("Effect (control SDs of the random lesions' drop)" if value == "effect_sd"
                 else "Drop in mean log-prob (nats)")
        save_figure(plot_heatmap(spec.matrix(value), "Lesioning key neurons: drop in next-word log-prob by class",
                                 label), staging / "specificity.png")
        atomic_write_json(staging / "manifest.json", build_manifest(
            "pos", parameters, model=lm.identity,
            data={"train": _data_record(train, len(data.corpus)),
                  "eval": _data_record(eval_corpus, len(data.evaluation)) if eval_corpus is not None else None},
            split={"train_documents": sorted(set(data.fit.groups())),
                   "test_documents": sorted(set(data.test.groups())),
                   "train_sentences": [s.sent_id for s in data.fit], "test_sentences": [s.sent_id for s in data.test]},
            results=summary,
        ))


def run_pos(lm: LoadedModel, train: TaggedCorpus, out_dir: str | Path, config: PosConfig | None = None, *,
            eval_corpus: TaggedCorpus | None = None, **options) -> PosResult:
    """Find key neurons per POS class on `train`, probe and lesion them; write results to `out_dir`.

    `config` is a `PosConfig`; keyword `options` override its fields (`run_pos(lm, train, out,
    method="gradxact", k=50)`). `train` is split by document (`test_fraction` held out; with a single
    document, by sentence): key neurons are selected and probes trained on one part only, and probes and
    lesions are scored on the other (split "test") and on `eval_corpus` (split "eval", out of domain).
    Stages: `prepare_data` → `find_key_neurons` → `probe_key_neurons` → `lesion_key_neurons` → outputs.
    Returns a `PosResult`; nothing is written unless every stage succeeds.
    """
    try:
        config = replace(config or PosConfig(), **options)
    except TypeError as error:
        raise NeurolocError(f"run_pos: {error}; the options are PosConfig's fields") from None
    started = time.perf_counter()
    timings: dict[str, float] = {}
    data = prepare_data(lm, train, eval_corpus, config)
    tick = time.perf_counter()
    key, attribution = find_key_neurons(lm, data, config)
    timings["key_neurons_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    probe, n_words = probe_key_neurons(lm, data, key, config)
    timings["probe_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    spec, spec_corpus = lesion_key_neurons(lm, data, key, config)
    timings["specificity_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    completeness = attribution.completeness.summary() if attribution and attribution.completeness else None
    summary = {
        "method": config.method,
        "classes": key.classes,
        "n_sentences": {"train": len(data.fit), "test": len(data.test),
                        "eval": len(data.evaluation) if data.evaluation else 0, "specificity": len(spec_corpus)},
        "n_words": n_words,
        "attributed_words": dict(zip(key.classes, [int(key.n_words.get(c, 0)) for c in key.classes])),
        "key_counts": {c: len(key.units[c]) for c in key.classes},
        "key_union": len(key.union()),
        "probe_layer": data.probe_layer,
        "probe": _probe_summary(probe),
        "specificity": {"drop_target": spec.diagonal_contrast("drop_target"),
                        "effect_sd": spec.diagonal_contrast("effect_sd")},
        "ig_completeness": completeness,
        "timings": timings,
    }
    parameters = config.parameters(data.classes, data.probe_layer, key.units[key.classes[0]].sites)
    _write_outputs(out_dir, lm, train, eval_corpus, data, key, attribution, probe, spec, parameters, summary, config)
    return PosResult(Path(out_dir), key, probe, spec, summary)


def _contrast_table(key: KeyNeurons) -> pd.DataFrame:
    """Per class × unit for the contrast method: Welch t (`score`) and key membership."""
    first = key.units[key.classes[0]]
    names = [f"{s.name}[{i}]" for s, w in zip(first.sites, first.widths) for i in range(w)]
    site_col = np.concatenate([[s.kind] * w for s, w in zip(first.sites, first.widths)])
    layer_col = np.concatenate([[s.layer] * w for s, w in zip(first.sites, first.widths)])
    index_col = np.concatenate([np.arange(w) for w in first.widths])
    frames = [pd.DataFrame({"class": c, "unit": names, "site": site_col, "layer": layer_col, "index": index_col,
                            "n_words": int(key.n_words.get(c, 0)), "welch_t": key.scores[i],
                            "key": key.units[c].flat_mask().numpy()})
              for i, c in enumerate(key.classes)]
    return pd.concat(frames, ignore_index=True)
