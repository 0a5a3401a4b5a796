"""Figures of the reliability analyses (`neuroloc.localize.reliability`), one function per figure.

Each reads one of `Reliability.tables` and returns a Figure (one panel per compared label);
`reliability_figures(tables)` makes every figure whose table is present, keyed by a file stem.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figures import BLUE, GREY, ORANGE, PALETTE, VERMILLION, _grid, _require

__all__ = ["plot_held_out", "plot_permutation_null", "plot_split_half", "plot_stability", "plot_token_counts",
           "plot_untrained_layers", "reliability_figures"]

_CHANCE = dict(color=GREY, alpha=0.3, linewidth=0)


def _labels(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["label"]))


def plot_split_half(split: pd.DataFrame) -> Figure:
    """Jaccard overlap of the units selected on two folds, per layer, against the chance band of random
    sets with the same per-layer counts (mean over fold pairs when there are several)."""
    _require(split, ["label", "site", "kind", "layer", "jaccard", "jaccard_chance", "jaccard_chance_low",
                     "jaccard_chance_high"], "plot_split_half")
    if split["fold_a"].isna().any():
        split = split[split["fold_a"].isna()]
    labels = _labels(split)
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels):
        rows = split[split["label"] == label]
        overall = rows[rows["site"] == "all"].iloc[0]
        for i, (kind, part) in enumerate(rows[rows["site"] != "all"].groupby("kind", sort=True)):
            part = part.sort_values("layer")
            color = PALETTE[i % len(PALETTE)]
            ax.fill_between(part["layer"], part["jaccard_chance_low"], part["jaccard_chance_high"], **_CHANCE)
            ax.plot(part["layer"], part["jaccard_chance"], color=GREY, linestyle="--", linewidth=1)
            ax.plot(part["layer"], part["jaccard"], color=color, marker="o", markersize=4, label=kind)
        ax.set_title(f"{label}: Jaccard {overall.jaccard:.2f} (chance {overall.jaccard_chance:.2f}, "
                     f"95% ≤ {overall.jaccard_chance_high:.2f})", fontsize=9)
        ax.set_xlabel("Layer")
        ax.set_ylabel("Split-half Jaccard of selected units")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.legend(frameon=False, title="grey: chance (mean, 95%)", title_fontsize=8)
    fig.suptitle("Split-half reliability: units selected on each fold")
    return fig


def plot_held_out(held: pd.DataFrame) -> Figure:
    """Cohen's d on the held-out fold of the units selected on the training folds, against random units
    with the same per-layer counts (mean and 95 % interval), per fold."""
    _require(held, ["label", "fold", "d", "d_random", "d_random_low", "d_random_high"], "plot_held_out")
    labels = _labels(held)
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels):
        rows = held[held["label"] == label]
        rows = pd.concat([rows[rows["fold"].notna()], rows[rows["fold"].isna()]])
        names = [f"fold {int(f)}" if pd.notna(f) else "mean" for f in rows["fold"]]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["d"], width=0.4, color=VERMILLION, label="selected units")
        err = np.vstack([rows["d_random"] - rows["d_random_low"], rows["d_random_high"] - rows["d_random"]])
        ax.bar(x + 0.2, rows["d_random"], width=0.4, color=BLUE, yerr=err, capsize=3, label="random units (95%)")
        ax.axhline(0, color=GREY, linewidth=0.8)
        ax.set_xticks(x, names)
        ax.set_ylabel("Held-out Cohen's d (mean over units)")
        ax.set_title(label)
        ax.legend(frameon=False)
    fig.suptitle("Held-out selectivity: selected on the other folds, measured on this one")
    return fig


def plot_stability(stability: pd.DataFrame) -> Figure:
    """Overlap with the full set of the set selected from a share of the stimuli (Jaccard and recall)."""
    _require(stability, ["label", "fraction", "jaccard", "recall"], "plot_stability")
    labels = _labels(stability)
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels):
        rows = stability[stability["label"] == label].sort_values("fraction")
        share = 100 * rows["fraction"]
        ax.plot(share, rows["jaccard"], color=VERMILLION, marker="o", label="Jaccard with the full set")
        ax.plot(share, rows["recall"], color=BLUE, marker="s", linestyle="--", label="share of the full set found")
        if "jaccard_chance" in rows:
            ax.plot(share, rows["jaccard_chance"], color=GREY, linestyle=":", label="chance Jaccard")
        ax.set_xlabel("Stimuli used (% of all)")
        ax.set_ylabel("Overlap with the set from all stimuli")
        ax.set_ylim(0, 1.05)
        ax.set_title(label)
        ax.legend(frameon=False)
    fig.suptitle("Stability: would more stimuli change the unit set?")
    return fig


def plot_permutation_null(null: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """The null distribution of the rule's statistic (count passing FDR, or the selection threshold)
    over label permutations, with the observed value."""
    _require(summary, ["label", "rule_statistic", "p"], "plot_permutation_null")
    labels = _labels(summary)
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels):
        row = summary[summary["label"] == label].iloc[0]
        statistic = row["rule_statistic"]
        values = null.loc[null["label"] == label, statistic].dropna().to_numpy(float)
        ax.hist(values, bins=min(40, max(5, len(np.unique(values)))), color=BLUE, alpha=0.8,
                label=f"{len(values)} permutations")
        ax.axvline(row[statistic], color=VERMILLION, linewidth=2, label=f"observed (p = {row['p']:.3g})")
        ax.set_xlabel({"threshold": "Selection threshold (lowest selected score)",
                       "n_selected": "Units passing the rule"}.get(statistic, statistic))
        ax.set_ylabel("Permutations")
        ax.set_title(label)
        ax.legend(frameon=False)
    fig.suptitle("Permutation null: labels shuffled, model not rerun")
    return fig


def plot_untrained_layers(layers: pd.DataFrame) -> Figure:
    """Selected units per layer in the trained model and in freshly initialised copies of it."""
    _require(layers, ["model", "label", "layer", "n_selected"], "plot_untrained_layers")
    labels = _labels(layers)
    fig, axes = _grid(len(labels))
    for ax, label in zip(axes, labels):
        rows = layers[layers["label"] == label].groupby(["model", "layer"], sort=True)["n_selected"].sum().reset_index()
        for i, model in enumerate(dict.fromkeys(rows["model"])):
            part = rows[rows["model"] == model]
            trained = model == "trained"
            ax.plot(part["layer"], part["n_selected"], color=VERMILLION if trained else PALETTE[i % len(PALETTE)],
                    linewidth=2.2 if trained else 1.2, linestyle="-" if trained else "--", marker="o", markersize=3,
                    label=model)
        ax.set_xlabel("Layer")
        ax.set_ylabel("Selected units")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.legend(frameon=False)
    fig.suptitle("What training adds: the same localizer in untrained copies of the architecture")
    return fig


def plot_token_counts(folds: pd.DataFrame) -> Figure:
    """Token counts per condition (the `folds` table with its tokens column)."""
    _require(folds, ["label", "tokens"], "plot_token_counts")
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    bins = np.arange(folds["tokens"].min(), folds["tokens"].max() + 2) - 0.5
    for i, label in enumerate(_labels(folds)):
        values = folds.loc[folds["label"] == label, "tokens"]
        ax.hist(values, bins=bins, alpha=0.55, color=(VERMILLION, BLUE, ORANGE)[i % 3] if i < 3 else PALETTE[i % 7],
                label=f"{label} (mean {values.mean():.1f})")
    ax.set_xlabel("Tokens per stimulus (without BOS)")
    ax.set_ylabel("Stimuli")
    ax.legend(frameon=False)
    ax.set_title("Stimulus confound: token counts per condition")
    return fig


def reliability_figures(tables: Mapping[str, pd.DataFrame]) -> dict[str, Figure]:
    """Every figure whose table is present, keyed by file stem (reliability_split_half, ...)."""
    figures = {}
    if "split_half" in tables:
        figures["reliability_split_half"] = plot_split_half(tables["split_half"])
    if "held_out" in tables and "d" in tables["held_out"]:
        figures["reliability_held_out"] = plot_held_out(tables["held_out"])
    if "stability" in tables:
        figures["reliability_stability"] = plot_stability(tables["stability"])
    if "permutation" in tables:
        figures["reliability_permutation"] = plot_permutation_null(tables["permutation_null"], tables["permutation"])
    if "untrained_layers" in tables:
        figures["reliability_untrained"] = plot_untrained_layers(tables["untrained_layers"])
    if "folds" in tables and "tokens" in tables["folds"]:
        figures["reliability_token_counts"] = plot_token_counts(tables["folds"])
    return figures
