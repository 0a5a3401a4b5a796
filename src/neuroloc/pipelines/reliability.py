"""Is this unit set real? The reliability outputs every study that makes a unit set shares.

A study that localizes with a `ReliabilityConfig` (`--folds`, `--permutations`, `--null`, ...) runs
`neuroloc.localize.reliability.assess` (one recording pass with statistics per fold; no model run again
except in untrained copies) and hands the `Reliability` to the functions here, which write its tables
(`reliability.csv`, `folds.csv`, `reliability_<table>.csv`), its figures, the units chosen on each fold
alone (`folds/fold-K/`, a localizer output: `neuroloc lesion --fold K`, `neuroloc align --fold K`), the
report section "Is this unit set real?" and the manifest's summary numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InstanceOf, param
from ..localize.reliability import Reliability, ReliabilityConfig, fold_fits
from ..report.figures import save_figure
from ..report.html import Section
from ..report.reliability_figures import reliability_figures

__all__ = ["FOLDS_FOLDER", "fold_folder", "reliability_field", "reliability_line",
           "reliability_section", "reliability_summary", "write_reliability"]

FOLDS_FOLDER = "folds"


def reliability_field(what: str = "the stimuli") -> Any:
    """The optional nested `ReliabilityConfig` of a study (`param(nested=...)`): its fields are flags of the
    study's command (`--folds`, `--fold-by`, `--permutations`, `--null`, `--length-matched`, ...); giving any
    of them turns the analyses on; the study's `--seed` seeds them."""
    return param(None, InstanceOf(ReliabilityConfig), None, nested=ReliabilityConfig, cli=False,
                 help=f"Reliability analyses over folds of {what} (split-half overlap, held-out effect, stability, "
                      "permutation and untrained-model nulls, token-count confounds); on when any of their "
                      "flags is given.")


def fold_folder(folder: str | Path, fold: int) -> Path:
    """Where a localize output keeps the units chosen on fold `fold` alone."""
    return Path(folder) / FOLDS_FOLDER / f"fold-{fold}"


def _number(value: Any) -> Any:
    """A JSON-friendly number (NaN → None)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    return value


def reliability_summary(found: Reliability) -> dict[str, dict[str, Any]]:
    """The summary numbers per compared label (the manifest's `results.reliability`)."""
    summary = found.summary
    return {str(row["label"]): {k: _number(v) for k, v in row.items() if k != "label"}
            for row in summary.to_dict("records")}


def reliability_line(row: dict[str, Any]) -> str:
    """One short line for a unit set's reliability column: split-half Jaccard vs chance, held-out d vs
    random units, permutation p."""
    parts = []
    if row.get("split_half_jaccard") is not None:
        parts.append(f"split-half J {row['split_half_jaccard']:.2f} (chance {row['split_half_jaccard_chance']:.2f})")
    if row.get("held_out_d") is not None:
        parts.append(f"held-out d {row['held_out_d']:.2f} (random {row.get('held_out_d_random') or float('nan'):.2f})")
    if row.get("permutation_p") is not None:
        parts.append(f"permutation p {row['permutation_p']:.3g}")
    return "; ".join(parts) or "n/a"


def write_reliability(found: Reliability, folder: Path, figures: dict | None = None) -> None:
    """Tables, figures and the units chosen on each fold alone (`folds/fold-K/`)."""
    found.save(folder)
    for name, figure in (figures if figures is not None else reliability_figures(found.tables)).items():
        save_figure(figure, folder / f"{name}.png")
    conditions = found.tables["folds"]
    for k, fit in enumerate(fold_fits(found.localizer)):
        fit.stimuli_ = {**found.localizer.stimuli_, "fold": k, "n": int((conditions.fold == k).sum())}
        target = fold_folder(folder, k)
        target.mkdir(parents=True, exist_ok=True)
        fit.save(target)


def _interpretation(row: dict[str, Any]) -> str:
    """What the numbers say, in words, for one label."""
    said = []
    j, high = row.get("split_half_jaccard"), row.get("split_half_jaccard_chance_high")
    if j is not None and high is not None:
        said.append("the two halves of the stimuli choose overlapping units well above chance" if j > high
                    else "the halves' overlap is within chance: another set of stimuli would choose other units")
    d, d_high = row.get("held_out_d"), row.get("held_out_d_random")
    if d is not None and d_high is not None:
        said.append("units chosen on one fold stay selective on the other" if d > d_high
                    else "held-out selectivity is no larger than random units'")
    p = row.get("permutation_p")
    if p is not None:
        said.append(f"shuffled labels give as extreme a selection in {p:.2%} of permutations")
    fresh = row.get("untrained_n_significant")
    if fresh is not None and row.get("n_fdr") is not None:
        said.append(f"an untrained copy has {fresh:.0f} FDR-significant units (trained: {row['n_fdr']:.0f}), "
                    f"Jaccard {row.get('untrained_jaccard') or 0:.3f} with the trained set")
    return "; ".join(said)


def reliability_section(found: Reliability, what: str = "unit set", figures: dict | None = None) -> Section:
    """The report section "Is this unit set real?": the numbers per label, what they say, the figures."""
    summary = found.summary
    config_k = found.assignment.k
    by = found.assignment.by
    lines = [f"{len(found.assignment)} stimuli in {config_k} folds by {by} (folds.csv); units chosen with the "
             f"same rule on each fold (folds/fold-K/)."]
    for row in summary.to_dict("records"):
        row = {k: _number(v) for k, v in row.items()}
        lines.append(f"{row['label']}: {reliability_line(row)} — {_interpretation(row)}.")
    shown = [c for c in ("label", "n_units", "split_half_jaccard", "split_half_jaccard_chance",
                         "split_half_jaccard_chance_high", "split_half_r_spearman_brown", "held_out_d",
                         "held_out_d_random", "permutation_p", "n_fdr", "n_fdr_null_mean",
                         "share_explained_by_length", "length_matched_jaccard", "untrained_n_significant",
                         "untrained_jaccard") if c in summary]
    figures = figures if figures is not None else reliability_figures(found.tables)
    return Section(f"Is this {what} real?", text="\n".join(lines), figures=list(figures.values()),
                   tables=[summary[shown].round(4)],
                   caption="Split-half: Jaccard overlap of the units chosen on two folds against the chance "
                           "overlap of random sets with the same per-site counts (mean and 95% upper bound). "
                           "Held-out: Cohen's d on a fold of the units chosen on the others, against random "
                           "units. Permutation p: labels shuffled, the rule's statistic recomputed. See "
                           "reliability_*.csv for every table.")

