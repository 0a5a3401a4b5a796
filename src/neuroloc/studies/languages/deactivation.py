"""The language × language deactivation matrix: zero each language's units and measure the mean negative
log-likelihood per token on held-out text of every language, against matched random units.

The papers' claim is that deactivating language A's units hurts A's text (the diagonal) far more than
other languages' text (off the diagonal), and far more than random units of the same count per layer.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...errors import NeurolocError
from ...evaluate.controls import random_matched
from ...evaluate.scoring import token_logprobs
from ...lesion import lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...units import LabeledUnits, UnitSet

__all__ = ["DEACTIVATION_COLUMNS", "deactivation_matrix", "deactivation_summary", "mean_nll"]

DEACTIVATION_COLUMNS = ["deactivated", "evaluated", "condition", "seed", "n_units", "nll_intact", "nll",
                        "nll_change", "perplexity_ratio", "n_tokens"]


def mean_nll(lm: LoadedModel, texts: Sequence[str], *, batch_size: int = 16) -> tuple[float, int]:
    """(mean negative log-likelihood per token in nats, number of scored tokens) of `texts`."""
    scores = token_logprobs(lm.model, lm.tokenizer, list(texts), batch_size=batch_size)
    n = sum(len(s) for s in scores)
    if n == 0:
        raise NeurolocError("no tokens to score")
    return -float(sum(s.logprobs.sum() for s in scores)) / n, n


def deactivation_matrix(lm: LoadedModel, units: LabeledUnits | Mapping[str, UnitSet], heldout: Mapping[str, Sequence[str]], *,
                        n_controls: int = 1, seed: int = 0, batch_size: int = 16,
                        progress: bool = False) -> pd.DataFrame:
    """Long table (`DEACTIVATION_COLUMNS`): for every language with units (rows) and every held-out
    language (columns), the NLL change when its units are zeroed (`condition` "target") and when
    `n_controls` random sets of the same per-site counts are (`condition` "random", seeds seed…)."""
    units = dict(units.items())
    languages = list(heldout)
    if not languages:
        raise NeurolocError("no held-out text to evaluate the deactivations on")
    deactivated = [lang for lang, unit_set in units.items() if len(unit_set)]
    runs = len(languages) * (1 + len(deactivated) * (1 + n_controls))
    rows = []
    with progress_bar("deactivation matrix", runs, progress) as advance:
        intact = {}
        for lang in languages:
            intact[lang] = mean_nll(lm, heldout[lang], batch_size=batch_size)
            advance(1)
        for source in deactivated:
            conditions = [("target", -1, units[source])]
            conditions += [("random", seed + i, random_matched(units[source], seed=seed + i)) for i in range(n_controls)]
            for condition, draw, unit_set in conditions:
                with lesion(lm, unit_set, "zero"):
                    for lang in languages:
                        nll, n_tokens = mean_nll(lm, heldout[lang], batch_size=batch_size)
                        change = nll - intact[lang][0]
                        rows.append({"deactivated": source, "evaluated": lang, "condition": condition,
                                     "seed": draw, "n_units": len(unit_set), "nll_intact": intact[lang][0],
                                     "nll": nll, "nll_change": change, "perplexity_ratio": float(np.exp(change)),
                                     "n_tokens": n_tokens})
                        advance(1)
    return pd.DataFrame(rows, columns=DEACTIVATION_COLUMNS)


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
