"""Stimulus confounds: is a unit's selectivity a matter of how many tokens the stimuli have?

Conditions of a localizer rarely have equal token counts (Fedorenko et al.'s non-word strings split into
many more tokens than sentences of the same number of words), and a unit that tracks position or length
then looks selective. Three checks, from the stimuli's token counts and their kept pooled rows:

- `token_count_table`: each condition's token-count distribution (and how many a length-matched subset keeps);
- `length_explained`: for each selected unit, the correlation of its activation with the condition and the
  partial correlation given the token count; a unit whose partial correlation is no longer significant
  (or changes sign) has a selectivity explained by length;
- `length_matched`: the stimuli reduced to equal token counts across conditions (at each token count, as
  many of each condition as the rarest has), the localizer refitted on them, and the overlap of the new
  unit set with the original one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..record.folds import StimulusRows
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..text.encoding import encode
from .overlap import compare_sets

if TYPE_CHECKING:
    from .localizer import Localizer

__all__ = ["compared_labels", "length_explained", "length_matched", "length_matched_mask", "partial_correlation",
           "token_count_table", "token_counts"]


def token_counts(tokenizer, stimuli: StimulusSet, *, settings: RunSettings) -> np.ndarray:
    """Every text's own tokens (no BOS or other special tokens), as the model sees it under `settings`."""
    encoded = encode(tokenizer, stimuli.texts, bos=settings.bos, max_tokens=settings.max_tokens)
    return np.array([len(special) - sum(special) for special in encoded.special], dtype=np.int64)


def compared_labels(localizer: "Localizer") -> list[str]:
    """The labels a fitted localizer's design compares (a contrast's two; otherwise every label present)."""
    design = localizer.design_
    return list(design.labels) if design.kind == "contrast" else localizer.stats_.labels(
        "moments" if localizer.stats_.has("moments") else "tokens")


def length_matched_mask(stimuli: StimulusSet, counts: np.ndarray, labels: Sequence[str],
                        order: np.ndarray) -> np.ndarray:
    """Stimuli kept when every token count holds as many of each label as the rarest label has there;
    within a (label, count) cell the first by `order` (e.g. fold positions: stable as stimuli are added)."""
    conditions = np.asarray(stimuli.conditions, dtype=object)
    keep = np.zeros(len(stimuli), dtype=bool)
    for length in np.unique(counts):
        cells = [np.flatnonzero((conditions == label) & (counts == length)) for label in labels]
        k = min(cell.size for cell in cells)
        for cell in cells:
            keep[cell[np.argsort(order[cell], kind="stable")[:k]]] = True
    return keep


def token_count_table(stimuli: StimulusSet, counts: np.ndarray, labels: Sequence[str],
                      matched: np.ndarray | None = None) -> pd.DataFrame:
    """Per label: n, token-count mean, sd, min, median, max, and n kept by length matching."""
    conditions = np.asarray(stimuli.conditions, dtype=object)
    rows = []
    for label in labels:
        values = counts[conditions == label]
        rows.append({"label": label, "n": int(values.size), "tokens_mean": float(values.mean()),
                     "tokens_sd": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                     "tokens_min": int(values.min()), "tokens_median": float(np.median(values)),
                     "tokens_max": int(values.max()),
                     "n_length_matched": int((matched & (conditions == label)).sum()) if matched is not None else None})
    return pd.DataFrame(rows)


def _correlations(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Pearson r of every column of x with the vector c (NaN where a column is constant)."""
    x = x - x.mean(0)
    c = c - c.mean()
    denominator = x.norm(dim=0) * c.norm()
    return torch.where(denominator > 0, (c @ x) / denominator, torch.full_like(denominator, torch.nan))


def _p_of_r(r: np.ndarray, df: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / np.clip(1 - r**2, 1e-300, None))
    return 2 * stats.t.sf(np.abs(t), df)


def partial_correlation(x: torch.Tensor, c: torch.Tensor, covariate: torch.Tensor) -> torch.Tensor:
    """Pearson r of every column of x with c once both are residualised on [1, covariate]."""
    design = torch.stack([torch.ones_like(covariate), covariate], dim=1)
    projection = design @ torch.linalg.pinv(design)
    return _correlations(x - projection @ x, c - projection @ c)


def length_explained(localizer: "Localizer", rows: StimulusRows, stimuli: StimulusSet, counts: np.ndarray, *,
                     alpha: float) -> pd.DataFrame:
    """Per compared label: the selected units whose selectivity is explained by token count (partial
    correlation of activation with the condition given the count not significant at `alpha`, or of the
    other sign). Columns: label, n_selected, n_explained, share_explained, r_condition_length (how strongly
    the design confounds condition and length), r_median, partial_r_median (over the selected units)."""
    labels = compared_labels(localizer)
    conditions = np.asarray(stimuli.conditions, dtype=object)
    row_keep = np.isin(conditions, labels)[rows.texts]
    X = rows.columns([s.name for s in localizer.sites_])[torch.from_numpy(np.flatnonzero(row_keep))].to(torch.float64)
    if localizer.absolute:
        X = X.abs()
    length = torch.from_numpy(counts[rows.texts[row_keep]].astype(np.float64)).to(X.device)
    support = np.atleast_2d(localizer.get_support())
    sign = 1.0 if localizer.result_.larger_is_better else -1.0
    out = []
    for target, _ in localizer.design_.comparisons(labels):
        row = localizer.labels_.index(target)
        c = torch.from_numpy((conditions[rows.texts[row_keep]] == target).astype(np.float64)).to(X.device)
        r = _correlations(X, c).cpu().numpy()
        partial = partial_correlation(X, c, length).cpu().numpy()
        p_partial = _p_of_r(partial, int(row_keep.sum()) - 3)
        selected = support[row]
        same_sign = np.sign(partial) == np.sign(sign * localizer.result_.values[row])
        explained = selected & ~((p_partial <= alpha) & same_sign)
        n = int(selected.sum())
        out.append({"label": target, "n_selected": n, "n_explained": int(explained.sum()),
                    "share_explained": float(explained.sum() / n) if n else float("nan"),
                    "r_condition_length": float(_correlations(length[:, None], c)[0]),
                    "r_median": float(np.nanmedian(r[selected])) if n else float("nan"),
                    "partial_r_median": float(np.nanmedian(partial[selected])) if n else float("nan")})
    return pd.DataFrame(out)


def length_matched(localizer: "Localizer", rows: StimulusRows, stimuli: StimulusSet, counts: np.ndarray,
                   order: np.ndarray, *, level: float = 0.95) -> tuple[pd.DataFrame, np.ndarray]:
    """Refit `localizer`'s rule on the length-matched stimuli (from the kept rows, no model run) and
    compare the unit sets. Returns (table, kept-stimuli mask); table columns: label, n_stimuli, n_kept,
    n_selected_full, n_selected_matched, n_both, jaccard, jaccard_chance, jaccard_chance_high, p_overlap,
    recall (share of the original set found again), r (correlation of the scores)."""
    labels = compared_labels(localizer)
    keep = length_matched_mask(stimuli, counts, labels, order)
    kinds = [k for k in localizer.statistic_kinds() if k != "tokens"]
    conditions = np.asarray(stimuli.conditions, dtype=object)
    enough = all(int((keep & (conditions == label)).sum()) >= 2 for label in labels)
    matched = None
    if enough:
        store = rows.store(stimuli.conditions, [s.name for s in localizer.sites_], keep=keep, kinds=kinds)
        matched = localizer.clone().fit_stats(store, model=localizer.model_, design=localizer.design_,
                                              widths=dict(zip((s.name for s in localizer.sites_), localizer.widths_)))
    full = np.atleast_2d(localizer.get_support())
    out = []
    for row, label in enumerate(localizer.labels_):
        base = {"label": label, "n_stimuli": int(np.isin(conditions, labels).sum()), "n_kept": int(keep.sum()),
                "n_selected_full": int(full[row].sum())}
        if matched is None:
            out.append(base)
            continue
        mask = np.atleast_2d(matched.get_support())[row]
        overall = compare_sets(full[row], mask, localizer.result_.values[row], matched.result_.values[row],
                               localizer.sites_, localizer.widths_, level).iloc[-1]
        out.append({**base, "n_selected_matched": int(mask.sum()), "n_both": int(overall.n_both),
                    "jaccard": overall.jaccard, "jaccard_chance": overall.jaccard_chance,
                    "jaccard_chance_high": overall.jaccard_chance_high, "p_overlap": overall.p_overlap,
                    "recall": overall.n_both / full[row].sum() if full[row].sum() else float("nan"),
                    "r": overall.r})
    frame = pd.DataFrame(out)
    if not enough:
        frame["note"] = f"length matching keeps fewer than 2 stimuli of some label ({int(keep.sum())} kept in all)"
    return frame, keep
