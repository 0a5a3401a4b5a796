"""Figures for brain alignment: the per-layer profile and the unit set against its random controls.

Both read an alignment `summary` table (features, kind, layer, score, sd_folds, ceiling, …), so they
can be redrawn from `summary.csv` without the model or the recordings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import NeurolocError
from .figures import BLACK, BLUE, GREEN, GREY, ORANGE, PURPLE, VERMILLION

SUMMARY_COLUMNS = ("features", "kind", "layer", "score", "sd_folds", "ceiling")
_CONFOUND_COLORS = (GREEN, PURPLE, ORANGE)


def _check(summary: pd.DataFrame, where: str) -> None:
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise NeurolocError(f"{where}: the summary table lacks columns {missing}")


def _reference_lines(ax, summary: pd.DataFrame) -> None:
    """Horizontal lines for the unit set, all units, the random mean and the confounds, plus the ceiling."""
    for kind, color, style in (("units", VERMILLION, "-"), ("all", BLACK, "--")):
        rows = summary[summary.kind == kind]
        if len(rows):
            ax.axhline(rows.score.iloc[0], color=color, linestyle=style, linewidth=1.6,
                       label=f"{'unit set' if kind == 'units' else 'all units'} ({int(rows.n_units.iloc[0]):,})")
    random = summary[summary.kind == "random"].score
    if len(random):
        low, high = np.percentile(random, [2.5, 97.5]) if len(random) > 1 else (random.iloc[0],) * 2
        ax.axhspan(low, high, color=BLUE, alpha=0.15, label=f"random sets, 95% range (n={len(random)})")
    for i, (_, row) in enumerate(summary[summary.kind == "confound"].iterrows()):
        ax.axhline(row.score, color=_CONFOUND_COLORS[i % len(_CONFOUND_COLORS)], linestyle=":", linewidth=1.4,
                   label=f"confound: {row.features}")
    ceiling = summary.ceiling.iloc[0] if len(summary) else np.nan
    if np.isfinite(ceiling):
        ax.axhline(ceiling, color=GREY, linestyle="-.", linewidth=1.4, label=f"ceiling ({ceiling:.3f})")


def plot_alignment_layers(summary: pd.DataFrame, title: str = "Brain alignment per layer") -> Figure:
    """Cross-validated score (median r over neuroids, mean ± sd over folds) of each whole layer, with
    the unit set, all units, random sets, confounds and the ceiling as references."""
    _check(summary, "plot_alignment_layers")
    layers = summary[summary.kind == "layer"].sort_values("layer")
    if layers.empty:
        raise NeurolocError("plot_alignment_layers: no per-layer scores (run with --layers all)")
    fig = Figure(figsize=(8.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(layers.layer, layers.score, yerr=layers.sd_folds, color=BLUE, marker="o", markersize=4,
                linewidth=1.8, capsize=2, label="whole layer")
    _reference_lines(ax, summary)
    ax.set_xlabel("Layer (index, input → output)")
    ax.set_ylabel("Pearson r (median over neuroids, mean over folds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_alignment_controls(summary: pd.DataFrame, title: str = "Unit set against matched random unit sets") -> Figure:
    """Each random set's score as a dot (the null distribution) beside the unit set, all units and the
    confound baselines, with the ceiling; the title gives the unit set's rank and p."""
    _check(summary, "plot_alignment_controls")
    target = summary[summary.kind == "units"]
    random = summary[summary.kind == "random"]
    if target.empty or random.empty:
        raise NeurolocError("plot_alignment_controls: needs a unit set and random controls (--controls ≥ 1)")
    others = summary[summary.kind.isin(["all", "confound"])]
    labels = ["unit set", "random sets"] + ["all units" if k == "all" else f for f, k in zip(others.features,
                                                                                            others.kind)]
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.4), layout="constrained")
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(random))
    ax.scatter(1 + jitter, random.score, color=BLUE, alpha=0.6, s=18, label="random set")
    ax.errorbar([0], target.score, yerr=target.sd_folds, color=VERMILLION, marker="D", markersize=8, capsize=3)
    confound = 0
    for i, (_, row) in enumerate(others.iterrows(), start=2):
        color = BLACK if row.kind == "all" else _CONFOUND_COLORS[confound % len(_CONFOUND_COLORS)]
        confound += row.kind == "confound"
        ax.errorbar([i], [row.score], yerr=[row.sd_folds], color=color, marker="s", markersize=6, capsize=3)
    ceiling = summary.ceiling.iloc[0]
    if np.isfinite(ceiling):
        ax.axhline(ceiling, color=GREY, linestyle="-.", linewidth=1.4, label=f"ceiling ({ceiling:.3f})")
        ax.legend(frameon=False, fontsize=8)
    ax.axhline(0, color=GREY, linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel("Pearson r (median over neuroids, mean over folds)")
    row = target.iloc[0]
    ax.set_title(f"{title}\n{int(row.n_units):,} units: r = {row.score:.3f}, rank {int(row['rank'])} of "
                 f"{len(random) + 1}, p = {row.p:.3g}")
    ax.grid(axis="y", alpha=0.3)
    return fig
