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
from dataclasses import dataclass
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

__all__ = ["METHODS", "PROBE_COLUMNS", "PosResult", "record_word_features", "run_pos"]

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
                         pooling: str = "word-mean", batch_size: int = 16, progress: bool = False,
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
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=batch_size, progress=progress, description=description)
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


def run_pos(
    lm: LoadedModel,
    train: TaggedCorpus,
    out_dir: str | Path,
    *,
    eval_corpus: TaggedCorpus | None = None,
    method: str = "ig",
    classes: str | Iterable[str] | None = DEFAULT_CLASSES,
    k: int = 100,
    top_percent: float = 5.0,
    steps: int = 32,
    n_random: int = 5,
    probe_layer: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    max_sentences: int | None = None,
    max_eval_sentences: int | None = None,
    specificity_sentences: int | None = None,
    attribution_batch_size: int = 64,
    rule: str = "midpoint",
    baseline: str | Mapping[str, torch.Tensor] | None = "zero",
    absolute: bool = False,
    probe_pooling: str = "word-mean",
    contrast_pooling: str = "word-predict",
    n_bootstrap: int = 1000,
    extra_parameters: dict | None = None,
) -> PosResult:
    """Find key neurons per POS class on `train`, probe and lesion them; write results to `out_dir`.

    `train` is split by document (`test_fraction` held out; with a single document, by sentence):
    key neurons are selected and probes trained on one part only, and probes and lesions are scored
    on the other (split "test") and on `eval_corpus` (split "eval", out of domain). `max_sentences`
    keeps the first sentences of `train` (and of `eval_corpus`, unless `max_eval_sentences`);
    `specificity_sentences` caps the held-out sentences the lesion check scores. `batch_size` is texts
    per recording/scoring batch, `attribution_batch_size` single-token rows per attribution pass.
    Returns a `PosResult`; nothing is written unless every step succeeds.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if method not in METHODS:
        raise NeurolocError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeurolocError(f"k must be an int >= 1, got {k!r}")
    layout = lm.layout
    probe_layer = layout.n_layers // 2 if probe_layer is None else probe_layer
    layout.check(Site(probe_layer, "mlp"))
    corpus = _limit(train, max_sentences)
    eval_set = _limit(eval_corpus, max_eval_sentences or max_sentences) if eval_corpus is not None else None
    chosen = resolve_classes(classes, [t for s in corpus for t in s.upos])
    # with every class, those without usable words (e.g. only inside merged tokens) are left out
    every_class = classes is None or (isinstance(classes, str) and classes.lower() == "all")
    fit_part, test_part = corpus.split(test_fraction, seed)
    shared = {s.sent_id for s in fit_part} & {s.sent_id for s in test_part}
    if shared:
        raise NeurolocError(f"train and test share sentences {sorted(shared)[:3]}: sentence ids must be unique")

    # -- key neurons ------------------------------------------------------------------------------
    tick = time.perf_counter()
    summary_attr: AttributionSummary | None = None
    if method == "contrast":
        key = contrast_key_neurons(lm, fit_part, classes=chosen, k=k, pooling=contrast_pooling,
                                   batch_size=batch_size, skip_rare=every_class, progress=progress)
    else:
        summary_attr = attribute(lm, fit_part, classes=chosen, method=method, top_percent=top_percent,
                                 absolute=absolute, steps=steps, rule=rule, baseline=baseline,
                                 batch_size=attribution_batch_size, progress=progress)
        key = summary_attr.key_neurons(k, skip_empty=every_class)
    timings["key_neurons_s"] = time.perf_counter() - tick
    union = key.union()
    if not len(union):
        raise NeurolocError("no key neurons were found; use more sentences")

    # -- probe ---------------------------------------------------------------------------------------
    tick = time.perf_counter()
    randoms = [(seed + i, random_matched(union, seed + i)) for i in range(n_random)]
    layer_site = Site(probe_layer, "mlp")
    layer_units = UnitSet({layer_site: torch.ones(layout.width("mlp"), dtype=torch.bool)}, lm.identity)
    sets = [("key", seed, union)] + [("random", s, u) for s, u in randoms] + [("layer", seed, layer_units)]
    columns = _columns(u for _, _, u in sets)
    parts = {"train": fit_part, "test": test_part}
    if eval_set is not None:
        parts["eval"] = eval_set
    tables, X = {}, {}
    for split, part in parts.items():
        tables[split], X[split] = record_word_features(lm, part, columns, pooling=probe_pooling, batch_size=batch_size,
                                                       progress=progress, description=f"probe features ({split})")
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
        rows += _probe_rows(name, s, len(units), {p: X[p][:, cols] for p in parts}, y, control, splits, n_bootstrap)
    for split in splits:
        base = majority_baseline(y["train"], y[split], seed=seed, n_bootstrap=n_bootstrap)
        rows.append({"neuron_set": "majority", "seed": seed, "n_units": 0, "split": split,
                     "accuracy": base["accuracy"], "macro_f1": base["macro_f1"], "selectivity": np.nan,
                     "accuracy_ci_low": base["accuracy_ci"][0], "accuracy_ci_high": base["accuracy_ci"][1],
                     "macro_f1_ci_low": base["macro_f1_ci"][0], "macro_f1_ci_high": base["macro_f1_ci"][1],
                     "control_accuracy": np.nan, "n_train": len(y["train"]), "n_test": len(y[split])})
    probe = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    timings["probe_s"] = time.perf_counter() - tick

    # -- specificity -------------------------------------------------------------------------------
    tick = time.perf_counter()
    spec_corpus = _limit(test_part, specificity_sentences)
    spec = specificity(lm, spec_corpus, {c: u for c, u in key.units.items() if len(u)}, n_random=n_random,
                       seed=seed, batch_size=batch_size, skip_absent=every_class, progress=progress)
    timings["specificity_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    completeness = summary_attr.completeness.summary() if summary_attr and summary_attr.completeness else None
    summary = {
        "method": method,
        "classes": key.classes,
        "n_sentences": {"train": len(fit_part), "test": len(test_part), "eval": len(eval_set) if eval_set else 0,
                        "specificity": len(spec_corpus)},
        "n_words": {split: int(len(y[split])) for split in parts},
        "attributed_words": dict(zip(key.classes, [int(key.n_words.get(c, 0)) for c in key.classes])),
        "key_counts": {c: len(key.units[c]) for c in key.classes},
        "key_union": len(union),
        "probe_layer": probe_layer,
        "probe": _probe_summary(probe),
        "specificity": {"drop_target": spec.diagonal_contrast("drop_target"),
                        "effect_sd": spec.diagonal_contrast("effect_sd")},
        "ig_completeness": completeness,
        "timings": timings,
    }
    parameters = {
        "method": method, "classes": chosen, "k": k, "top_percent": top_percent, "steps": steps, "rule": rule,
        "baseline": baseline if isinstance(baseline, str) or baseline is None else "custom",
        "absolute": absolute, "n_random": n_random, "probe_layer": probe_layer, "test_fraction": test_fraction,
        "seed": seed, "batch_size": batch_size, "attribution_batch_size": attribution_batch_size,
        "max_sentences": max_sentences, "max_eval_sentences": max_eval_sentences,
        "specificity_sentences": specificity_sentences, "probe_pooling": probe_pooling,
        "contrast_pooling": contrast_pooling if method == "contrast" else None, "n_bootstrap": n_bootstrap,
        "sites": [s.name for s in key.units[key.classes[0]].sites], **(extra_parameters or {}),
    }

    # -- outputs (all or nothing) ---------------------------------------------------------------------
    layers = key.layer_table()
    if summary_attr is not None:
        table = summary_attr.table(key)
    else:
        table = _contrast_table(key)
    with staged_output(out_dir) as staging:
        key.save(staging / "key_neurons")
        atomic_write_json(staging / "key_neurons.json", {**key.to_json(), "parameters": parameters})
        atomic_write_with(staging / "layers.csv", lambda tmp: layers.to_csv(tmp, index=False))
        atomic_write_with(staging / "attributions.parquet", lambda tmp: table.to_parquet(tmp, index=False))
        atomic_write_with(staging / "probe.csv", lambda tmp: probe.to_csv(tmp, index=False))
        atomic_write_with(staging / "specificity.csv", lambda tmp: spec.long.to_csv(tmp, index=False))
        atomic_write_with(staging / "specificity_summary.csv", lambda tmp: spec.summary.to_csv(tmp, index=False))
        save_figure(plot_layer_distribution(layers, title=f"Key neurons per layer ({method}, k={k})",
                                            group="class"), staging / "layers.png")
        save_figure(plot_probe(probe), staging / "probe.png")
        value = "effect_sd" if np.isfinite(spec.summary["effect_sd"].to_numpy(float)).any() else "drop_target"
        label = ("Effect (control SDs of the random lesions' drop)" if value == "effect_sd"
                 else "Drop in mean log-prob (nats)")
        save_figure(plot_heatmap(spec.matrix(value), "Lesioning key neurons: drop in next-word log-prob by class",
                                 label), staging / "specificity.png")
        atomic_write_json(staging / "manifest.json", build_manifest(
            "pos", parameters, model=lm.identity,
            data={"train": _data_record(train, len(corpus)),
                  "eval": _data_record(eval_corpus, len(eval_set)) if eval_corpus is not None else None},
            split={"train_documents": sorted(set(fit_part.groups())), "test_documents": sorted(set(test_part.groups())),
                   "train_sentences": [s.sent_id for s in fit_part], "test_sentences": [s.sent_id for s in test_part]},
            results=summary,
        ))
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
