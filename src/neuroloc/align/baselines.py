"""Baselines that keep an alignment score honest.

- Confounds with no linguistic content: passage identity plus a Gaussian-smoothed code of the
  sentence's position in its passage (Feghhi et al., 2024, "What are large language models mapping
  to in the brain?": such features rival GPT-2 on Pereira 2018 under shuffled splits), and sentence
  length in tokens. Under passage-grouped folds the identity columns cannot transfer to held-out
  passages, so what they score measures leakage, and position measures a within-passage drift.
- Random unit sets matched per layer and site (the same counts as the unit set, none shared with it)
  give a null distribution for "these units align better than random ones of the same size".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import NeurolocError
from ..localize.selection import select_random
from ..units import UnitSet
from .recordings import Recordings

CONFOUNDS = ("position", "length")


def position_features(recordings: Recordings, sigma: float = 1.0) -> np.ndarray:
    """One-hot passage identity beside a Gaussian bump (width `sigma` positions) at the sentence's
    position within its passage."""
    groups = recordings.groups
    names = sorted(set(groups))
    identity = (groups[:, None] == np.asarray(names)[None, :]).astype(np.float64)
    position = recordings.stimuli["position"].to_numpy(dtype=np.float64)
    centres = np.arange(int(position.max()) + 1, dtype=np.float64)
    bumps = np.exp(-0.5 * ((position[:, None] - centres[None, :]) / sigma) ** 2)
    return np.concatenate([identity, bumps], axis=1)


def length_features(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Number of tokens of each stimulus alone (no special tokens), one column."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return np.asarray(lengths, dtype=np.float64)[:, None]


def confound_features(name: str, recordings: Recordings, tokenizer) -> np.ndarray:
    if name == "position":
        return position_features(recordings)
    if name == "length":
        return length_features(tokenizer, recordings.texts)
    raise NeurolocError(f"unknown confound baseline {name!r}; choose from {', '.join(CONFOUNDS)}")


def matched_random_units(units: UnitSet, seed: int) -> UnitSet:
    """Uniformly random units with `units`' count at every site, none of them in `units`."""
    sites = np.repeat(np.arange(len(units.sites)), units.widths)
    counts = {i: int(m.sum()) for i, m in enumerate(units.masks.values()) if m.any()}
    mask = select_random(len(sites), counts_per_group=counts, groups=sites, seed=seed,
                         exclude=units.flat_mask().numpy())
    return UnitSet.from_flat(mask, units.sites, units.widths, model=units.model)


def permutation_pvalue(observed: float, null: Sequence[float]) -> float:
    """One-sided p that a random set scores at least `observed`: (1 + #null ≥ observed) / (1 + N)."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if null.size == 0 or not np.isfinite(observed):
        return float("nan")
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def rank_among(observed: float, null: Sequence[float]) -> int:
    """1 + the number of random sets scoring strictly higher (1 = best)."""
    return int(1 + np.sum(np.asarray(null, dtype=np.float64) > observed))
