"""The language × language deactivation matrix: zero each language's units and measure the mean negative
log-likelihood per token on held-out text of every language, against matched random units.

The papers' claim is that deactivating language A's units hurts A's text (the diagonal) far more than
other languages' text (off the diagonal), and far more than random units of the same count per layer.

The matrix is a list of independent conditions (`deactivation_conditions`: the intact model, each
language's units, their random controls), each scored on every language (`score_condition`) and assembled
into one table (`deactivation_table`), so a study can share the conditions across processes and resume
them one by one; `deactivation_matrix` runs them all in order.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...errors import NeurolocError
from ...evaluate.controls import random_matched
from ...evaluate.scoring import token_logprobs
from ...lesion import lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...settings import RunSettings
from ...units import LabeledUnits, UnitSet

__all__ = ["DEACTIVATION_COLUMNS", "Deactivation", "deactivation_conditions", "deactivation_matrix",
           "deactivation_summary", "deactivation_table", "mean_nll", "score_condition"]

DEACTIVATION_COLUMNS = ["deactivated", "evaluated", "condition", "seed", "n_units", "nll_intact", "nll",
                        "nll_change", "perplexity_ratio", "n_tokens"]


@dataclass(frozen=True)
class Deactivation:
    """One condition: `units` zeroed (a language's units, `condition` "target", or a random control drawn
    with `seed`, "random"), or nothing ("intact")."""

    source: str
    condition: str
    seed: int
    units: UnitSet | None

    @property
    def id(self) -> str:
        return f"{self.condition}:{self.source}:{self.seed}"


def mean_nll(lm: LoadedModel, texts: Sequence[str], *, settings: RunSettings) -> tuple[float, int]:
    """(mean negative log-likelihood per token in nats, number of scored tokens) of `texts`, encoded and
    batched by the run settings."""
    scores = token_logprobs(lm.model, lm.tokenizer, list(texts), batch_size=settings.batch_size, bos=settings.bos)
    n = sum(len(s) for s in scores)
    if n == 0:
        raise NeurolocError("no tokens to score")
    return -float(sum(s.logprobs.sum() for s in scores)) / n, n


def deactivation_conditions(units: LabeledUnits | Mapping[str, UnitSet], *, n_controls: int,
                            seed: int) -> list[Deactivation]:
    """The intact model, then per language with units: its units and `n_controls` random sets of the same
    per-site counts (seeds seed, seed + 1, ...)."""
    conditions = [Deactivation("", "intact", -1, None)]
    for source, unit_set in dict(units.items()).items():
        if len(unit_set):
            conditions.append(Deactivation(source, "target", -1, unit_set))
            conditions += [Deactivation(source, "random", seed + i, random_matched(unit_set, seed=seed + i))
                           for i in range(n_controls)]
    return conditions


def score_condition(lm: LoadedModel, condition: Deactivation, heldout: Mapping[str, Sequence[str]], *,
                    settings: RunSettings) -> pd.DataFrame:
    """NLL per token of every held-out language under one condition: deactivated, evaluated, condition,
    seed, n_units, nll, n_tokens."""
    zeroed = lesion(lm, condition.units, "zero") if condition.units is not None else nullcontext()
    rows = []
    with zeroed:
        for lang, texts in heldout.items():
            nll, n_tokens = mean_nll(lm, texts, settings=settings)
            rows.append({"deactivated": condition.source, "evaluated": lang, "condition": condition.condition,
                         "seed": condition.seed, "n_units": 0 if condition.units is None else len(condition.units),
                         "nll": nll, "n_tokens": n_tokens})
    return pd.DataFrame(rows)


def deactivation_table(scored: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The long table (`DEACTIVATION_COLUMNS`) from every condition's `score_condition` frame, in order:
    NLL changes against the intact model's."""
    frames = pd.concat(list(scored), ignore_index=True)
    intact = frames[frames.condition == "intact"].set_index("evaluated").nll
    rows = frames[frames.condition != "intact"].copy()
    rows["nll_intact"] = rows.evaluated.map(intact).astype(float)
    rows["nll_change"] = rows.nll - rows.nll_intact
    rows["perplexity_ratio"] = np.exp(rows.nll_change)
    return rows.reset_index(drop=True)[DEACTIVATION_COLUMNS]


def deactivation_matrix(lm: LoadedModel, units: LabeledUnits | Mapping[str, UnitSet],
                        heldout: Mapping[str, Sequence[str]], *, n_controls: int, seed: int,
                        settings: RunSettings) -> pd.DataFrame:
    """Long table (`DEACTIVATION_COLUMNS`): for every language with units (rows) and every held-out
    language (columns), the NLL change when its units are zeroed (`condition` "target") and when
    `n_controls` random sets of the same per-site counts are (`condition` "random", seeds seed…)."""
    if not heldout:
        raise NeurolocError("no held-out text to evaluate the deactivations on")
    conditions = deactivation_conditions(units, n_controls=n_controls, seed=seed)
    scored = []
    with progress_bar("deactivation matrix", len(conditions), settings.progress) as advance:
        for condition in conditions:
            scored.append(score_condition(lm, condition, heldout, settings=settings))
            advance(1)
    return deactivation_table(scored)


def deactivation_summary(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per deactivated language: NLL change on its own text (diagonal), mean change on the other languages
    (off-diagonal), and the same for the random controls (mean over seeds)."""
    rows = []
    for source, group in matrix.groupby("deactivated", sort=False):
        row = {"deactivated": source, "n_units": int(group.n_units.iloc[0])}
        for condition in ("target", "random"):
            part = group[group.condition == condition]
            if part.empty:
                continue
            own = part[part.evaluated == source].nll_change
            other = part[part.evaluated != source].nll_change
            row[f"{condition}_diagonal"] = float(own.mean()) if len(own) else np.nan
            row[f"{condition}_off_diagonal"] = float(other.mean()) if len(other) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
