"""The atlas's figures: the network overlap heat map and the dissociation heat map with significance marks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import plot_heatmap

__all__ = ["plot_dissociation", "plot_overlap"]


def _mark(fig: Figure, marks: np.ndarray, symbol: str = "*") -> None:
    """Put `symbol` at the upper right of every marked cell of the figure's heat map."""
    ax = fig.axes[0]
    for (r, c), marked in np.ndenumerate(marks):
        if marked:
            ax.text(c + 0.4, r - 0.3, symbol, ha="right", va="top", fontsize=12, fontweight="bold", color="black")


def plot_overlap(overlap: pd.DataFrame, networks: Sequence[str], alpha: float = 0.05) -> Figure:
    """Network × network Jaccard overlap (diagonal 1; blank: a pair on different sites, not compared); *
    marks pairs sharing more units than layer-matched random sets of the same sizes would (p_overlap < alpha)."""
    eye = np.eye(len(networks))
    jaccard = pd.DataFrame(np.where(eye == 1, 1.0, np.nan), index=list(networks), columns=list(networks))
    marks = np.zeros(jaccard.shape, dtype=bool)
    where = {n: i for i, n in enumerate(networks)}
    for row in overlap.itertuples():
        i, j = where[row.network_a], where[row.network_b]
        jaccard.iloc[i, j] = jaccard.iloc[j, i] = row.jaccard
        marks[i, j] = marks[j, i] = row.p_overlap < alpha
    jaccard.index.name = jaccard.columns.name = "Network"
    fig = plot_heatmap(jaccard, f"Unit overlap (Jaccard); * above chance, p < {alpha:g}", "Jaccard", fmt=".3f")
    _mark(fig, marks)
    return fig


def plot_dissociation(cells: pd.DataFrame, networks: Sequence[str], benchmarks: Sequence[str], kind: str) -> Figure:
    """Lesioned network × benchmark damage in control sds (z against `kind` controls; > 0: hurt more than
    the controls); * marks significant cells (FDR, every control kind); benchmarks at which the intact model
    is at chance are greyed out ("n/a") and labelled so, not coloured."""
    z = cells.pivot(index="network", columns="benchmark", values=f"z_{kind}").loc[list(networks), list(benchmarks)]
    marks = cells.pivot(index="network", columns="benchmark", values="significant").loc[
        list(networks), list(benchmarks)].to_numpy(dtype=bool)
    chance = cells.groupby("benchmark").intact_chance.first()
    z = z.astype(float)
    for benchmark in benchmarks:
        if chance[benchmark]:
            z[benchmark] = np.nan
    z.columns = [f"{b} (at chance)" if chance[b] else b for b in benchmarks]
    z.index.name, z.columns.name = "Lesioned network", "Benchmark"
    fig = plot_heatmap(z, f"Damage in {kind}-control sds; * significant (FDR)", f"z vs {kind} controls")
    _mark(fig, marks)
    return fig
