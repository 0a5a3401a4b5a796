"""Deterministic fold assignment: every stimulus's fold depends only on its own content.

A stimulus is hashed (sha256 of the seed and its key: its text, or its group when groups tie texts
together) to a 64-bit integer h, read as a position h / 2**64 in [0, 1). Its fold among K is
floor(position · K), computed in integers. Consequences:

- adding or removing stimuli never moves another stimulus to another fold (nothing is ranked or shuffled);
- a group (item, passage, story) is hashed once, so it never spans folds; identical texts stay together;
- folds are balanced per label in expectation (each stimulus lands in each fold with probability 1/K,
  whatever its label), not exactly: `sizes()` says how balanced they came out;
- finer partitions come from the same positions: with B a multiple of K, bucket floor(position · B)
  lies inside one fold, and the first fraction f of the positions is a union of buckets when f · B is a
  whole number. So statistics recorded per bucket give every fold, every training set and every
  "first 25/50/75 % of the stimuli" subset by merging, from one recording pass.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from ..io import atomic_write_with
from .base import StimulusSet

__all__ = ["FOLD_KEYS", "FoldAssignment", "assign_folds"]

FOLD_KEYS = ("auto", "text", "group")
_SCALE = 2**64


def _hash(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class FoldAssignment:
    """K folds over a stimulus set: `hashes[i]` is stimulus i's 64-bit position (see the module doc)."""

    k: int
    by: str
    seed: int
    hashes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def folds(self) -> np.ndarray:
        """Fold index (0..K-1) of every stimulus."""
        return self.buckets(self.k)

    def buckets(self, n: int) -> np.ndarray:
        """Bucket index floor(position · n) of every stimulus (exact integer arithmetic)."""
        return np.array([(h * n) >> 64 for h in self.hashes], dtype=np.int64)

    def positions(self) -> np.ndarray:
        """Every stimulus's position in [0, 1) (float, for display and ordering)."""
        return np.array([h / _SCALE for h in self.hashes])

    def n_buckets(self, fractions: Sequence[float] = ()) -> int:
        """The fewest buckets whose unions give every fold and the first `fractions` of the stimuli."""
        n = self.k
        for f in fractions:
            exact = Fraction(f).limit_denominator(100)
            if not 0 < f < 1 or abs(float(exact) - f) > 1e-9:
                raise NeurolocError(f"stability fraction {f!r} must lie in (0, 1) and be a fraction with a "
                                    "denominator up to 100 (e.g. 0.25)")
            n = math.lcm(n, exact.denominator)
        return n

    def sizes(self, stimuli: StimulusSet) -> pd.DataFrame:
        """Stimuli per (fold, label): columns fold, label, n."""
        frame = pd.DataFrame({"fold": self.folds, "label": list(stimuli.conditions)})
        return frame.groupby(["fold", "label"], sort=True).size().rename("n").reset_index()

    def check(self, stimuli: StimulusSet, labels: Sequence[str], minimum: int = 2) -> None:
        """Refuse folds holding fewer than `minimum` stimuli of one of `labels` (a t test needs two)."""
        self._check_length(stimuli)
        folds = self.folds
        conditions = np.asarray(stimuli.conditions, dtype=object)
        for fold in range(self.k):
            for label in labels:
                n = int(((folds == fold) & (conditions == label)).sum())
                if n < minimum:
                    raise NeurolocError(
                        f"fold {fold} of {self.k} holds {n} {label!r} stimuli of {stimuli.name!r}, fewer than "
                        f"{minimum}: use fewer folds (--folds) or more stimuli")

    def frame(self, stimuli: StimulusSet) -> pd.DataFrame:
        """The assignment as a table: stimulus (index in the set), text, label, group, fold."""
        self._check_length(stimuli)
        groups = stimuli.groups if stimuli.groups is not None else [None] * len(stimuli)
        return pd.DataFrame({"stimulus": np.arange(len(stimuli)), "text": list(stimuli.texts),
                             "label": list(stimuli.conditions), "group": list(groups), "fold": self.folds})

    def save(self, path: str | Path, stimuli: StimulusSet) -> None:
        """Write `frame(stimuli)` as CSV (`folds.csv`), atomically."""
        frame = self.frame(stimuli)
        atomic_write_with(Path(path), lambda tmp: frame.to_csv(tmp, index=False))

    def _check_length(self, stimuli: StimulusSet) -> None:
        if len(stimuli) != len(self):
            raise NeurolocError(f"the fold assignment covers {len(self)} stimuli but {stimuli.name!r} has "
                                f"{len(stimuli)}: assign folds to this stimulus set (assign_folds)")


def assign_folds(stimuli: StimulusSet, k: int, *, by: str = "auto", seed: int = 0) -> FoldAssignment:
    """K folds by content: `by="text"` hashes each text, `"group"` each group (a group never spans
    folds), `"auto"` the groups when the stimuli have them, else the texts. `seed` salts the hash, for
    another draw of folds with the same guarantees."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeurolocError(f"folds must be an integer >= 1, got {k!r}")
    if by not in FOLD_KEYS:
        raise NeurolocError(f"fold key {by!r} is unknown; choose one of {', '.join(FOLD_KEYS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise NeurolocError(f"fold seed must be an integer, got {seed!r}")
    if by == "auto":
        by = "group" if stimuli.groups is not None else "text"
    if by == "group" and stimuli.groups is None:
        raise NeurolocError(f"stimulus set {stimuli.name!r} has no groups to fold by; give it a group column "
                            "or fold by text")
    keys: Sequence[str] = stimuli.groups if by == "group" else stimuli.texts
    cache: dict[str, int] = {}
    hashes = tuple(cache.setdefault(str(key), _hash(seed, str(key))) for key in keys)
    return FoldAssignment(k=k, by=by, seed=seed, hashes=hashes)
