"""Key neurons for parts of speech: the selection recipe and the contrast alternative.

The recipe of Norouzi, Masjedi & Hitzler (2025): every word of a class ranks all units by their
attribution to the prediction of that word; its top `top_percent` % units count as "important for
this word". Per class, the `k` units that are important for the most words are the class's key
neurons. Ties go to the lower unit index everywhere (units are one flat vector over the attributed
sites, in site order), so the selection is reproducible bit for bit.

The recipe is a pure function of an attribution table (`select_key_neurons`); for large corpora the
same counts are streamed with `ClassFrequency`, which never holds more than one batch of words.

The contrast alternative (`contrast_key_neurons`) ranks units by the Welch t of their word-level
activations at words of the class against all other words, from streamed moments.

Both select through the registered scores (`gradxact` / `ig` with the `frequency` aggregate, reading the
counts as the `attribution` statistic; `one_vs_rest_welch`) and the Localizer's one selection rule
(`select_units`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import NeurolocError
from ...localize.localizer import Localizer
from ...localize.selection import select_top
from ...models.layout import Site
from ...record.stats import StatsStore
from ...settings import RunSettings
from ...stimuli.design import Design
from ...units import LabeledUnits, UnitSet

__all__ = [
    "DEFAULT_CLASSES", "UPOS_TAGS", "ClassFrequency", "KeyNeurons", "contrast_key_neurons", "contrast_scores",
    "key_from_counts", "mean_abs_activations", "n_top", "resolve_classes", "select_key_neurons", "select_units",
    "top_percent_indices", "word_magnitudes",
]

DEFAULT_CLASSES = ("NOUN", "VERB", "ADJ", "ADV")
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
             "PUNCT", "SCONJ", "SYM", "VERB", "X")


# ------------------------------------------------------------------------------------------ classes
def resolve_classes(classes: str | Iterable[str] | None, available: Iterable[str]) -> list[str]:
    """The classes to study: `None` or "all" = every label in `available` (sorted); otherwise the
    given classes, each of which must occur in `available` (else an error naming what does)."""
    present = sorted(set(available))
    if classes is None or (isinstance(classes, str) and classes.lower() == "all"):
        if not present:
            raise NeurolocError("no words with a POS tag to choose classes from")
        return present
    chosen = [classes] if isinstance(classes, str) else list(classes)
    if not chosen:
        raise NeurolocError("classes is empty; give POS tags such as NOUN VERB ADJ ADV, or 'all'")
    if len(set(chosen)) != len(chosen):
        raise NeurolocError(f"classes are repeated: {chosen}")
    missing = [c for c in chosen if c not in present]
    if missing:
        hint = "" if all(c in UPOS_TAGS for c in missing) else f" (UPOS tags are {', '.join(UPOS_TAGS)})"
        raise NeurolocError(
            f"unknown or absent class(es) {missing}: no word carries that tag{hint}; "
            f"tags present: {', '.join(present) or 'none'}"
        )
    return chosen


# --------------------------------------------------------------------------------------- the recipe
def n_top(n_units: int, percent: float) -> int:
    """Units in a word's top `percent` %: rounded half up, at least one (as `select_top`)."""
    if isinstance(percent, bool) or not 0 < float(percent) <= 100:
        raise NeurolocError(f"top_percent must be in (0, 100], got {percent!r}")
    if n_units < 1:
        raise NeurolocError("there are no units to rank")
    return max(1, int(np.floor(float(percent) * n_units / 100 + 0.5)))


def top_percent_indices(scores: np.ndarray | torch.Tensor, percent: float, *, absolute: bool = False) -> np.ndarray:
    """Per row of a (words, units) attribution table, the indices of its top `percent` % units.

    Largest attribution first (with `absolute`, largest |attribution|); equal scores go to the lower
    unit index. Returns a (words, m) int64 array, each row in rank order.
    """
    values = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)
    if values.ndim != 2:
        raise NeurolocError(f"attributions must be a (words, units) table, got shape {tuple(values.shape)}")
    values = values.detach().cpu().double()
    if torch.isnan(values).any():
        raise NeurolocError("attributions contain NaN; the model or the attribution overflowed")
    m = n_top(values.shape[1], percent)
    if values.shape[0] == 0:
        return np.zeros((0, m), dtype=np.int64)
    key = values.abs() if absolute else values
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # stable: ties keep unit order
    return order[:, :m].numpy().astype(np.int64)


def key_from_counts(counts: np.ndarray, k: int) -> np.ndarray:
    """The (at most) `k` most frequent units of one class: indices, most frequent first, ties by unit
    index. Units never in any word's top set (count 0) are never key neurons, so fewer than `k` come
    back when fewer units were ever selected."""
    counts = np.asarray(counts)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise NeurolocError(f"k must be an int >= 1, got {k!r}")
    nonzero = counts > 0
    if not nonzero.any():
        return np.zeros(0, dtype=np.int64)
    mask = select_top(counts.astype(np.float64), count=int(min(k, nonzero.sum())), eligible=nonzero)
    chosen = np.flatnonzero(mask)
    return chosen[np.lexsort((chosen, -counts[chosen]))].astype(np.int64)


class ClassFrequency:
    """Streaming per-class counts of how often each unit is in a word's top `top_percent` %.

    Also keeps, per class and unit, the sum of attributions and of |attributions|, so mean
    attributions come out without storing the table. `update` takes one batch of words at a time.
    """

    def __init__(self, classes: Sequence[str], n_units: int, top_percent: float = 5.0, *,
                 absolute: bool = False) -> None:
        self.classes = list(classes)
        if not self.classes:
            raise NeurolocError("ClassFrequency needs at least one class")
        self.n_units = int(n_units)
        self.top_percent = float(top_percent)
        self.m = n_top(self.n_units, top_percent)
        self.absolute = absolute
        self.counts = np.zeros((len(self.classes), self.n_units), dtype=np.int64)
        self.sums = np.zeros((len(self.classes), self.n_units), dtype=np.float64)
        self.abs_sums = np.zeros((len(self.classes), self.n_units), dtype=np.float64)
        self.n_words = np.zeros(len(self.classes), dtype=np.int64)
        self._row = {c: i for i, c in enumerate(self.classes)}

    def update(self, labels: Sequence[str], scores: np.ndarray | torch.Tensor) -> "ClassFrequency":
        """Add a batch: `labels[i]` is word i's class, `scores[i]` its attribution to every unit.
        Words of other classes are ignored."""
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().double().numpy()
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_units:
            raise NeurolocError(f"expected a (words, {self.n_units}) attribution table, got shape {values.shape}")
        if len(labels) != values.shape[0]:
            raise NeurolocError(f"{len(labels)} labels for {values.shape[0]} rows of attributions")
        keep = np.array([label in self._row for label in labels], dtype=bool)
        if not keep.any():
            return self
        rows = np.array([self._row[label] for label, k in zip(labels, keep) if k], dtype=np.int64)
        values = values[keep]
        top = top_percent_indices(values, self.top_percent, absolute=self.absolute)
        np.add.at(self.counts, (np.repeat(rows, top.shape[1]), top.ravel()), 1)
        np.add.at(self.sums, rows, values)
        np.add.at(self.abs_sums, rows, np.abs(values))
        self.n_words += np.bincount(rows, minlength=len(self.classes))
        return self

    def merge(self, other: "ClassFrequency") -> "ClassFrequency":
        if (other.classes, other.n_units, other.top_percent, other.absolute) != (
                self.classes, self.n_units, self.top_percent, self.absolute):
            raise NeurolocError("cannot merge class frequencies with different classes, widths or top_percent")
        self.counts += other.counts
        self.sums += other.sums
        self.abs_sums += other.abs_sums
        self.n_words += other.n_words
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics protocol (`neuroloc.record.stats`): counts and sums as tensors."""
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in ("counts", "sums", "abs_sums", "n_words")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("counts", "sums", "abs_sums", "n_words"):
            value = state[name].cpu().numpy()
            if value.shape != getattr(self, name).shape:
                raise NeurolocError(f"ClassFrequency state {name!r} has shape {value.shape}, expected "
                                    f"{getattr(self, name).shape}")
            setattr(self, name, value.copy())

    def to(self, device: torch.device | str) -> "ClassFrequency":
        """Counts live in host memory (numpy): attribution rows are copied here batch by batch."""
        return self

    def frequency(self) -> np.ndarray:
        """Share of the class's words whose top set holds the unit, (classes, units)."""
        return self.counts / np.maximum(self.n_words, 1)[:, None]

    def mean_attribution(self, absolute: bool = False) -> np.ndarray:
        return (self.abs_sums if absolute else self.sums) / np.maximum(self.n_words, 1)[:, None]

    def store(self, sites: Sequence[Site], widths: Sequence[int]) -> StatsStore:
        """The counts and sums as the `attribution` statistic of a `StatsStore`, per class and site (units
        flat over `sites` in order, `widths` each): what the registered attribution scores read."""
        stats = StatsStore()
        bounds = np.cumsum([0, *widths])
        for i, c in enumerate(self.classes):
            for site, start, end in zip(sites, bounds[:-1], bounds[1:]):
                stats.entry("attribution", c, site.name, int(end - start)).add(
                    int(self.n_words[i]), torch.from_numpy(self.sums[i, start:end]),
                    torch.from_numpy(self.abs_sums[i, start:end]), torch.from_numpy(self.counts[i, start:end]))
        return stats

    def select(self, k: int = 100, *, skip_empty: bool = False) -> dict[str, np.ndarray]:
        """Per class, the key units' flat indices (see `key_from_counts`). A class without words is
        an error, not an empty set — or, with `skip_empty`, left out."""
        empty = [c for c, n in zip(self.classes, self.n_words) if n == 0]
        if empty and not skip_empty:
            raise NeurolocError(f"no attributed words of class(es) {empty}; use more sentences or other classes")
        if len(empty) == len(self.classes):
            raise NeurolocError("no attributed words of any class; use more sentences or other classes")
        return {c: key_from_counts(self.counts[i], k) for i, c in enumerate(self.classes) if c not in empty}


def select_key_neurons(
    scores: np.ndarray | torch.Tensor,
    labels: Sequence[str],
    *,
    classes: str | Iterable[str] | None = DEFAULT_CLASSES,
    k: int = 100,
    top_percent: float = 5.0,
    absolute: bool = False,
) -> dict[str, np.ndarray]:
    """The recipe on a whole attribution table: per class, the flat indices of its key units.

    `scores` is (words, units), `labels` each word's class. Each word contributes its top
    `top_percent` % units; per class the `k` units counted most often win (ties: lower index).
    `classes=None` or "all" takes every label present.
    """
    chosen = resolve_classes(classes, labels)
    values = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if values.ndim != 2:
        raise NeurolocError(f"attributions must be a (words, units) table, got shape {values.shape}")
    counter = ClassFrequency(chosen, values.shape[1], top_percent, absolute=absolute)
    return counter.update(list(labels), values).select(k)


def select_units(stats: StatsStore, classes: Sequence[str], k: int, *, score: str, options: dict | None = None,
                 model: dict | None = None) -> tuple[LabeledUnits, np.ndarray]:
    """Per class, the `k` best units by a registered `score` of `stats` (one against the other words),
    through the Localizer's one selection rule over every unit together (ties to the lower index; a score
    with its own eligibility may give fewer). Returns the units and the scores (classes × units)."""
    sites = [Site.parse(name) for name in stats.sites()]
    localizer = Localizer(sorted({s.kind for s in sites}), score=score, count=int(min(k, _n_units(stats))),
                          per_kind=False, options=options)
    localizer.fit_stats(stats, model=model, design=Design.one_vs_rest(classes))
    selected = localizer.units_
    units = LabeledUnits({classes[0]: selected}) if isinstance(selected, UnitSet) else \
        LabeledUnits({c: selected[c] for c in classes})
    return units, localizer.result_.values


def _n_units(stats: StatsStore) -> int:
    """Units over every site of a store (one label's widths)."""
    kind, label = next(iter(stats.entries))[:2]
    return sum(entry.width for (k, lab, _), entry in stats.entries.items() if k == kind and lab == label)


# ------------------------------------------------------------------------------------ result object
@dataclass
class KeyNeurons:
    """Per-class key units over the attributed sites, with the overlap and depth views."""

    classes: list[str]
    units: LabeledUnits
    method: str
    scores: np.ndarray | None = None  # (classes, units) ranking score: frequency or Welch t
    n_words: dict[str, int] = field(default_factory=dict)
    magnitudes: np.ndarray | None = None  # (units,) mean |activation| over the words: magnitude-matched controls

    @classmethod
    def from_indices(cls, indices: Mapping[str, np.ndarray], sites: list[Site], widths: list[int], *,
                     method: str, model: dict | None = None, scores: np.ndarray | None = None,
                     n_words: Mapping[str, int] | None = None) -> "KeyNeurons":
        units = LabeledUnits({c: UnitSet.from_flat(np.asarray(idx, dtype=np.int64), sites, widths, model=model)
                              for c, idx in indices.items()})
        return cls(list(indices), units, method, scores, dict(n_words or {}))

    def union(self) -> UnitSet:
        return self.units.union()

    def jaccard_table(self) -> pd.DataFrame:
        """Pairwise Jaccard overlap of the classes' key sets (a symmetric class × class frame)."""
        frame = self.units.jaccard()
        frame.index.name = frame.columns.name = "class"
        return frame

    def layer_table(self) -> pd.DataFrame:
        """Rows of class, site, layer, n_units, n_selected."""
        return self.units.per_layer_counts().rename(columns={"label": "class"})[
            ["class", "site", "layer", "n_units", "n_selected"]]

    def to_json(self) -> dict:
        layers = self.layer_table()
        return {
            "method": self.method,
            "classes": {
                c: {
                    "count": len(self.units[c]),
                    "n_words": int(self.n_words.get(c, 0)),
                    "names": self.units[c].names(),
                    "per_layer": {f"layers.{r.layer}.{r.site}": int(r.n_selected)
                                  for r in layers[layers["class"] == c].itertuples() if r.n_selected},
                }
                for c in self.classes
            },
            "union": len(self.union()),
            "jaccard": {a: {b: float(v) for b, v in row.items()} for a, row in self.jaccard_table().iterrows()},
        }

    def save(self, directory) -> None:
        """The `LabeledUnits` of every class in `directory` (`LabeledUnits.load(directory)`), and one
        UnitSet folder per class, `<directory>/<CLASS>/` (`UnitSet.load(directory / CLASS)`)."""
        from pathlib import Path

        directory = Path(directory)
        self.units.save(directory)
        for c in self.classes:
            self.units[c].save(directory / safe_name(c))


def safe_name(label: str) -> str:
    """A class label as a file-name component (UPOS tags are unchanged)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label) or "_"


# ------------------------------------------------------------------------------ contrast alternative
def _check_word_counts(stats, classes: Sequence[str]) -> None:
    """Every class needs two words, and so do the other words together (a Welch t needs two per side)."""
    present = stats.labels("moments")
    total = sum(stats.count(c) for c in present)
    for c in classes:
        n = stats.count(c) if c in present else 0
        if n < 2:
            raise NeurolocError(f"contrast: class {c!r} has {n} words; a t test needs at least 2")
        if total - n < 2:
            raise NeurolocError(f"contrast: fewer than 2 words outside class {c!r}")


def contrast_scores(stats, classes: Sequence[str], sites: Sequence[Site]) -> np.ndarray:
    """Welch t (class minus all other words) per class and unit, from a `StatsStore` whose labels are
    word labels and whose sites are `sites` (by name): the core's one-vs-rest Welch score. Returns
    (classes, units) over the sites laid end to end. Every class needs two words, and so do the other
    words together."""
    from ...localize.score_functions import one_vs_rest_welch

    _check_word_counts(stats, classes)
    return one_vs_rest_welch(stats, Design.one_vs_rest(classes)).values


def word_moments(lm, corpus, sites: Sequence[Site], *, pooling: str, settings: RunSettings,
                 progress: bool = False) -> StatsStore:
    """Word-level activations (pooled per word by the Recorder, under the run settings' BOS policy and batch
    size) streamed into moments per UPOS tag; nothing per word is kept."""
    from ...record.recorder import Recorder

    labels = [s.upos for s in corpus]
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=settings.batch_size, max_tokens=settings.max_tokens,
                        bos=settings.bos, progress=progress, description="recording word activations")
    stats = StatsStore()
    for batch in recorder.iter_batches(corpus.texts(), corpus.word_spans()):
        tags = np.array([labels[t][w] for t, w in batch.rows])
        for tag in np.unique(tags):
            picks = torch.as_tensor(np.flatnonzero(tags == tag))
            for site, values in batch.features.items():
                stats.update("moments", str(tag), site.name, values[picks.to(values.device)])
    return stats


def mean_abs_activations(stats: StatsStore, sites: Sequence[Site]) -> np.ndarray:
    """Mean |activation| of every unit over every word (all tags' moments pooled), the sites end to end."""
    labels = stats.labels("moments")
    return np.concatenate([stats.mean_abs(labels, site.name).cpu().numpy() for site in sites])


def word_magnitudes(lm, corpus, sites: Sequence[Site], *, pooling: str, settings: RunSettings,
                    progress: bool = False) -> np.ndarray:
    """Mean |activation| of every unit at `sites` over the words of `corpus` (pooled per word by the Recorder):
    what magnitude-matched controls of key neurons match."""
    sites = sorted(sites)
    return mean_abs_activations(word_moments(lm, corpus, sites, pooling=pooling, settings=settings,
                                             progress=progress), sites)


def contrast_key_neurons(
    lm,
    corpus,
    *,
    classes: str | Iterable[str] | None = DEFAULT_CLASSES,
    k: int = 100,
    sites: Sequence[Site] | None = None,
    pooling: str = "word-predict",
    score: str = "one_vs_rest_welch",
    skip_rare: bool = False,
    settings: RunSettings,
    progress: bool = False,
) -> KeyNeurons:
    """Key units by contrast: per class, the `k` units with the largest `score` (a registered score of
    moments, default the Welch t) of word-level activations at words of the class against all other words
    (ties: lower index). A class with fewer than two words is an error, or is left out with `skip_rare`.

    Activations are pooled per word by the Recorder (`pooling`: "word-predict" = the position that
    predicts the word, as the attribution uses; or "word-first" / "word-last" / "word-mean" over the
    word's own tokens) and streamed into moments per UPOS tag (`word_moments`).
    """
    sites = sorted(sites) if sites is not None else lm.layout.sites("mlp")
    chosen = resolve_classes(classes, [t for s in corpus for t in s.upos])
    stats = word_moments(lm, corpus, sites, pooling=pooling, settings=settings, progress=progress)
    if skip_rare:
        chosen = [c for c in chosen if stats.count(c) >= 2]
        if not chosen:
            raise NeurolocError("contrast: no class has at least 2 words")
    _check_word_counts(stats, chosen)
    units, scores = select_units(stats, chosen, k, score=score, model=lm.identity)
    return KeyNeurons(list(chosen), units, score, scores, {c: stats.count(c) for c in chosen},
                      magnitudes=mean_abs_activations(stats, units[chosen[0]].sites))
