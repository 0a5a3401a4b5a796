"""Figures of task-neuron studies: accuracy per label, the class × class effect matrix, dose–response
and the general-ability guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import NeurolocError
from .figures import BLUE, GREY, VERMILLION, plot_heatmap

__all__ = ["effect_table", "plot_accuracy", "plot_effect_matrix", "plot_task_dose_response", "plot_guard"]


def effect_table(effects: pd.DataFrame, mode: str, metric: str = "delta_accuracy") -> pd.DataFrame:
    """Intervened × evaluated: the target's change minus the mean change of its random controls."""
    rows = effects[effects["mode"] == mode]
    if rows.empty:
        raise NeurolocError(f"no effects for mode {mode!r}; modes: {sorted(effects['mode'].unique())}")
    target = rows[rows.condition == "target"].pivot_table(index="intervened", columns="evaluated", values=metric,
                                                         sort=False)
    random = rows[rows.condition == "random"].pivot_table(index="intervened", columns="evaluated", values=metric,
                                                         aggfunc="mean", sort=False)
    table = target - random.reindex_like(target) if not random.empty else target
    table.index.name, table.columns.name = "Intervened units", "Evaluated label"
    return table


def plot_effect_matrix(effects: pd.DataFrame, mode: str, metric: str = "delta_accuracy", title: str = "") -> Figure:
    what = "accuracy" if metric == "delta_accuracy" else "mean log p(answer)"
    return plot_heatmap(effect_table(effects, mode, metric), title or f"{mode}: change vs random units",
                        f"Δ {what}, target − random")


def plot_accuracy(intact: pd.DataFrame, title: str = "Intact model, held-out items") -> Figure:
    """Bar per label: accuracy (and exact-match rate when it differs)."""
    fig = Figure(figsize=(max(5.0, 0.8 * len(intact) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(intact))
    ax.bar(x, intact["accuracy"], color=BLUE)
    for i, (acc, n) in enumerate(zip(intact["accuracy"], intact["n_items"])):
        ax.text(i, acc + 0.01, f"{acc:.2f}\nn={n}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels=intact["label"], rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("Accuracy")
    ax.set_title(title)
    return fig


def plot_task_dose_response(dose: pd.DataFrame, metric: str = "delta_accuracy") -> Figure:
    """Change of the intervened label's own items (solid) and of the other labels' (dashed) against k,
    target units (vermillion) and random units (blue)."""
    if dose.empty:
        raise NeurolocError("no dose–response rows to plot")
    own = dose[dose.intervened == dose.evaluated]
    other = dose[dose.intervened != dose.evaluated]
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for frame, style, where in ((own, "-", "own label"), (other, "--", "other labels")):
        for condition, color in (("target", VERMILLION), ("random", BLUE)):
            part = frame[frame.condition == condition].groupby("k")[metric].mean()
            if len(part):
                ax.plot(part.index, part.values, style, marker="o", color=color, label=f"{condition}, {where}")
    ax.axhline(0, color=GREY, lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("Units intervened on per label (k)")
    ax.set_ylabel("Δ accuracy" if metric == "delta_accuracy" else "Δ mean log p(answer)")
    ax.set_title(f"Dose–response ({dose['mode'].iloc[0]}), mean over labels")
    ax.legend(fontsize=8)
    return fig


def _headline(rows: pd.DataFrame) -> pd.DataFrame:
    """A benchmark's headline rows: perplexity's perplexity, the `overall` subset where there is one, else its
    first (subset, metric)."""
    if (rows.metric == "perplexity").any():
        return rows[rows.metric == "perplexity"]
    if (rows.subset == "overall").any():
        return rows[rows.subset == "overall"]
    first = rows.iloc[0]
    return rows[(rows.subset == first.subset) & (rows.metric == first.metric)]


def plot_guard(guard: pd.DataFrame) -> Figure:
    """Per benchmark's headline metric (perplexity, BLiMP overall, any registered benchmark's first): intact,
    each label's target and random units."""
    keep = pd.concat([_headline(rows) for _, rows in guard.groupby("benchmark", sort=False)]) if len(guard) else guard
    if keep.empty:
        raise NeurolocError("no guard rows to plot")
    panels = list(keep.groupby(["benchmark", "mode"], sort=False))
    panels = [p for p in panels if p[0][1] != "none"]
    fig = Figure(figsize=(4.5 * max(len(panels), 1), 3.8), layout="constrained")
    for i, ((benchmark, mode), rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        intact = keep[(keep.benchmark == benchmark) & (keep.condition == "intact")]["value"].mean()
        labels = list(dict.fromkeys(rows.intervened))
        x = np.arange(len(labels))
        for offset, condition, color in ((-0.2, "target", VERMILLION), (0.2, "random", BLUE)):
            values = rows[rows.condition == condition].groupby("intervened")["value"].mean().reindex(labels)
            ax.bar(x + offset, values, width=0.4, color=color, label=condition)
        ax.axhline(intact, color=GREY, lw=1, label="intact")
        ax.set_xticks(x, labels=labels, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_title(f"{benchmark} under {mode}")
        ax.legend(fontsize=7)
    return fig
