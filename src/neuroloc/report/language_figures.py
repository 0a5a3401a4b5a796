"""Figures of the multilingual-neuron study: units per layer per language (the papers' headline figure)
and language × language matrices (overlap, deactivation, steering)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figures import PALETTE, _grid, _outside_legend, _require, plot_heatmap

__all__ = ["deactivation_matrix_frame", "plot_language_layers", "plot_language_matrix", "steering_matrix_frame"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


def _colors(n: int) -> list:
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    return [colormaps["tab20"](i % 20) for i in range(n)]


def plot_language_layers(distribution: pd.DataFrame, title: str = "Language units per layer") -> Figure:
    """One panel per category present (specific, related, agnostic), one line per language: units
    selected in each layer. `distribution` is `studies.languages.per_layer_distribution`'s table."""
    _require(distribution, ("language", "category", "layer", "n_selected"), "plot_language_layers")
    categories = [c for c in ("specific", "related", "agnostic")
                  if distribution[distribution.category == c].n_selected.sum() > 0] or ["specific"]
    languages = list(dict.fromkeys(distribution.language))
    fig, axes = _grid(len(categories))
    colors = _colors(len(languages))
    handles = []
    for ax, category in zip(axes, categories):
        part = distribution[distribution.category == category]
        for i, lang in enumerate(languages):
            rows = part[part.language == lang].groupby("layer").n_selected.sum().sort_index()
            line, = ax.plot(rows.index, rows.to_numpy(), color=colors[i], marker=_MARKERS[i % len(_MARKERS)],
                            markersize=3.5, linewidth=1.3, label=lang)
            if ax is axes[0]:
                handles.append(line)
        ax.set_title(f"language-{category} units")
        ax.set_xlabel("Layer")
        ax.set_ylabel("Units")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _outside_legend(fig, handles, languages)
    return fig


def plot_language_matrix(matrix: pd.DataFrame, title: str, cbar_label: str, fmt: str | None = None) -> Figure:
    """A K × K language matrix (row/column names label the axes), annotated, centred at 0."""
    return plot_heatmap(matrix, title, cbar_label, fmt=fmt)


def deactivation_matrix_frame(matrix: pd.DataFrame, condition: str = "target") -> pd.DataFrame:
    """deactivated × evaluated mean NLL change of one condition (random: mean over seeds)."""
    _require(matrix, ("deactivated", "evaluated", "condition", "nll_change"), "deactivation_matrix_frame")
    part = matrix[matrix.condition == condition]
    table = part.pivot_table(index="deactivated", columns="evaluated", values="nll_change", aggfunc="mean", sort=False)
    order = list(dict.fromkeys(matrix.evaluated))
    table = table.reindex(index=[lang for lang in order if lang in table.index], columns=order)
    table.index.name, table.columns.name = "deactivated language", "evaluated language"
    return table


def steering_matrix_frame(results: pd.DataFrame, condition: str = "target", *, minus: str | None = "none") -> pd.DataFrame:
    """source × target share of generated text in the target language under `condition`, minus the
    share under `minus` (the intact model by default; None for the raw share)."""
    _require(results, ("source", "target", "condition", "share_target"), "steering_matrix_frame")

    def table(name: str) -> pd.DataFrame:
        part = results[results.condition == name]
        return part.pivot_table(index="source", columns="target", values="share_target", aggfunc="mean", sort=False)

    value = table(condition)
    if minus is not None:
        value = value - table(minus).reindex_like(value)
    languages = list(dict.fromkeys(list(results.source) + list(results.target)))
    value = value.reindex(index=[s for s in languages if s in value.index],
                          columns=[t for t in languages if t in value.columns]).astype(float)
    value.index.name, value.columns.name = "prompt language", "enhanced language"
    return value.where(~value.isna(), np.nan)
