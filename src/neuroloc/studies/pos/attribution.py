"""Attribute each word's next-word prediction to units at the position that predicts it.

For a word whose first subword is token t at position p + 1 (the text is read after a BOS token, as
`evaluate.scoring` does), the target is f = ln p(t | BOS, tokens ≤ p), a function of every site's
activation at position p. Two methods:

* `gradxact` — gradient × (activation − baseline) of f with respect to each site's activation at p,
  all sites in one backward pass (total derivatives: paths through later sites included).
* `ig` — integrated gradients, one site (layer) at a time: that site's activation at p is replaced by
  baseline + α (activation − baseline) and the gradient of f integrated over α ∈ [0, 1] with `steps`
  points — `rule="midpoint"` (Riemann midpoint, α = (k + ½)/steps, the default) or `"trapezoid"`
  (α = k/(steps − 1)). Completeness: per word and site the attributions sum to
  f(x) − f(baseline at that site and position), up to the quadrature error; both are reported.

How it stays cheap: changing a site's activation at position p changes nothing at earlier positions,
and f does not look at later ones. So each sentence runs once with the key/value cache on, and every
(word, site, α) becomes one *single-token* row — the token at p attending to the sentence's cached
keys/values, with the positions ≥ p masked out and its position id set to p. All steps, sites and
words of a group of sentences share batches of `batch_size` rows; one backward pass per batch gives
every row's gradient (rows are independent, so the summed target separates exactly). Padding and
batch sizes change nothing beyond float noise.

The generic pieces (checks, IG quadrature, baselines, `Completeness`) live in `neuroloc.localize.attribution`.

Memory: a batch yields one row of unit attributions per word; `attribute` folds them into per-class
top-percent counts and attribution sums on the fly (`key_neurons.ClassFrequency`) and keeps only
small per-word summaries.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...errors import NeurolocError
from ...localize.attribution import (ATTRIBUTION_METHODS, IG_RULES, AttributionRows, Completeness,
                                      check_attribution, frozen_parameters, ig_quadrature, row_plan, site_baselines)
from ...models.hooks import hooks
from ...models.layout import Site
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...record.recorder import takes_position_ids
from ...text.alignment import align_words
from ...text.encoding import encode, pad_id
from .key_neurons import ClassFrequency, KeyNeurons, resolve_classes, select_units
from ...stimuli.treebank import TaggedCorpus

__all__ = [
    "ATTRIBUTION_METHODS", "IG_RULES", "AttributionBatch", "AttributionSummary", "Completeness",
    "WordTarget", "attribute", "iter_attributions", "word_targets",
]

# ------------------------------------------------------------------------------------ word targets
@dataclass(frozen=True)
class WordTarget:
    """One attributed word: where it is, the position that predicts it and its first subword."""

    sentence: int
    word: int
    upos: str
    predict: int  # position (BOS = 0) whose output predicts the word's first subword
    target: int  # token id of that subword


def word_targets(lm: LoadedModel, corpus: TaggedCorpus, classes: Iterable[str] | None = None, *,
                 bos: str) -> tuple[list[list[int]], list[list[WordTarget]]]:
    """Token ids (under the BOS policy `bos`, `neuroloc.text.encoding`) and the attributable words of
    each sentence (without a BOS, a sentence's first word has no predicting position and is skipped).

    A word is attributable when its class is in `classes` (all when None) and no token it touches is
    shared with another word (`WordTokens.merged`, e.g. "didn" of "did n't").
    """
    texts = corpus.texts()
    wanted = None if classes is None else set(classes)
    encoded = encode(lm.tokenizer, texts, bos=bos)
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    all_ids, all_words = [], []
    for i, sentence in enumerate(corpus):
        ids = encoded.input_ids[i]
        if isinstance(limit, int) and len(ids) > limit:
            raise NeurolocError(f"sentence {sentence.sent_id} is {len(ids)} tokens long but the model "
                                f"takes at most {limit}")
        words = []
        if len(sentence) and any(not s for s in encoded.special[i]):
            aligned = align_words(encoded.offsets[i], sentence.spans, special_mask=encoded.special[i])
            for w, (tokens, tag) in enumerate(zip(aligned, sentence.upos)):
                if tokens.merged or tokens.predict is None or (wanted is not None and tag not in wanted):
                    continue
                words.append(WordTarget(i, w, tag, tokens.predict, ids[tokens.first]))
        all_ids.append(ids)
        all_words.append(words)
    return all_ids, all_words


# -------------------------------------------------------------------------------------- batches out
@dataclass
class AttributionBatch:
    """Attributions of a batch of words (rows), units flat over the attributed sites in site order.

    `site_totals[i, j]` is word i's summed attribution at site j; for `ig`, `site_deltas[i, j]` is
    f(x) − f(baseline at site j) (what the totals should equal), else None.
    """

    words: list[WordTarget]
    target_logprob: np.ndarray
    scores: torch.Tensor
    site_totals: np.ndarray
    site_deltas: np.ndarray | None = None


# ---------------------------------------------------------------------------------------- the engine
def _sliding_window(config) -> int | None:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or getattr(config, "use_sliding_window", True) is False:
        return None
    return window


class _Engine:
    def __init__(self, lm: LoadedModel, sites: Sequence[Site], method: str, steps: int, rule: str, baseline,
                 batch_size: int) -> None:
        check_attribution(method, steps, rule, batch_size)
        if not sites:
            raise NeurolocError("no sites to attribute")
        self.lm = lm
        self.sites = sorted(lm.layout.check(s) for s in sites)
        self.method, self.steps, self.rule, self.batch_size = method, steps, rule, batch_size
        self.base = site_baselines(lm, self.sites, baseline)
        self.widths = [lm.layout.width(s.kind) for s in self.sites]
        self.window = _sliding_window(lm.model.config)
        if not takes_position_ids(lm.model):
            raise NeurolocError(
                f"model type {lm.layout.model_type!r}: its forward takes no position_ids, which attribution needs "
                "to place each single-token row at the position of the word it predicts"
            )
        self.alphas, self.weights = ig_quadrature(steps, rule) if method == "ig" else (None, None)

    # -- one group of sentences ---------------------------------------------------------------------
    def group(self, ids: list[list[int]], words: list[WordTarget], row_of_sentence: dict[int, int]
              ) -> AttributionBatch:
        """Attribute `words` of the sentences `ids` (BOS first); `row_of_sentence` maps a word's
        corpus sentence index to its row in `ids`."""
        lm, device = self.lm, self.lm.device
        lengths = [len(x) for x in ids]
        width = max(lengths)
        if self.window is not None and width + 1 > self.window:
            raise NeurolocError(
                f"a sentence of {width} tokens does not fit the model's sliding attention window "
                f"({self.window}); attribution needs the whole prefix in the window — use shorter sentences"
            )
        pad = pad_id(lm.tokenizer)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for b, row in enumerate(ids):
            input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, :len(row)] = 1
        batch = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "use_cache": True}
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        with torch.no_grad():  # not inference_mode: the cached keys/values enter the autograd graph later
            cache = lm.model(**batch).past_key_values
        if cache is None or not hasattr(cache, "batch_select_indices"):
            raise NeurolocError(
                f"model type {lm.layout.model_type!r} returned no key/value cache that can select rows "
                f"({type(cache).__name__}); attribution needs `past_key_values` with batch_select_indices"
            )

        n = len(words)
        sentence_row = torch.tensor([row_of_sentence[w.sentence] for w in words], dtype=torch.long)
        predict = torch.tensor([w.predict for w in words], dtype=torch.long)
        target = torch.tensor([w.target for w in words], dtype=torch.long)
        rows = row_plan(n, len(self.sites), self.method, self.rule, self.alphas, self.weights)
        coord = {s: lm.layout.coordinate_width(s.kind) for s in self.sites}
        grads = {s: torch.zeros(n, 1, coord[s], dtype=torch.float64) for s in self.sites}  # one position: p
        acts = {s: torch.zeros(n, 1, coord[s], dtype=torch.float64) for s in self.sites}
        f_x = np.full(n, np.nan)
        f_base = np.full((n, len(self.sites)), np.nan)

        for start in range(0, len(rows["slot"]), self.batch_size):
            part = {key: value[start:start + self.batch_size] for key, value in rows.items()}
            self._run_rows(cache, part, sentence_row, predict, target, input_ids, width, grads, acts, f_x, f_base)

        site_scores, totals = [], []
        for j, site in enumerate(self.sites):
            coords = ((acts[site] - self.base[site].double().cpu()) * grads[site]).squeeze(1)
            if site.kind == "attn":
                coords = coords.unflatten(-1, (lm.layout.n_heads, -1)).sum(-1)
            site_scores.append(coords)
            totals.append(coords.sum(-1).numpy())
        scores = torch.cat(site_scores, dim=1).float()
        deltas = (f_x[:, None] - f_base) if self.method == "ig" else None
        return AttributionBatch(words, f_x, scores, np.stack(totals, axis=1), deltas)

    def _run_rows(self, cache, part, sentence_row, predict, target, input_ids, width, grads, acts, f_x, f_base) -> None:
        lm, device = self.lm, self.lm.device
        rows = AttributionRows(part, self.method, self.base, lm.dtype, device, acts, grads)
        slot = rows.slot
        rows_cache = copy.deepcopy(cache)
        rows_cache.batch_select_indices(sentence_row[slot].to(device))
        position = predict[slot]
        step_ids = input_ids[sentence_row[slot], position][:, None]
        keep = torch.arange(width)[None, :] < position[:, None]  # the prefix before the predicting token
        attention = torch.cat([keep, torch.ones(rows.n_rows, 1, dtype=torch.bool)], dim=1).long()
        batch = {"input_ids": step_ids.to(device), "attention_mask": attention.to(device),
                 "position_ids": position[:, None].to(device), "past_key_values": rows_cache, "use_cache": True}
        with frozen_parameters(lm.model), torch.enable_grad():
            with hooks(lm.layout, edit=rows.editors(self.sites)):
                logits = lm.model(**batch).logits[:, -1]
            logits = logits if logits.dtype == torch.float64 else logits.float()
            logprob = logits.gather(-1, target[slot].to(logits.device)[:, None]).squeeze(-1) - logits.logsumexp(-1)
            rows.finish(logprob, self.sites, f_x, f_base)


def iter_attributions(
    lm: LoadedModel,
    corpus: TaggedCorpus,
    *,
    method: str = "ig",
    sites: Sequence[Site] | None = None,
    classes: Iterable[str] | None = None,
    steps: int = 32,
    rule: str = "midpoint",
    baseline: str | Mapping[str, torch.Tensor] | None = "zero",
    batch_size: int,
    words_per_group: int = 64,
    bos: str,
    progress: bool = False,
) -> Iterator[AttributionBatch]:
    """Yield attributions for the words of `corpus` (those of `classes`; all when None), a group of
    sentences at a time, in corpus order.

    `sites` default to every layer's `mlp` site. `batch_size` is the number of single-token rows per
    forward/backward pass (IG needs 1 + sites × (steps + 1) rows per word with the midpoint rule);
    `words_per_group` bounds how many words share one cached forward pass. `baseline` is "zero" or a
    mapping site name → vector over the site's hooked coordinates (e.g. mean activations).
    """
    sites = list(sites) if sites is not None else lm.layout.sites("mlp")
    engine = _Engine(lm, sites, method, steps, rule, baseline, batch_size)
    ids, words = word_targets(lm, corpus, classes, bos=bos)
    with progress_bar(f"attributing ({method})", len(corpus), progress) as advance:
        group: list[int] = []
        count = 0
        for i in range(len(corpus) + 1):
            flush = i == len(corpus) or (group and count + len(words[i]) > words_per_group)
            if flush and group:
                members = [i_ for i_ in group if words[i_]]
                if members:
                    first = {s: b for b, s in enumerate(members)}
                    flat = [w for s in members for w in words[s]]
                    yield engine.group([ids[s] for s in members], flat, first)
                advance(len(group))
                group, count = [], 0
            if i < len(corpus):
                group.append(i)
                count += len(words[i])


# --------------------------------------------------------------------------------------- summaries
@dataclass
class AttributionSummary:
    """What `attribute` keeps: per-class top-percent counts and attribution sums, per-word targets,
    completeness (IG) and timing — never the full word × unit table (unless `keep_scores`)."""

    method: str
    sites: list[Site]
    widths: list[int]
    frequency: ClassFrequency
    words: pd.DataFrame  # sent_index, word_index, upos, predict, logprob (f(x))
    completeness: Completeness | None
    seconds: float
    parameters: dict
    model: dict = field(default_factory=dict)
    scores: np.ndarray | None = None

    @property
    def classes(self) -> list[str]:
        return self.frequency.classes

    def key_neurons(self, k: int = 100, *, skip_empty: bool = False) -> KeyNeurons:
        """Apply the recipe through the registered score (`gradxact` / `ig`, aggregate `frequency`) and the
        one selection rule: per class, the `k` units most often in a word's top percent. A class with no
        attributed word is an error, or is left out with `skip_empty`."""
        freq = self.frequency
        empty = [c for c, n in zip(freq.classes, freq.n_words) if n == 0]
        if empty and not skip_empty:
            raise NeurolocError(f"no attributed words of class(es) {empty}; use more sentences or other classes")
        classes = [c for c in freq.classes if c not in empty]
        if not classes:
            raise NeurolocError("no attributed words of any class; use more sentences or other classes")
        units, scores = select_units(freq.store(self.sites, self.widths), classes, k, score=self.method,
                                     options={"aggregate": "frequency"}, model=self.model)
        return KeyNeurons(classes, units, self.method, scores,
                          {c: int(freq.n_words[freq.classes.index(c)]) for c in classes})

    def unit_names(self) -> list[str]:
        return [f"{s.name}[{i}]" for s, w in zip(self.sites, self.widths) for i in range(w)]

    def table(self, key: KeyNeurons | None = None) -> pd.DataFrame:
        """Per class × unit: selection count and frequency, mean attribution and mean |attribution|
        (over the class's attributed words), and whether the unit is a key neuron."""
        names = self.unit_names()
        site_col = np.concatenate([[s.kind] * w for s, w in zip(self.sites, self.widths)])
        layer_col = np.concatenate([[s.layer] * w for s, w in zip(self.sites, self.widths)])
        index_col = np.concatenate([np.arange(w) for w in self.widths])
        freq = self.frequency
        frames = []
        for i, c in enumerate(freq.classes):
            is_key = (key.units[c].flat_mask().numpy() if key is not None and c in key.units
                      else np.zeros(len(names), dtype=bool))
            frames.append(pd.DataFrame({
                "class": c, "unit": names, "site": site_col, "layer": layer_col, "index": index_col,
                "n_words": int(freq.n_words[i]), "selection_count": freq.counts[i],
                "selection_frequency": freq.frequency()[i], "mean_attribution": freq.mean_attribution()[i],
                "mean_abs_attribution": freq.mean_attribution(absolute=True)[i], "key": is_key,
            }))
        return pd.concat(frames, ignore_index=True)


def attribute(
    lm: LoadedModel,
    corpus: TaggedCorpus,
    *,
    classes: str | Iterable[str] | None = ("NOUN", "VERB", "ADJ", "ADV"),
    method: str = "ig",
    sites: Sequence[Site] | None = None,
    top_percent: float = 5.0,
    absolute: bool = False,
    steps: int = 32,
    rule: str = "midpoint",
    baseline: str | Mapping[str, torch.Tensor] | None = "zero",
    batch_size: int,
    words_per_group: int = 64,
    keep_scores: bool = False,
    bos: str,
    progress: bool = False,
) -> AttributionSummary:
    """Attribute the words of `classes` and fold them into per-class top-`top_percent` % counts.

    Returns an `AttributionSummary`; `.key_neurons(k)` applies the recipe. With `keep_scores`, the full
    (words × units) table is kept as well (small corpora and tests only).
    """
    chosen = resolve_classes(classes, [t for s in corpus for t in s.upos])
    sites = sorted(sites) if sites is not None else lm.layout.sites("mlp")
    widths = [lm.layout.width(s.kind) for s in sites]
    frequency = ClassFrequency(chosen, sum(widths), top_percent, absolute=absolute)
    completeness = Completeness([s.name for s in sites]) if method == "ig" else None
    rows, kept = [], []
    started = time.perf_counter()
    for batch in iter_attributions(lm, corpus, method=method, sites=sites, classes=chosen, steps=steps, rule=rule,
                                   baseline=baseline, batch_size=batch_size, words_per_group=words_per_group,
                                   bos=bos, progress=progress):
        frequency.update([w.upos for w in batch.words], batch.scores)
        if completeness is not None and batch.site_deltas is not None:
            completeness.update(batch.site_totals, batch.site_deltas)
        rows += [(w.sentence, w.word, w.upos, w.predict, lp) for w, lp in zip(batch.words, batch.target_logprob)]
        if keep_scores:
            kept.append(batch.scores.numpy())
    seconds = time.perf_counter() - started
    words = pd.DataFrame(rows, columns=["sent_index", "word_index", "upos", "predict", "logprob"])
    parameters = {"method": method, "classes": chosen, "sites": [s.name for s in sites], "top_percent": top_percent,
                  "absolute": absolute, "steps": steps if method == "ig" else None,
                  "rule": rule if method == "ig" else None,
                  "baseline": baseline if isinstance(baseline, str) or baseline is None else "custom",
                  "batch_size": batch_size}
    scores = None
    if keep_scores:
        scores = np.concatenate(kept) if kept else np.zeros((0, sum(widths)), np.float32)
    return AttributionSummary(method, list(sites), widths, frequency, words, completeness, seconds, parameters,
                              model=dict(lm.identity), scores=scores)
