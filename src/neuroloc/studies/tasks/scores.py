"""Activation scores of task units: per-prompt pooled activations, then average precision or Welch t.

`prompt_features` records, for every prompt, each unit's activation pooled over the prompt (`last`
token: the position that predicts the answer; or `mean` over its tokens), in one streamed pass with
the core `Recorder`. Average precision needs every prompt's value (it is a ranking statistic), so the
matrix is kept — bounded: more than `max_bytes` (2 GiB by default) is an error that says how to cut it.

`average_precision_scores`: per label, each unit's activation as a classifier score of that label
against the other labels (Liu et al., EMNLP 2025), computed by the core's
`localize.score_functions.average_precision` (equal to scikit-learn's `average_precision_score`), a
block of units at a time. `activation_contrast_scores`: the one-vs-rest Welch t of the same features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...errors import NeurolocError
from ...localize.score_functions import average_precision
from ...localize.scores import welch_t_test
from ...models.layout import Site
from ...models.loading import LoadedModel
from ...record.recorder import Recorder

__all__ = ["ACTIVATION_SCORES", "activation_contrast_scores", "average_precision_scores", "prompt_features"]

ACTIVATION_SCORES = ("ap", "contrast")
_MAX_BYTES = 2 << 30


def prompt_features(lm: LoadedModel, prompts: Sequence[str], sites: Sequence[Site], *, pooling: str = "last",
                    batch_size: int = 32, bos: str = "prepend", max_bytes: int = _MAX_BYTES,
                    progress: bool = False) -> np.ndarray:
    """(prompts, units) float32 pooled activations, units flat over `sites` in sorted order (attention
    heads: the norm of the head's output)."""
    sites = sorted(sites)
    widths = [lm.layout.width(s.kind) for s in sites]
    need = len(prompts) * sum(widths) * 4
    if need > max_bytes:
        raise NeurolocError(f"{len(prompts)} prompts × {sum(widths)} units need {need / 2**30:.1f} GiB of features "
                            f"(limit {max_bytes / 2**30:.1f} GiB); use fewer prompts per label or fewer sites")
    out = np.zeros((len(prompts), sum(widths)), dtype=np.float32)
    recorder = Recorder(lm, sites, pooling=pooling, batch_size=batch_size, bos=bos, progress=progress,
                        description="recording prompts")
    for batch in recorder.iter_batches(list(prompts)):
        rows = np.array([r[0] for r in batch.rows], dtype=np.int64)
        out[rows] = torch.cat([batch.features[s].float().cpu() for s in sites], dim=1).numpy()
    return out


def _positive(labels: Sequence[str], label: str) -> np.ndarray:
    positive = np.asarray(labels) == label
    if positive.all() or not positive.any():
        raise NeurolocError(f"label {label!r}: a one-vs-rest score needs prompts of it and of other labels")
    return positive


def average_precision_scores(features: np.ndarray, labels: Sequence[str], label_names: Sequence[str], *,
                             block: int = 2048) -> np.ndarray:
    """(labels, units): the average precision of each unit's activation for each label vs the rest."""
    out = np.zeros((len(label_names), features.shape[1]))
    for r, label in enumerate(label_names):
        positive = _positive(labels, label)
        for start in range(0, features.shape[1], block):
            out[r, start:start + block] = average_precision(features[:, start:start + block], positive)
    return out


def activation_contrast_scores(features: np.ndarray, labels: Sequence[str], label_names: Sequence[str]) -> np.ndarray:
    """(labels, units): Welch t of each label's activations against all other prompts'."""
    out = np.zeros((len(label_names), features.shape[1]))
    x = features.astype(np.float64)
    for r, label in enumerate(label_names):
        positive = _positive(labels, label)
        a, b = x[positive], x[~positive]
        if min(len(a), len(b)) < 2:
            raise NeurolocError(f"label {label!r}: a Welch t needs at least two prompts on each side")
        m2 = lambda v: ((v - v.mean(0)) ** 2).sum(0)  # noqa: E731
        out[r] = welch_t_test(len(a), a.mean(0), m2(a), len(b), b.mean(0), m2(b)).t
    return out
