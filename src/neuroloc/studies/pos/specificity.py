"""Causal check of key neurons: does lesioning a class's key units hurt predicting words of that class
more than words of other classes, and more than lesioning as many random units?

Per word the score is the log-probability of its first subword given BOS and the preceding text (the
same target the attribution explains). For every lesioned class (rows) and evaluated class (columns):
drop = mean log-prob intact − mean log-prob lesioned (positive = the lesion hurts), for the key units
and for `n_random` random sets matched per site (`evaluate.controls.random_matched`), and the key
lesion's effect in control standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ...errors import NeurolocError
from ...evaluate.controls import random_matched
from ...evaluate.scoring import token_logprobs
from ...lesion import lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...units import UnitSet
from ...text.alignment import align_words
from ...stimuli.treebank import TaggedCorpus

__all__ = ["LONG_COLUMNS", "SUMMARY_COLUMNS", "SpecificityResult", "specificity", "specificity_matrix",
           "summarize_specificity", "word_logprobs"]

LONG_COLUMNS = ["lesioned_class", "condition", "seed", "n_units", "evaluated_class", "n_words", "mean_logprob",
                "intact_logprob", "drop"]
SUMMARY_COLUMNS = ["lesioned_class", "evaluated_class", "n_units", "n_words", "intact_logprob", "drop_target",
                   "control_mean", "control_sd", "n_controls", "effect_sd"]


def word_logprobs(lm: LoadedModel, corpus: TaggedCorpus, *, batch_size: int, bos: str) -> pd.DataFrame:
    """One row per word whose tokens it shares with no other word: sent_index, word_index, upos and
    logprob = ln p(first subword | BOS, preceding tokens), in nats. Without a BOS (policy `none`, or a
    tokenizer that adds none) a text's first token is not scored, so words before the first scored token are
    left out (as the attribution leaves them out). Lesions active around the call apply."""
    texts = corpus.texts()
    scored = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=batch_size, bos=bos)
    rows = []
    for i, (sentence, score) in enumerate(zip(corpus, scored)):
        if not len(sentence) or not len(score):
            continue
        offsets = [tuple(o) for o in score.offsets]
        start, end = offsets[0]
        while start < end and texts[i][start].isspace():
            start += 1
        words = [w for w, (a, _) in enumerate(sentence.spans) if a >= start]
        aligned = align_words(offsets, [sentence.spans[w] for w in words])
        for w, tokens in zip(words, aligned):
            if not tokens.merged:
                rows.append((i, w, sentence.upos[w], float(score.logprobs[tokens.first])))
    return pd.DataFrame(rows, columns=["sent_index", "word_index", "upos", "logprob"])


def _class_means(words: pd.DataFrame, classes: Sequence[str]) -> dict[str, tuple[float, int]]:
    grouped = words.groupby("upos")["logprob"]
    means, counts = grouped.mean(), grouped.size()
    return {c: (float(means.get(c, np.nan)), int(counts.get(c, 0))) for c in classes}


@dataclass
class SpecificityResult:
    """`long`: one row per lesion condition × seed × evaluated class; `summary`: one row per
    (lesioned, evaluated) class pair with drop_target, control mean/sd and effect_sd."""

    long: pd.DataFrame
    summary: pd.DataFrame

    def matrix(self, value: str = "effect_sd") -> pd.DataFrame:
        return specificity_matrix(self.summary, value)

    def diagonal_contrast(self, value: str = "drop_target") -> dict:
        """Mean of `value` on the diagonal (lesioned = evaluated class) and off it."""
        matrix = self.matrix(value)
        common = [c for c in matrix.index if c in matrix.columns]
        values = matrix.loc[common, common].to_numpy(float)
        diagonal = np.diag(values)
        off = values[~np.eye(len(common), dtype=bool)]
        return {"diagonal": float(np.nanmean(diagonal)) if diagonal.size else None,
                "off_diagonal": float(np.nanmean(off)) if off.size and np.isfinite(off).any() else None}


def specificity_matrix(summary: pd.DataFrame, value: str = "effect_sd") -> pd.DataFrame:
    """Rows: lesioned class, columns: evaluated class, cells: `value` from the summary."""
    matrix = summary.pivot(index="lesioned_class", columns="evaluated_class", values=value)
    order = list(dict.fromkeys(summary["lesioned_class"]))
    columns = list(dict.fromkeys(summary["evaluated_class"]))
    matrix = matrix.loc[order, columns]
    matrix.index.name, matrix.columns.name = "Lesioned class (key units zeroed)", "Evaluated class (next words)"
    return matrix


def specificity(
    lm: LoadedModel,
    corpus: TaggedCorpus,
    key_units: Mapping[str, UnitSet],
    *,
    evaluated: Iterable[str] | None = None,
    n_random: int = 5,
    seed: int = 0,
    mode: str = "zero",
    batch_size: int,
    skip_absent: bool = False,
    bos: str,
    progress: bool = False,
) -> SpecificityResult:
    """Lesion each class's key units (and `n_random` matched random sets, seeds seed…seed+n−1) and
    measure the drop in mean first-subword log-probability of the words of every `evaluated` class
    (default: the lesioned classes). An evaluated class without scorable words in `corpus` is an
    error, or is left out with `skip_absent`."""
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise NeurolocError(f"n_random must be an int >= 0, got {n_random!r}")
    lesioned = list(key_units)
    columns = list(evaluated) if evaluated is not None else lesioned
    if not lesioned or not columns:
        raise NeurolocError("specificity needs at least one class with key units")
    plan = [(c, "target", seed, key_units[c]) for c in lesioned]
    plan += [(c, "random", seed + i, random_matched(key_units[c], seed + i)) for c in lesioned for i in range(n_random)]
    with progress_bar("specificity lesions", len(plan) + 1, progress) as advance:
        intact = _class_means(word_logprobs(lm, corpus, batch_size=batch_size, bos=bos), columns)
        advance(1)
        absent = [c for c, (_, n) in intact.items() if n == 0]
        if absent and not skip_absent:
            raise NeurolocError(f"specificity: no scorable words of class(es) {absent} in the evaluation sentences")
        columns = [c for c in columns if c not in absent]
        if not columns:
            raise NeurolocError("specificity: none of the evaluated classes has a scorable word in these sentences")
        rows = []
        for c, condition, s, units in plan:
            if len(units):
                with lesion(lm, units, mode):
                    means = _class_means(word_logprobs(lm, corpus, batch_size=batch_size, bos=bos), columns)
            else:
                means = intact
            for e in columns:
                mean, n = means[e]
                rows.append((c, condition, s, len(units), e, n, mean, intact[e][0], intact[e][0] - mean))
            advance(1)
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return SpecificityResult(long, summarize_specificity(long))


def summarize_specificity(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (lesioned, evaluated) pair: the key lesion's drop, the random lesions' mean and sd
    of drops, and effect_sd = (drop_target − control_mean) / control_sd (NaN without spread)."""
    rows = []
    for (c, e), group in long.groupby(["lesioned_class", "evaluated_class"], sort=False):
        target = group[group.condition == "target"]
        controls = group[group.condition == "random"]["drop"].to_numpy(float)
        mean = float(controls.mean()) if controls.size else np.nan
        sd = float(controls.std(ddof=1)) if controls.size > 1 else np.nan
        drop = float(target["drop"].iloc[0])
        effect = (drop - mean) / sd if np.isfinite(sd) and sd > 0 else np.nan
        rows.append((c, e, int(target["n_units"].iloc[0]), int(target["n_words"].iloc[0]),
                     float(target["intact_logprob"].iloc[0]), drop, mean, sd, int(controls.size), effect))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
