"""Splits that keep groups (documents, passages, stories) wholly on one side: nothing leaks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from ..errors import NeurolocError

__all__ = ["assert_disjoint_groups", "grouped_split"]


def grouped_split(groups: Sequence, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), sorted, with every group wholly on one side.

    `test_fraction` is the share of groups (not items) held out.
    """
    if not 0.0 < test_fraction < 1.0:
        raise NeurolocError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups = np.asarray(groups)
    if len(np.unique(groups)) < 2:
        raise NeurolocError("a grouped split needs at least two distinct groups")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    train, test = np.sort(train), np.sort(test)
    assert_disjoint_groups(groups, train, test)
    return train, test


def assert_disjoint_groups(groups: Sequence, train_idx: Sequence[int], test_idx: Sequence[int]) -> None:
    """Raise NeurolocError naming the groups that appear on both sides of a split."""
    groups = np.asarray(groups)
    shared = np.intersect1d(groups[np.asarray(train_idx, dtype=int)], groups[np.asarray(test_idx, dtype=int)])
    if shared.size:
        raise NeurolocError(f"{shared.size} groups are in both train and test, e.g. {shared[:3].tolist()}")
