"""Is a unit set real? Split-half reliability, held-out selectivity, stability, permutation and untrained nulls.

A functional region in neuroscience is defined on independent localizer data, its selectivity measured on
held-out data (no double dipping), its reliability across runs reported and its effects judged against
chance. The same for a localizer's unit set, from ONE recording pass with statistics per fold
(`Localizer.fit_folds`):

- `split_half`: the units selected on each fold with the same rule (percent / count / FDR / per layer),
  their Jaccard and Dice overlap against the chance overlap of random sets with the same per-site counts
  (`neuroloc.localize.overlap`: mean, 95 % interval, p), and the correlation of the unit scores between
  folds with its Spearman–Brown correction; per site and overall; every pair of folds and their mean;
- `held_out`: units selected on the training folds, their effect (Welch t, Cohen's d, mean difference,
  and the localizer's own score) on the held-out fold against random units drawn with the same per-site
  counts; with the pooled rows kept, also the response of the set as a whole (its mean activation per
  stimulus: an fMRI "region of interest" response) — cross-validated over folds;
- `stability`: overlap of the set selected from the first 25 / 50 / 75 % of the stimuli with the full set;
- `neuroloc.localize.permutation`: the permutation null of the rule; `untrained_null`: the same localizer
  in freshly initialised copies of the architecture; `neuroloc.localize.confounds`: token-count checks.

`assess(lm, stimuli, localizer, config, settings=...)` runs them all (one recording, then no model run
except for untrained copies) and returns a `Reliability`: the fitted localizer, the tables and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..config import Config, Each, InstanceOf, Interval, Options, param
from ..errors import NeurolocError
from ..io import atomic_write_with
from ..models.loading import LoadedModel
from ..parse import parse_floats
from ..models.untrained import untrained_model
from ..record.checkpoint import Checkpoint
from ..record.stats import StatsStore
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..stimuli.folds import FOLD_KEYS, FoldAssignment, assign_folds
from .confounds import compared_labels, length_explained, length_matched, token_count_table, token_counts
from .localizer import Localizer
from .overlap import compare_sets
from .permutation import PERMUTABLE_SCORES, permutation_null
from .score_functions import get_score
from .scores import benjamini_hochberg
from .selection import select_random

__all__ = ["Reliability", "ReliabilityConfig", "assess", "fold_fits", "held_out", "parse_null", "split_half",
           "stability", "untrained_null"]


def parse_null(spec: str) -> tuple[int, ...]:
    """`untrained` (seed 0) or `untrained:0,1,2` (those seeds) → the untrained-model seeds."""
    head, _, seeds = spec.strip().partition(":")
    if head != "untrained":
        raise NeurolocError(f"cannot read null {spec!r}; use untrained or untrained:SEED,SEED,...")
    try:
        return tuple(int(s) for s in seeds.split(",") if s.strip()) or (0,)
    except ValueError:
        raise NeurolocError(f"cannot read the seeds of null {spec!r}; use untrained:0,1,2") from None


@dataclass(frozen=True)
class ReliabilityConfig(Config):
    """What `assess` computes."""

    folds: int = param(2, Interval(int, 2, None), help="Folds the stimuli are split into (by content).")
    fold_by: str = param("auto", Options(FOLD_KEYS),
                         help="Fold by text, by group (a group never spans folds), or auto (groups when given).")
    fold_seed: int = param(0, InstanceOf(int), help="Salt of the fold hash: another draw of folds.")
    permutations: int = param(1000, Interval(int, 0, None),
                              help="Label permutations of the null (0: none); the model is never run again.")
    seed: int = param(0, InstanceOf(int), help="Seed of the permutations and of the random layer-matched units.")
    alpha: float = param(0.05, Interval(float, 0, 1, "neither"),
                         help="Level of the FDR count, the family-wise threshold and the confound tests.")
    random_sets: int = param(100, Interval(int, 1, None), flag="--held-out-random-sets",
                             help="Random layer-matched unit sets the held-out effect is compared with.")
    stability: tuple[float, ...] = param((0.25, 0.5, 0.75), Each(Interval(float, 0, 1, "neither"), empty=True),
                                         parse=parse_floats, help="Shares of the stimuli the stability curve selects from.")
    untrained: tuple[int, ...] = param((), Each(Interval(int, 0, None), empty=True), parse=parse_null,
                                       flag="--null", help="untrained[:SEEDS]: localize freshly initialised copies "
                                                           "of the architecture too.")
    confounds: bool = param(True, InstanceOf(bool), help="Token-count checks (needs pooled rows).")
    length_matched: bool = param(False, InstanceOf(bool),
                                 help="Refit on stimuli with equal token counts across conditions and compare.")


# ------------------------------------------------------------------------------------------- fold fits
def _fit_on(localizer: Localizer, store: StatsStore) -> Localizer:
    """A copy of `localizer`'s rule fitted on `store` (same design, sites and widths)."""
    return localizer.clone().fit_stats(store, model=localizer.model_, design=localizer.design_,
                                       widths=dict(zip((s.name for s in localizer.sites_), localizer.widths_)))


def _fold_stats(localizer: Localizer):
    stats_ = getattr(localizer, "fold_stats_", None)
    if stats_ is None:
        raise NeurolocError("the localizer holds no statistics per fold: fit it with folds (Localizer(folds=K) or "
                            "fit_folds)")
    return stats_


def fold_fits(localizer: Localizer) -> list[Localizer]:
    """The localizer's rule fitted on each fold alone (fold order)."""
    recording = _fold_stats(localizer)
    return [_fit_on(localizer, recording.fold(k)) for k in range(recording.k)]


def _rows(localizer: Localizer) -> tuple[np.ndarray, np.ndarray]:
    """(selection masks, scores), one row per compared label."""
    return np.atleast_2d(localizer.get_support()), np.atleast_2d(localizer.result_.values)


def _site_index(localizer: Localizer) -> np.ndarray:
    return np.repeat(np.arange(len(localizer.sites_)), localizer.widths_)


def _with_mean(frame: pd.DataFrame, keys: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    """`frame` plus, per `by`, the mean of its numeric columns over rows (the `keys` columns NA there;
    p-values NaN, as a mean of p-values is none)."""
    numeric = [c for c in frame.columns if c not in (*keys, *by) and pd.api.types.is_numeric_dtype(frame[c])]
    means = frame.groupby(list(by), sort=False, dropna=False)[numeric].mean().reset_index()
    for key in keys:
        means[key] = pd.NA
    for column in [c for c in numeric if c.startswith("p_")]:
        means[column] = np.nan
    out = pd.concat([frame, means[frame.columns]], ignore_index=True)
    for key in keys:
        out[key] = out[key].astype("Int64")
    return out


# ------------------------------------------------------------------------------------------ split half
def split_half(localizer: Localizer, *, fits: Sequence[Localizer] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Overlap of the units selected on each pair of folds, per site and overall ("all"), against chance;
    with K > 2, rows with fold_a = fold_b = NA hold the mean over pairs (p_overlap NaN there).
    Columns: label, fold_a, fold_b, site, kind, layer, n_units, n_a, n_b, n_both, jaccard,
    jaccard_chance(_low/_high), dice, dice_chance(_low/_high), p_overlap, r, r_spearman_brown (r projected
    to the full data, K folds)."""
    fits = list(fits) if fits is not None else fold_fits(localizer)
    k = len(fits)
    frames = []
    for a, b in combinations(range(k), 2):
        (mask_a, score_a), (mask_b, score_b) = _rows(fits[a]), _rows(fits[b])
        for row, label in enumerate(localizer.labels_):
            frame = compare_sets(mask_a[row], mask_b[row], score_a[row], score_b[row], localizer.sites_,
                                 localizer.widths_, level)
            frames.append(frame.assign(label=label, fold_a=a, fold_b=b))
    out = pd.concat(frames, ignore_index=True)
    out["r_spearman_brown"] = k * out["r"] / (1 + (k - 1) * out["r"])
    out = out[["label", "fold_a", "fold_b", *[c for c in out.columns if c not in ("label", "fold_a", "fold_b")]]]
    if k > 2:
        out = _with_mean(out, ["fold_a", "fold_b"], ["label", "site", "kind", "layer"])
    out["fold_a"], out["fold_b"] = out["fold_a"].astype("Int64"), out["fold_b"].astype("Int64")
    return out


# ----------------------------------------------------------------------------------------- held out
def _random_masks(mask: np.ndarray, sites: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """`draws` random unit sets with `mask`'s per-site counts, outside it: (draws, units)."""
    counts = {int(s): int(c) for s, c in zip(*np.unique(sites[mask], return_counts=True))}
    return select_random(mask.size, counts_per_group=counts, groups=sites, seed=seed, exclude=mask, draws=draws)


def _set_means(sets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of `values` over each set's units (rows of boolean `sets`), ignoring non-finite values
    (e.g. LAPE's units below the probability bar)."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sets.astype(np.float64) @ np.where(finite, values, 0.0)) / (sets.astype(np.float64) @ finite)


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _welch_columns(values: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch t and Cohen's d (pooled SD) of each column of `values` (stimuli × sets), target vs the rest."""
    a, b = values[target], values[~target]
    t = stats.ttest_ind(a, b, axis=0, equal_var=False).statistic
    pooled = np.sqrt(((a.shape[0] - 1) * a.var(0, ddof=1) + (b.shape[0] - 1) * b.var(0, ddof=1))
                     / (a.shape[0] + b.shape[0] - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return t, (a.mean(0) - b.mean(0)) / pooled


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def held_out(localizer: Localizer, stimuli: StimulusSet, *, draws: int, seed: int,
             fits: Sequence[Localizer] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Cross-validated selectivity: for each fold, units selected on the other folds and their mean
    effect on it against `draws` random sets with the same per-site counts (seeded). Rows with fold = NA
    hold the mean over folds (p_random NaN there). Columns: label, fold, n_train, n_test, n_units, t, d,
    mean_difference, score (the localizer's own score on the held-out fold), their *_random means,
    t_random/d_random intervals (_low/_high), p_random ((1 + random sets with d at least the set's) /
    (draws + 1)), and with pooled rows kept roi_t, roi_d, roi_d_random, roi_d_random_high (the set's mean
    activation per held-out stimulus, target vs the rest).

    Random sets are a reference, not a test: units selected together are more alike than random ones, so
    their mean effect varies more than a random set's, and p_random is only descriptive (the permutation
    null is the test)."""
    recording = _fold_stats(localizer)
    fits = list(fits) if fits is not None else fold_fits(localizer)
    labels = compared_labels(localizer)
    conditions = np.asarray(stimuli.conditions, dtype=object)
    in_design = np.isin(conditions, labels)
    folds = recording.assignment.folds
    sites = _site_index(localizer)
    effect = get_score("one_vs_rest_welch")
    out = []
    for k in range(recording.k):
        train = _fit_on(localizer, recording.train(k))
        masks, _ = _rows(train)
        test = fits[k]
        moments = test.stats_.has("moments")
        measured = effect(test.stats_, localizer.design_, absolute=localizer.absolute) if moments else None
        for row, label in enumerate(localizer.labels_):
            mask = masks[row]
            base = {"label": label, "fold": k, "n_train": int((in_design & (folds != k)).sum()),
                    "n_test": int((in_design & (folds == k)).sum()), "n_units": int(mask.sum())}
            if not mask.any():
                out.append(base)
                continue
            sets = np.vstack([mask, _random_masks(mask, sites, draws, seed + 1000 * k)])
            columns = {"score": np.atleast_2d(test.result_.values)[row]}
            if measured is not None:
                where = measured.labels.index(label)
                columns.update(t=measured.values[where], d=measured.columns["d"][where],
                               mean_difference=measured.columns["mean_a"][where] - measured.columns["mean_b"][where])
            record = dict(base)
            for name, values in columns.items():
                means = _set_means(sets, values)
                record[name], record[f"{name}_random"] = float(means[0]), _nanmean(means[1:])
                if name in ("t", "d"):
                    record[f"{name}_random_low"], record[f"{name}_random_high"] = _interval(means[1:], level)
                if name == "d":
                    record["p_random"] = float((1 + np.sum(means[1:] >= means[0])) / (draws + 1))
            if recording.rows is not None:
                record.update(_roi(localizer, recording, stimuli, k, label, sets / sets.sum(1, keepdims=True), level))
            out.append(record)
    frame = pd.DataFrame(out)
    return _with_mean(frame, ["fold"], ["label"])


def _roi(localizer: Localizer, recording, stimuli: StimulusSet, k: int, label: str, sets: np.ndarray,
         level: float) -> dict[str, float]:
    """The sets' mean activation per held-out stimulus (row), target label vs the others compared."""
    rows = recording.rows
    labels = compared_labels(localizer)
    conditions = np.asarray(stimuli.conditions, dtype=object)[rows.texts]
    chosen = (recording.assignment.folds[rows.texts] == k) & np.isin(conditions, labels)
    picked = torch.from_numpy(np.flatnonzero(chosen))
    values = rows.columns([s.name for s in localizer.sites_])[picked].double().cpu().numpy()
    if localizer.absolute:
        values = np.abs(values)
    target = conditions[chosen] == label
    t, d = _welch_columns(values @ sets.T, target)
    return {"roi_t": float(t[0]), "roi_d": float(d[0]), "roi_d_random": float(np.mean(d[1:])),
            "roi_d_random_high": _interval(d[1:], level)[1]}


# ------------------------------------------------------------------------------------------ stability
def stability(localizer: Localizer, stimuli: StimulusSet, fractions: Sequence[float], *,
              level: float = 0.95) -> pd.DataFrame:
    """Overlap of the set selected from the first `fractions` of the stimuli (by fold position) with the
    set selected from all of them. Columns: label, fraction, n_stimuli, n_selected, n_full, n_both,
    jaccard, jaccard_chance, jaccard_chance_high, recall (share of the full set found), r."""
    recording = _fold_stats(localizer)
    labels = compared_labels(localizer)
    conditions = np.asarray(stimuli.conditions, dtype=object)
    full_masks, full_scores = _rows(localizer)
    out = []
    for fraction in sorted(fractions):
        kept = recording.first_mask(fraction)
        counts = [int((kept & (conditions == label)).sum()) for label in labels]
        fit = _fit_on(localizer, recording.first(fraction)) if min(counts) >= 2 else None
        for row, label in enumerate(localizer.labels_):
            base = {"label": label, "fraction": fraction, "n_stimuli": int(sum(counts)),
                    "n_full": int(full_masks[row].sum())}
            if fit is None:
                out.append(base)
                continue
            masks, scores = _rows(fit)
            overall = compare_sets(masks[row], full_masks[row], scores[row], full_scores[row], localizer.sites_,
                                   localizer.widths_, level).iloc[-1]
            out.append({**base, "n_selected": int(overall.n_a), "n_both": int(overall.n_both),
                        "jaccard": overall.jaccard, "jaccard_chance": overall.jaccard_chance,
                        "jaccard_chance_high": overall.jaccard_chance_high,
                        "recall": overall.n_both / base["n_full"] if base["n_full"] else float("nan"), "r": overall.r})
    for row, label in enumerate(localizer.labels_):
        n = int(full_masks[row].sum())
        out.append({"label": label, "fraction": 1.0, "n_stimuli": int(np.isin(conditions, labels).sum()),
                    "n_full": n, "n_selected": n, "n_both": n, "jaccard": 1.0, "recall": 1.0, "r": 1.0})
    return pd.DataFrame(out).sort_values(["label", "fraction"], kind="stable", ignore_index=True)


# ------------------------------------------------------------------------------------ untrained null
def _significant(localizer: Localizer, row: int, alpha: float) -> int:
    """Units whose BH-adjusted p is ≤ alpha with the selective sign (NaN when the score has no p)."""
    if localizer.result_.pvalues is None:
        return -1
    key = localizer.result_.values[row] * (1 if localizer.result_.larger_is_better else -1)
    return int(((benjamini_hochberg(localizer.result_.pvalues[row]) <= alpha) & (key > 0)).sum())


def untrained_null(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, seeds: Sequence[int], *,
                   settings: RunSettings, alpha: float, level: float = 0.95,
                   fits: dict[str, Localizer] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same localizer in freshly initialised copies of `lm` (one per seed) beside the trained one.
    Returns (summary, layers). summary: model, label, n_selected, n_significant (BH ≤ alpha, selective
    sign; -1 when the score has no p-value), score_mean (over the selected units), n_both, jaccard,
    jaccard_chance, jaccard_chance_high, p_overlap (overlap with the trained set); layers: model, label,
    site, kind, layer, n_units, n_selected. `fits`, when given, receives each untrained copy's fitted
    localizer by model name (`untrained:SEED`), e.g. to lesion its units in that copy."""
    trained_masks, trained_scores = _rows(localizer)
    models: list[tuple[str, Localizer]] = [("trained", localizer)]
    for seed in seeds:
        fresh = untrained_model(lm, seed)
        fitted = localizer.clone()
        fitted.folds = None
        fitted.fit_folds(fresh, stimuli, assign_folds(stimuli, 1), settings=settings, rows=False)
        del fitted.fold_stats_
        models.append((f"untrained:{seed}", fitted))
        if fits is not None:
            fits[f"untrained:{seed}"] = fitted
        del fresh
    summary, layers = [], []
    for name, fitted in models:
        masks, scores = _rows(fitted)
        for row, label in enumerate(localizer.labels_):
            overall = compare_sets(trained_masks[row], masks[row], trained_scores[row], scores[row],
                                   localizer.sites_, localizer.widths_, level)
            total = overall.iloc[-1]
            selected = scores[row][masks[row]]
            summary.append({"model": name, "label": label, "n_selected": int(masks[row].sum()),
                            "n_significant": _significant(fitted, row, alpha),
                            "score_mean": float(np.nanmean(selected)) if selected.size else float("nan"),
                            "n_both": int(total.n_both), "jaccard": total.jaccard,
                            "jaccard_chance": total.jaccard_chance, "jaccard_chance_high": total.jaccard_chance_high,
                            "p_overlap": total.p_overlap, "r": total.r})
            per_site = overall.iloc[:-1]
            layers.append(pd.DataFrame({"model": name, "label": label, "site": per_site.site, "kind": per_site.kind,
                                        "layer": per_site.layer, "n_units": per_site.n_units,
                                        "n_selected": per_site.n_b}))
    return pd.DataFrame(summary), pd.concat(layers, ignore_index=True)


# --------------------------------------------------------------------------------------- everything
@dataclass
class Reliability:
    """What `assess` found: the fitted localizer (as a plain fit would be), the fold assignment, one table
    per analysis (`tables`: folds, fold_sizes, split_half, held_out, stability, permutation,
    permutation_null, token_counts, length_explained, length_matched, untrained, untrained_layers — those
    computed) and `summary`, one row per compared label: the reliability column beside a unit set."""

    localizer: Localizer
    assignment: FoldAssignment
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    untrained_fits: dict[str, Localizer] = field(default_factory=dict)  # the untrained copies' localizers

    @property
    def summary(self) -> pd.DataFrame:
        """Per label: n_units, split-half jaccard and its chance mean and upper bound, r_spearman_brown,
        held-out d and its random-set mean, permutation p (and the statistic it tests), n_fdr and its
        permutation mean, share of units explained by length, untrained units (mean over seeds) and
        their jaccard with the trained set."""
        rows = []
        for row, label in enumerate(self.localizer.labels_):
            entry: dict[str, object] = {"label": label,
                                        "n_units": int(np.atleast_2d(self.localizer.get_support())[row].sum())}
            split = self.tables["split_half"]
            split = split[(split.label == label) & (split.site == "all")]
            split = split[split.fold_a.isna()] if split.fold_a.isna().any() else split
            entry.update({f"split_half_{c}": float(split[c].iloc[0]) for c in
                          ("jaccard", "jaccard_chance", "jaccard_chance_high", "p_overlap", "r_spearman_brown")})
            held = self.tables["held_out"]
            held = held[(held.label == label) & held.fold.isna()]
            for c in ("d", "d_random", "roi_d", "roi_d_random"):
                if c in held:
                    entry[f"held_out_{c}"] = float(held[c].iloc[0])
            if "permutation" in self.tables:
                perm = self.tables["permutation"].set_index("label").loc[label]
                entry.update(permutation_p=perm.p, permutation_statistic=perm.rule_statistic,
                             n_fdr=perm.n_fdr, n_fdr_null_mean=perm.n_fdr_null_mean, n_fwer=perm.n_fwer)
            if "length_explained" in self.tables:
                entry["share_explained_by_length"] = float(
                    self.tables["length_explained"].set_index("label").loc[label, "share_explained"])
            if "length_matched" in self.tables and "jaccard" in self.tables["length_matched"]:
                entry["length_matched_jaccard"] = float(
                    self.tables["length_matched"].set_index("label").loc[label, "jaccard"])
            if "untrained" in self.tables:
                fresh = self.tables["untrained"]
                fresh = fresh[(fresh.label == label) & (fresh.model != "trained")]
                entry.update(untrained_n_significant=float(fresh.n_significant.mean()),
                             untrained_jaccard=float(fresh.jaccard.mean()))
            rows.append(entry)
        return pd.DataFrame(rows)

    def save(self, directory: str | Path) -> None:
        """Write `reliability.csv` (the summary), `folds.csv` and `reliability_<table>.csv` for each table."""
        directory = Path(directory)
        summary = self.summary
        atomic_write_with(directory / "reliability.csv", lambda tmp: summary.to_csv(tmp, index=False))
        for name, table in self.tables.items():
            target = directory / ("folds.csv" if name == "folds" else f"reliability_{name}.csv")
            atomic_write_with(target, lambda tmp, table=table: table.to_csv(tmp, index=False))


def assess(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, config: ReliabilityConfig, *,
           settings: RunSettings, checkpoint: Checkpoint | None = None) -> Reliability:
    """Fit `localizer` on `stimuli` (one recording pass, statistics per fold, pooled rows kept when the
    permutation null or confound checks need them) and compute every reliability analysis `config` asks
    for. `localizer` ends up fitted exactly as `localizer.fit(lm, stimuli)` would leave it, plus
    `folds_` and `fold_stats_`. With a `checkpoint` (keyed on `config` too) the recording pass resumes from
    it; the untrained copies' recordings are not checkpointed."""
    assignment = assign_folds(stimuli, config.folds, by=config.fold_by, seed=config.fold_seed)
    rows_usable = localizer.pooling != "tokens"
    permute = config.permutations > 0 and get_score(localizer.score).name in PERMUTABLE_SCORES and rows_usable
    confounds = (config.confounds or config.length_matched) and rows_usable
    localizer.fit_folds(lm, stimuli, assignment, settings=settings, rows=permute or confounds,
                        fractions=config.stability, checkpoint=checkpoint)
    result = Reliability(localizer, assignment)
    tables = result.tables
    tables["folds"] = assignment.frame(stimuli)
    tables["fold_sizes"] = assignment.sizes(stimuli)
    fits = fold_fits(localizer)
    tables["split_half"] = split_half(localizer, fits=fits)
    tables["held_out"] = held_out(localizer, stimuli, draws=config.random_sets, seed=config.seed, fits=fits)
    tables["stability"] = stability(localizer, stimuli, config.stability)
    rows = localizer.fold_stats_.rows
    if permute:
        null = permutation_null(localizer, rows, stimuli, n=config.permutations, seed=config.seed, alpha=config.alpha)
        tables["permutation"], tables["permutation_null"] = null.summary, null.null
    if confounds:
        counts = token_counts(lm.tokenizer, stimuli, settings=settings)
        labels = compared_labels(localizer)
        matched = None
        if config.length_matched:
            tables["length_matched"], matched = length_matched(localizer, rows, stimuli, counts,
                                                               assignment.positions())
        tables["token_counts"] = token_count_table(stimuli, counts, labels, matched)
        tables["folds"]["tokens"] = counts
        if config.confounds:
            tables["length_explained"] = length_explained(localizer, rows, stimuli, counts, alpha=config.alpha)
    if config.untrained:
        tables["untrained"], tables["untrained_layers"] = untrained_null(
            lm, stimuli, localizer, config.untrained, settings=settings, alpha=config.alpha,
            fits=result.untrained_fits)
    return result
