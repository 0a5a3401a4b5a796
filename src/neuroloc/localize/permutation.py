"""The permutation null of a unit selection: labels shuffled, the model never run again.

Stimuli's labels are shuffled within the design (only the labels the design compares take part; when
stimuli carry groups, whole groups are exchanged if every group holds one label, otherwise labels are
shuffled within each group, as in a paired design), N times from a seed. For every permutation each
unit's score is recomputed from the kept pooled rows (`neuroloc.record.folds.StimulusRows`), all
permutations at once: with indicator matrices A (permutations × rows), the per-condition sums are A·X and
A·X², so a thousand permutations cost two matrix products per compared label, chunked to bound memory.
The localizer's own rule is then applied to each permutation:

- `n_fdr`: units whose Benjamini–Hochberg adjusted p is ≤ q (the rule's `fdr`, else `alpha`) with the
  selective sign — the count an FDR rule would keep, uncapped;
- `n_selected`: the units the rule keeps (for a fixed percent or count, always the same number);
- `threshold`: the lowest score the rule keeps (for a fixed percent, the null distribution of the
  selection threshold);
- `max_score`: the largest score over all units, whose 1 − alpha quantile is the max-statistic
  family-wise threshold (Westfall & Young's single-step max-T).

p-values are (1 + #{null ≥ observed}) / (N + 1). The rule's statistic is its count for FDR rules and its
threshold for fixed percents or counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import special, stats

from ..errors import NeurolocError
from ..record.folds import StimulusRows
from ..stimuli.base import StimulusSet

if TYPE_CHECKING:  # the localizer imports nothing from here
    from .localizer import Localizer

__all__ = ["PERMUTABLE_SCORES", "PermutationNull", "permutation_null", "permuted_labels"]

PERMUTABLE_SCORES = ("welch", "one_vs_rest_welch", "cohen_d")
_CHUNK_ELEMENTS = 1 << 22  # permutations × units per chunk: a few tens of MB per float64 array


def permuted_labels(codes: np.ndarray, groups: Sequence | None, n: int, seed: int) -> np.ndarray:
    """(n, len(codes)) permuted copies of the label `codes` (seeded). Without groups every stimulus is
    exchangeable; with groups, whole groups are exchanged when each holds one label, else labels are
    shuffled within each group."""
    codes = np.asarray(codes)
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.stack([rng.permutation(codes) for _ in range(n)]) if n else np.empty((0, codes.size), codes.dtype)
    names, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    first = np.zeros(names.size, dtype=np.int64)
    first[index[::-1]] = np.arange(index.size)[::-1]  # a stimulus of each group
    group_codes = codes[first]
    if np.all(codes == group_codes[index]):  # every group holds one label: exchange whole groups
        order = np.argsort(rng.random((n, names.size)), axis=1)
        return group_codes[order][:, index]
    # Labels shuffled within each group: positions sorted by (group, random key) receive the group's labels.
    order = np.argsort(index[None, :] + rng.random((n, index.size)), axis=1)
    base = codes[np.argsort(index, kind="stable")]
    out = np.empty((n, index.size), dtype=codes.dtype)
    np.put_along_axis(out, order, np.broadcast_to(base, (n, index.size)), axis=1)
    return out


@dataclass
class PermutationNull:
    """`summary`: one row per compared label (observed values, null means and quantiles, p-values);
    `null`: one row per (label, permutation) with n_fdr, n_selected, threshold, max_score."""

    summary: pd.DataFrame
    null: pd.DataFrame


@dataclass
class _Chunk:
    """Scores of a chunk of permutations (permutations × units), with what the Welch df needs."""

    score: np.ndarray
    t: np.ndarray
    share_a: np.ndarray
    share_b: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray

    def df(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Welch–Satterthwaite df at the entries (rows, columns) (as `welch_t_test` writes it)."""
        share_a, share_b = self.share_a[rows, columns], self.share_b[rows, columns]
        n_a, n_b = self.n_a[rows], self.n_b[rows]
        se2 = share_a + share_b
        constant = se2 == 0
        safe = np.where(constant, 1.0, se2)
        inverse = (share_a / safe) ** 2 / (n_a - 1) + (share_b / safe) ** 2 / (n_b - 1)
        return np.where(constant, n_a + n_b - 2.0, 1.0 / np.where(constant, 1.0, inverse))


def _limit(values: torch.Tensor, difference: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Where `scale` is 0 (constant units), 0 or ±inf by the sign of the difference, as the localizer does."""
    flat = scale == 0
    if bool(flat.any()):
        limit = torch.copysign(torch.full_like(difference, torch.inf), difference).masked_fill_(difference == 0, 0.0)
        values = torch.where(flat, limit, values)
    return values


def _scores(X: torch.Tensor, X2: torch.Tensor, total: torch.Tensor, total2: torch.Tensor, A: torch.Tensor,
            cohen: bool) -> _Chunk:
    """Scores per (permutation, unit), condition a = rows where A is 1, b = the rest: Welch t (or Cohen's d
    with `cohen`), in place where it can be (the arrays are large)."""
    n_a = A.sum(1, keepdim=True)
    n_b = X.shape[0] - n_a
    s_a = A @ X
    m2_a = A @ X2
    m2_b = torch.sub(total2, m2_a)
    mean_b = torch.sub(total, s_a).div_(n_b)
    mean_a = s_a.div_(n_a)
    m2_a.sub_(mean_a.square().mul_(n_a)).clamp_min_(0)
    m2_b.sub_(mean_b.square().mul_(n_b)).clamp_min_(0)
    difference = mean_a.sub_(mean_b)
    del mean_b
    pooled = (m2_a + m2_b).div_(n_a + n_b - 2) if cohen else None
    share_a, share_b = m2_a.div_((n_a - 1) * n_a), m2_b.div_((n_b - 1) * n_b)
    se2 = share_a + share_b
    t = _limit(difference / se2.sqrt(), difference, se2)
    score = t if pooled is None else _limit(difference / pooled.sqrt(), difference, pooled)
    cpu = lambda x: x.cpu().numpy()  # noqa: E731
    return _Chunk(cpu(score), cpu(t), cpu(share_a), cpu(share_b), cpu(n_a).ravel(), cpu(n_b).ravel())


def _fdr_pass(chunk: _Chunk, q: float) -> np.ndarray:
    """Benjamini–Hochberg at q per row (all units of a row are one family), as the localizer applies it.
    A unit of rank k passes only if p ≤ q·k/m, so only if p ≤ q·K/m with K the units of its row that can
    pass: the candidates shrink to that fixed point first, with the normal tail (which bounds the t tail
    from below, so no p is needed), then with p. They hold the smallest p of their row, so their ranks
    among themselves are their ranks among all units, and only they are ranked."""
    t = chunk.t
    n, m = t.shape
    rows, columns = np.nonzero(np.abs(t) >= stats.norm.isf(q / 2))
    size = np.abs(t[rows, columns])
    while rows.size:  # |t| below the normal quantile of q·K/2m: p above q·K/m
        bar = stats.norm.isf(q * np.bincount(rows, minlength=n) / (2 * m))
        keep = size >= bar[rows]
        if keep.all():
            break
        rows, columns, size = rows[keep], columns[keep], size[keep]
    p = 2.0 * special.stdtr(chunk.df(rows, columns), -size)
    while rows.size:
        keep = p <= q * np.bincount(rows, minlength=n)[rows] / m
        if keep.all():
            break
        rows, columns, p = rows[keep], columns[keep], p[keep]
    order = np.lexsort((p, rows))  # by row, then p
    rows_sorted, p_sorted = rows[order], p[order]
    rank = np.arange(1, order.size + 1) - np.searchsorted(rows_sorted, rows_sorted)  # 1-based, within the row
    passing = p_sorted * m / rank <= q  # adjusted p of rank k ≤ q iff some rank ≥ k passes
    bar = np.full(n, -1.0)
    np.maximum.at(bar, rows_sorted[passing], p_sorted[passing])  # each row's largest passing p
    out = np.zeros(t.shape, dtype=bool)
    out[rows, columns] = p <= bar[rows]
    return out


def _wanted(localizer: "Localizer", groups: np.ndarray) -> dict[int, int]:
    """Units the rule asks for in each selection group (as `select_top` counts them)."""
    percent, count = localizer.percent, localizer.count
    if percent is None and count is None:
        percent = 1.0
    labels, sizes = np.unique(groups, return_counts=True)
    if count is not None:
        return {int(g): int(count) for g in labels}
    return {int(g): max(1, int(np.floor(percent * s / 100 + 0.5))) for g, s in zip(labels, sizes)}


def _rule(key: np.ndarray, eligible: np.ndarray | None, members: dict[int, np.ndarray],
          wanted: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(units kept, lowest kept score; NaN when none) per row under the top-k rule of each group,
    restricted to `eligible` units when given (then fewer than k may be kept)."""
    kept = np.zeros(key.shape[0], dtype=np.int64)
    lowest = np.full(key.shape[0], np.inf)
    masked = key if eligible is None else np.where(eligible, key, -np.inf)
    masked = torch.from_numpy(np.nan_to_num(masked, nan=-np.inf) if np.isnan(masked).any() else masked)
    for group, units in members.items():
        k = min(wanted[group], units.size)
        part = masked if units.size == masked.shape[1] else masked[:, torch.from_numpy(units)]
        top = part.topk(k, dim=1, sorted=False).values.numpy()  # the k largest, unordered (NaN never)
        usable = np.ones_like(top, dtype=bool) if eligible is None else top > -np.inf
        kept += usable.sum(1)
        lowest = np.minimum(lowest, np.where(usable, top, np.inf).min(1))
    return kept, np.where(kept == 0, np.nan, lowest)


def _null_summary(name: str, null: np.ndarray) -> dict[str, float]:
    """Mean and 95th percentile of a null distribution (NaN entries, e.g. no unit kept, left out)."""
    finite = null[~np.isnan(null)]
    if not finite.size:
        return {f"{name}_null_mean": float("nan"), f"{name}_null_q95": float("nan")}
    return {f"{name}_null_mean": float(finite.mean()), f"{name}_null_q95": float(np.quantile(finite, 0.95))}


def _p_value(null: np.ndarray, observed: float) -> float:
    """(1 + #{null >= observed}) / (N + 1); NaN entries of the null (no unit kept) count as below."""
    if np.isnan(observed):
        return float("nan")
    return float((1 + np.sum(np.nan_to_num(null, nan=-np.inf) >= observed)) / (null.size + 1))


def permutation_null(localizer: "Localizer", rows: StimulusRows, stimuli: StimulusSet, *, n: int, seed: int,
                     alpha: float) -> PermutationNull:
    """The permutation null of `localizer`'s selection (fitted on `stimuli`, whose pooled rows are `rows`):
    `n` seeded permutations of the labels, vectorised over the kept rows."""
    name = localizer.score_function.name
    if name not in PERMUTABLE_SCORES:
        raise NeurolocError(f"the permutation null recomputes scores from pooled rows, which score {name!r} is not "
                            f"built from; use one of {', '.join(PERMUTABLE_SCORES)} or --permutations 0")
    if n < 1:
        raise NeurolocError(f"permutations must be >= 1, got {n}")
    design = localizer.design_
    present = localizer.stats_.labels("moments")
    included = list(design.labels) if design.kind == "contrast" else present
    comparisons = design.comparisons(present)
    conditions = np.asarray(stimuli.conditions, dtype=object)
    texts = np.flatnonzero(np.isin(conditions, included))
    codes = np.array([included.index(c) for c in conditions[texts]])
    groups = None if stimuli.groups is None else [stimuli.groups[i] for i in texts]
    labels = np.vstack([codes[None, :], permuted_labels(codes, groups, n, seed)])  # row 0: the observed labels

    position = np.full(len(stimuli), -1)
    position[texts] = np.arange(texts.size)
    row_text = position[rows.texts]
    in_design = row_text >= 0
    X = rows.columns([s.name for s in localizer.sites_])[torch.from_numpy(np.flatnonzero(in_design))]
    X = X.to(torch.float64)
    if localizer.absolute:
        X = X.abs()
    X = X - X.mean(0)
    X[:, (X.amax(0) == X.amin(0))] = 0.0  # constant units: exact zeros, so t = 0 as the localizer gives
    X2 = X.square()
    total, total2 = X.sum(0), X2.sum(0)
    row_labels = labels[:, row_text[in_design]]

    groups_of_unit = localizer.selection_groups()
    members = {int(g): np.flatnonzero(groups_of_unit == g) for g in np.unique(groups_of_unit)}
    wanted = _wanted(localizer, groups_of_unit)
    q = localizer.fdr if localizer.fdr is not None else alpha
    sign = 1.0 if localizer.result_.larger_is_better else -1.0
    chunk = max(1, _CHUNK_ELEMENTS // X.shape[1])
    summaries, nulls = [], []
    for target, _ in comparisons:
        code = included.index(target)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("n_fdr", "n_selected", "threshold", "max_score")}
        for start in range(0, labels.shape[0], chunk):
            A = torch.from_numpy((row_labels[start:start + chunk] == code).astype(np.float64)).to(X.device)
            scored = _scores(X, X2, total, total2, A, cohen=name == "cohen_d")
            key = scored.score if sign > 0 else -scored.score
            passing = _fdr_pass(scored, q) & (key > 0)
            kept, lowest = _rule(key, passing if localizer.fdr is not None else None, members, wanted)
            parts["n_fdr"].append(passing.sum(1))
            parts["n_selected"].append(kept)
            parts["threshold"].append(lowest)
            parts["max_score"].append(np.max(key, axis=1))
        values = {k: np.concatenate(v) for k, v in parts.items()}
        observed = {k: v[0] for k, v in values.items()}
        null = {k: v[1:] for k, v in values.items()}
        fwer = float(np.quantile(null["max_score"], 1 - alpha, method="higher"))
        observed_key = sign * np.asarray(localizer.result_.values[localizer.labels_.index(target)])
        statistic = "n_selected" if localizer.fdr is not None else "threshold"
        summaries.append({
            "label": target, "permutations": n, "seed": seed, "rule_statistic": statistic,
            "n_selected": int(observed["n_selected"]), **_null_summary("n_selected", null["n_selected"]),
            "n_fdr": int(observed["n_fdr"]), **_null_summary("n_fdr", null["n_fdr"]),
            "p_n_fdr": _p_value(null["n_fdr"], observed["n_fdr"]),
            "threshold": float(observed["threshold"]), **_null_summary("threshold", null["threshold"]),
            "p_threshold": _p_value(null["threshold"], observed["threshold"]),
            "fwer_threshold": fwer, "n_fwer": int(np.sum(observed_key > fwer)),
            "p": _p_value(null[statistic], observed[statistic]),
        })
        nulls.append(pd.DataFrame({"label": target, "permutation": np.arange(1, n + 1), **null}))
    return PermutationNull(pd.DataFrame(summaries), pd.concat(nulls, ignore_index=True))
