"""Probing classifiers on unit activations: group-aware splits, control tasks, bootstrap scores.

A probe's accuracy alone says little: a control task (Hewitt & Liang 2019) that can only be learned by
memorising word types, a majority baseline and random-unit probes put it in context, and splits by
document keep near-duplicate context out of the test set.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .errors import NeurolocError


def make_probe(C: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """Standardise features, then multinomial logistic regression (lbfgs) with inverse L2 strength `C`."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter))


def control_labels(word_types: Sequence[str], labels: Sequence[str], seed: int = 0) -> list[str]:
    """Hewitt & Liang (2019) control task: one random label per word type.

    Each type's label is drawn from the empirical distribution of `labels` using a hash of (seed,
    type), so it is the same for every occurrence of the type, and for the same type in another call
    with the same label distribution. The task is learnable only by memorising types. Normalise
    `word_types` (e.g. lower-case) beforehand if types should merge.
    """
    if len(word_types) != len(labels):
        raise NeurolocError(f"{len(word_types)} word types but {len(labels)} labels")
    if not len(labels):
        return []
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    types, inverse = np.unique(np.asarray(word_types, dtype=str), return_inverse=True)
    u = np.array([_unit_hash(seed, t) for t in types])
    drawn = classes[np.minimum(np.searchsorted(cdf, u, side="right"), len(classes) - 1)]
    return drawn[inverse].tolist()


def _unit_hash(seed: int, word_type: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, word_type)."""
    digest = hashlib.blake2b(f"{seed}\x00{word_type}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def evaluate_probe(
    X_train: np.ndarray,
    y_train: Sequence,
    X_test: np.ndarray,
    y_test: Sequence,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    probe: Pipeline | None = None,
) -> dict:
    """Fit `probe` (default `make_probe()`) on train, score on test.

    Returns accuracy, macro_f1 and their percentile bootstrap 95% CIs over test items
    (`accuracy_ci`, `macro_f1_ci`), plus `n_test`.
    """
    model = probe if probe is not None else make_probe()
    model.fit(np.asarray(X_train), np.asarray(y_train))
    return _scores(np.asarray(y_test), model.predict(np.asarray(X_test)), seed, n_bootstrap)


def majority_baseline(y_train: Sequence, y_test: Sequence, *, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """Scores of always predicting the most frequent training label (ties: the first in sort order)."""
    classes, counts = np.unique(np.asarray(y_train), return_counts=True)
    y_test = np.asarray(y_test)
    return _scores(y_test, np.full(len(y_test), classes[np.argmax(counts)]), seed, n_bootstrap)


def probe_selectivity(task_accuracy: float, control_accuracy: float) -> float:
    """Selectivity (Hewitt & Liang 2019): task accuracy minus control-task accuracy."""
    for name, value in (("task_accuracy", task_accuracy), ("control_accuracy", control_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise NeurolocError(f"{name} must be in [0, 1], got {value}")
    return float(task_accuracy - control_accuracy)


def _scores(y_true: np.ndarray, y_pred: np.ndarray, seed: int, n_bootstrap: int, level: float = 0.95) -> dict:
    """Accuracy and macro-F1 with percentile bootstrap CIs, resampling test items."""
    n = len(y_true)
    if n == 0:
        raise NeurolocError("cannot score an empty test set")
    if n_bootstrap < 1:
        raise NeurolocError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    _, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = codes[:n], codes[n:]
    k = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    accuracy, macro_f1 = _accuracy_f1(t[None, :], p[None, :], k)
    boot_acc, boot_f1 = [], []
    chunk = max(1, 4_000_000 // n)  # bound memory at a few million resampled items
    for done in range(0, n_bootstrap, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_bootstrap - done), n))
        a, f = _accuracy_f1(t[idx], p[idx], k)
        boot_acc.append(a)
        boot_f1.append(f)
    tail = 100 * (1 - level) / 2
    acc_ci = np.percentile(np.concatenate(boot_acc), [tail, 100 - tail])
    f1_ci = np.percentile(np.concatenate(boot_f1), [tail, 100 - tail])
    return {
        "accuracy": float(accuracy[0]),
        "macro_f1": float(macro_f1[0]),
        "accuracy_ci": (float(acc_ci[0]), float(acc_ci[1])),
        "macro_f1_ci": (float(f1_ci[0]), float(f1_ci[1])),
        "n_test": n,
    }


def _accuracy_f1(t: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (rows, n) integer label arrays: accuracy and macro-F1 over the labels present
    in that row's truth or predictions (as sklearn's `f1_score(average="macro")`)."""
    rows, n = t.shape
    offset = (np.arange(rows) * k)[:, None]
    correct = t == p
    tp = np.bincount((offset + t)[correct], minlength=rows * k).reshape(rows, k)
    n_true = np.bincount((offset + t).ravel(), minlength=rows * k).reshape(rows, k)
    n_pred = np.bincount((offset + p).ravel(), minlength=rows * k).reshape(rows, k)
    support = n_true + n_pred
    present = support > 0
    f1 = np.where(present, 2 * tp / np.maximum(support, 1), 0.0)
    return correct.mean(axis=1), f1.sum(axis=1) / present.sum(axis=1)
