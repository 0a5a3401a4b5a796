"""Figures for localizer, lesion and probe results: one function per figure, each returning a Figure.

Figures are built on `matplotlib.figure.Figure` directly (Agg rendering, no pyplot state), so they never
need a display and never pile up in a global figure list. Colours follow the Okabe-Ito palette, which
stays distinguishable under the common colour-vision deficiencies; lines also differ by marker/style.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from ..errors import NeurolocError
from ..io import atomic_write_with

DPI = 150

# Okabe & Ito (2008), "Color Universal Design".
BLUE, VERMILLION, GREEN, ORANGE = "#0072B2", "#D55E00", "#009E73", "#E69F00"
PURPLE, SKY_BLUE, BLACK, GREY = "#CC79A7", "#56B4E9", "#000000", "#8C8C8C"
PALETTE = (BLUE, ORANGE, GREEN, PURPLE, SKY_BLUE, VERMILLION, BLACK)

SITE_STYLES = {"residual": (BLUE, "o", "-"), "mlp": (VERMILLION, "s", "--"), "attn": (GREEN, "^", ":")}
CONDITION_ORDER = ("intact", "target", "random", "magnitude")
CONDITION_COLORS = {"intact": GREY, "target": VERMILLION, "random": BLUE, "magnitude": GREEN}
_EXTRA_COLORS = (PURPLE, ORANGE, SKY_BLUE, BLACK)

LAYER_COLUMNS = ("site", "layer", "n_units", "n_selected")
LESION_COLUMNS = ("condition", "seed", "percent", "benchmark", "subset", "metric", "value")
PROBE_COLUMNS = ("neuron_set", "seed", "n_units", "split", "accuracy", "macro_f1", "selectivity")

_PANEL_SIZE = (4.6, 3.9)
_MIN_WIDTH = 7.5
_MAX_COLUMNS = 3
_MAX_ANNOTATED_CELLS = 30


# --------------------------------------------------------------------------------------------- helpers
def _require(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Fail early, naming the missing columns, instead of with a KeyError deep inside matplotlib."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise NeurolocError(f"{where}: missing column(s) {missing}; the frame has {list(df.columns)}")
    if df.empty:
        raise NeurolocError(f"{where}: the frame has no rows to plot")


def _grid(n_panels: int) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with exactly `n_panels` axes, wrapped at three per row."""
    ncols = min(n_panels, _MAX_COLUMNS)
    nrows = -(-n_panels // ncols)
    width = max(_PANEL_SIZE[0] * ncols, _MIN_WIDTH)  # room for the suptitle and legend
    fig = Figure(figsize=(width, _PANEL_SIZE[1] * nrows + 0.6), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for extra in axes[n_panels:]:
        extra.remove()
    return fig, axes[:n_panels]


def _condition_order(conditions: Iterable[str]) -> list[str]:
    """Intact, target, random, magnitude first (as readers expect), then any others alphabetically."""
    present = set(conditions)
    return [c for c in CONDITION_ORDER if c in present] + sorted(present.difference(CONDITION_ORDER))


def _condition_colors(conditions: Iterable[str]) -> dict[str, str]:
    """Fixed colours for the known conditions; the rest take the remaining palette in order."""
    colors, extra = {}, 0
    for condition in _condition_order(conditions):
        if condition in CONDITION_COLORS:
            colors[condition] = CONDITION_COLORS[condition]
        else:
            colors[condition] = _EXTRA_COLORS[extra % len(_EXTRA_COLORS)]
            extra += 1
    return colors


def _metric_label(metric: str, log: bool = False) -> str:
    """Axis label with the unit spelled out for the metrics we know, and the scale when it is log."""
    known = {
        "accuracy": "Accuracy (fraction correct)",
        "macro_f1": "Macro F1 (0–1)",
        "selectivity": "Selectivity (task − control accuracy)",
        "perplexity": "Perplexity (per token)",
        "ppl": "Perplexity (per token)",
    }
    label = known.get(metric.lower(), metric.replace("_", " "))
    return f"{label}, log scale" if log else label


def _log_metric(metric: str, values: np.ndarray) -> bool:
    """Perplexity that spans an order of magnitude (lesions can make it explode) reads best on a log axis."""
    name = metric.lower()
    if not ("perplex" in name or name == "ppl") or not np.all(values > 0):
        return False
    return bool(values.max() / values.min() >= 10)


def _per_seed(rows: pd.DataFrame) -> np.ndarray:
    """One value per seed (rows repeated for a seed, e.g. the intact model at every dose, count once)."""
    return rows.groupby("seed", dropna=False)["value"].mean().to_numpy(float)


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample sd (NaN for a single value, so no misleading zero-width error bar is drawn)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _one_subset(results: pd.DataFrame, where: str) -> pd.DataFrame:
    """Keep the 'overall' rows of each benchmark (or its only subset): averaging subsets would be wrong."""
    parts = []
    for benchmark, rows in results.groupby("benchmark", sort=False):
        subsets = list(pd.unique(rows["subset"].dropna()))
        if "overall" in subsets:
            parts.append(rows[rows["subset"] == "overall"])
        elif len(subsets) <= 1:
            parts.append(rows)
        else:
            raise NeurolocError(
                f"{where}: benchmark {benchmark!r} has subsets {sorted(map(str, subsets))} but no 'overall' "
                "rows; add an 'overall' row per condition and seed, or filter the results to one subset"
            )
    return pd.concat(parts)


def _panels(data: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """One panel per (benchmark, metric), in the order they first appear."""
    return [(key, rows) for key, rows in data.groupby(["benchmark", "metric"], sort=False)]


def _lesion_frame(results: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validated lesion rows with a value, one subset per benchmark, numeric percent and value."""
    _require(results, LESION_COLUMNS, where)
    data = _one_subset(results.dropna(subset=["value"]), where)
    if data.empty:
        raise NeurolocError(f"{where}: every 'value' is missing")
    return data.assign(percent=pd.to_numeric(data["percent"]), value=data["value"].astype(float))


def _panel_title(benchmark: object, subset: object) -> str:
    """The benchmark name, plus the subset when it is not the benchmark's 'overall' score."""
    return str(benchmark) if pd.isna(subset) or subset == "overall" else f"{benchmark} ({subset})"


def _seed_label(n_seeds: int) -> str:
    return f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _outside_legend(fig: Figure, handles: Sequence, labels: Sequence[str]) -> None:
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), frameon=False)


# ------------------------------------------------------------------------------------------- figures
def plot_layer_distribution(df: pd.DataFrame, title: str = "Selected units per layer", *,
                            group: str = "site") -> Figure:
    """Percentage of units selected in each layer, one line per site, so depth profiles compare at a glance.

    `df` has columns site, layer, n_units, n_selected (one row per site and layer). With `group`
    another column draws the lines (e.g. "class" for one key-neuron set per POS class); the headline
    then counts the units of the union's sites once.
    """
    _require(df, [group, *LAYER_COLUMNS[1:]], "plot_layer_distribution")
    if group != "site":
        df = df.drop(columns=["site"], errors="ignore").rename(columns={group: "site"})
    counts = df.groupby(["site", "layer"], sort=True)[["n_units", "n_selected"]].sum().reset_index()
    if (counts["n_units"] <= 0).any():
        bad = counts.loc[counts["n_units"] <= 0, ["site", "layer"]].to_records(index=False).tolist()
        raise NeurolocError(f"plot_layer_distribution: n_units must be positive; (site, layer) at fault: {bad}")
    counts["percent"] = 100.0 * counts["n_selected"] / counts["n_units"]
    total, selected = int(counts["n_units"].sum()), int(counts["n_selected"].sum())

    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    known = [s for s in SITE_STYLES if s in set(counts["site"])]
    sites = known + sorted(set(counts["site"]).difference(SITE_STYLES))
    for i, site in enumerate(sites):
        rows = counts[counts["site"] == site]
        color, marker, style = SITE_STYLES.get(site, (_EXTRA_COLORS[i % len(_EXTRA_COLORS)], "D", "-."))
        label = f"{site} ({int(rows['n_selected'].sum()):,} of {int(rows['n_units'].sum()):,})"
        ax.plot(rows["layer"], rows["percent"], color=color, marker=marker, linestyle=style, linewidth=1.8,
                markersize=5, label=label)
    if group == "site":
        ax.set_title(f"{title}\n{selected:,} of {total:,} units selected ({100.0 * selected / total:.2f}%)")
    else:
        ax.set_title(title)
    ax.set_xlabel("Layer (index, input → output)")
    ax.set_ylabel("Units selected (% of the site's units in the layer)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title=f"{group.capitalize()} (selected of units)", frameon=False)
    return fig


def plot_lesion(results: pd.DataFrame, percent: float | None = None) -> Figure:
    """Benchmark scores after lesioning the target units vs. matched controls, one panel per benchmark.

    `results` has columns condition, seed, percent, benchmark, subset, metric, value. Bars show the mean
    over seeds with ± sd whiskers and one dot per seed; a dashed line marks the intact model. When the
    lesioned rows hold several `percent` values, pass `percent` (or use `plot_dose_response`).
    """
    data = _lesion_frame(results, "plot_lesion")
    lesioned = data["condition"] != "intact"
    available = sorted(data.loc[lesioned, "percent"].dropna().unique())
    if percent is None and len(available) > 1:
        raise NeurolocError(
            f"plot_lesion: the results hold several lesion sizes {available} (percent); pass percent=... "
            "to pick one, or draw them all with plot_dose_response"
        )
    if percent is not None:
        data = data[~lesioned | np.isclose(data["percent"], percent)]
        if (data["condition"] == "intact").all():
            raise NeurolocError(f"plot_lesion: no lesioned rows at percent={percent}; available: {available}")
        available = [percent]

    colors = _condition_colors(data["condition"])
    panels = _panels(data)
    fig, axes = _grid(len(panels))
    multi_seed = False
    for ax, ((benchmark, metric), rows) in zip(axes, panels):
        conditions = _condition_order(rows["condition"])
        values = [_per_seed(rows[rows["condition"] == c]) for c in conditions]
        log = _log_metric(str(metric), np.concatenate(values))
        base = 1.0 if log else 0.0  # perplexity's floor: bars grow from it on a log axis
        for i, (condition, vals) in enumerate(zip(conditions, values)):
            mean, sd = _mean_sd(vals)
            ax.bar(i, mean - base, bottom=base, width=0.65, color=colors[condition], edgecolor=BLACK,
                   linewidth=0.6, yerr=None if np.isnan(sd) else sd, capsize=4, error_kw={"linewidth": 1.0})
            if len(vals) > 1:
                multi_seed = True
                ax.scatter(i + np.linspace(-0.16, 0.16, len(vals)), vals, s=16, facecolor="white",
                           edgecolor=BLACK, linewidth=0.8, zorder=3)
            top = mean if np.isnan(sd) else max(mean + sd, vals.max())
            ax.annotate(f"{mean:.3g}", (i, top), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8)
        if "intact" in conditions:
            ax.axhline(values[conditions.index("intact")].mean(), color=BLACK, linestyle="--", linewidth=0.9,
                       zorder=0)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(range(len(conditions)),
                      labels=[c if len(v) == 1 else f"{c}\n{_seed_label(len(v))}" for c, v in zip(conditions, values)])
        ax.set_xlabel("Lesion condition")
        ax.set_ylabel(_metric_label(str(metric), log))
        ax.set_title(_panel_title(benchmark, rows["subset"].iloc[0]))
        ax.margins(y=0.12)
        ax.grid(axis="y", alpha=0.3)
    size = f"{available[0]:g}% of units" if available else "selected units"
    fig.suptitle(f"Effect of lesioning {size}: target units vs. matched controls")
    handles, labels = [], []
    if (data["condition"] == "intact").any():
        handles.append(Line2D([], [], color=BLACK, linestyle="--", linewidth=0.9))
        labels.append("intact model")
    if multi_seed:
        handles += [Line2D([], [], color=BLACK, marker="_", markersize=10, linestyle="-", linewidth=1.0),
                    Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor=BLACK)]
        labels += ["bar: mean, whisker: ± 1 sd over seeds", "one seed"]
    if handles:
        _outside_legend(fig, handles, labels)
    return fig


def plot_dose_response(results: pd.DataFrame) -> Figure:
    """Benchmark score against the percentage of units lesioned (log2 axis), one panel per benchmark.

    Target and each control kind are lines (mean over seeds, shaded ± sd where there are several seeds);
    the intact model is a dashed horizontal line. Lesioned rows need `percent` > 0.
    """
    data = _lesion_frame(results, "plot_dose_response")
    lesioned = data[(data["condition"] != "intact") & (data["percent"] > 0)]
    if lesioned.empty:
        raise NeurolocError("plot_dose_response: no lesioned rows with percent > 0 to plot")
    colors = _condition_colors(lesioned["condition"])
    seeds = lesioned.groupby("condition")["seed"].nunique()
    panels = _panels(data)
    fig, axes = _grid(len(panels))
    legend: dict[str, object] = {}
    for ax, ((benchmark, metric), rows) in zip(axes, panels):
        doses = rows[(rows["condition"] != "intact") & (rows["percent"] > 0)]
        for condition in _condition_order(doses["condition"]):
            stats = doses[doses["condition"] == condition].groupby("percent")["value"].agg(["mean", "std"])
            is_target = condition == "target"
            label = condition if seeds[condition] <= 1 else f"{condition} (mean ± sd, {_seed_label(seeds[condition])})"
            (line,) = ax.plot(stats.index, stats["mean"], color=colors[condition], marker="o" if is_target else "s",
                              linewidth=2.4 if is_target else 1.6, markersize=5, zorder=3 if is_target else 2)
            legend.setdefault(label, line)
            if stats["std"].notna().any():
                sd = stats["std"].fillna(0.0)
                ax.fill_between(stats.index, stats["mean"] - sd, stats["mean"] + sd, color=colors[condition],
                                alpha=0.2, linewidth=0)
        intact = rows[rows["condition"] == "intact"]
        if not intact.empty:
            legend.setdefault("intact model", ax.axhline(_per_seed(intact).mean(), color=BLACK, linestyle="--",
                                                         linewidth=1.2))
        log = _log_metric(str(metric), rows["value"].to_numpy(float))
        if log:
            ax.set_yscale("log")
        ticks = sorted(doses["percent"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 6 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("Units lesioned (% of units, log₂ scale)")
        ax.set_ylabel(_metric_label(str(metric), log))
        ax.set_title(_panel_title(benchmark, rows["subset"].iloc[0]))
        ax.grid(alpha=0.3)
    fig.suptitle("Dose response: score vs. share of units lesioned")
    _outside_legend(fig, list(legend.values()), list(legend))
    return fig


def plot_probe(df: pd.DataFrame, metric: str = "accuracy") -> Figure:
    """Probe scores as grouped bars (neuron set × split), mean ± sd over seeds with one dot per seed.

    `df` has columns neuron_set, seed, n_units, split, accuracy, macro_f1, selectivity; `metric` picks
    which score the bars show.
    """
    _require(df, PROBE_COLUMNS, "plot_probe")
    if metric not in ("accuracy", "macro_f1", "selectivity"):
        raise NeurolocError(f"plot_probe: metric must be 'accuracy', 'macro_f1' or 'selectivity', not {metric!r}")
    data = df.dropna(subset=[metric])
    if data.empty:
        raise NeurolocError(f"plot_probe: every {metric!r} value is missing")
    sets, splits = list(pd.unique(data["neuron_set"])), list(pd.unique(data["split"]))
    fig = Figure(figsize=(max(6.0, 1.1 + 0.75 * len(sets) * len(splits)), 4.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        color, labelled = PALETTE[j % len(PALETTE)], False
        for i, neuron_set in enumerate(sets):
            vals = data.loc[(data["neuron_set"] == neuron_set) & (data["split"] == split), metric].to_numpy(float)
            if not len(vals):
                continue
            x = i - 0.4 + width * (j + 0.5)
            mean, sd = _mean_sd(vals)
            ax.bar(x, mean, width * 0.9, color=color, edgecolor=BLACK, linewidth=0.6,
                   yerr=None if np.isnan(sd) else sd, capsize=3, label=None if labelled else str(split))
            labelled = True
            if len(vals) > 1:
                ax.scatter(x + np.linspace(-width / 4, width / 4, len(vals)), vals, s=12, facecolor="white",
                           edgecolor=BLACK, linewidth=0.7, zorder=3)
    labels = []
    for neuron_set in sets:
        n = data.loc[data["neuron_set"] == neuron_set, "n_units"]
        count = f"{int(n.min()):,}" if n.min() == n.max() else f"{int(n.min()):,}–{int(n.max()):,}"
        labels.append(f"{neuron_set}\n({count} units)")
    ax.set_xticks(range(len(sets)), labels=labels)
    if metric == "selectivity":
        ax.axhline(0, color=BLACK, linewidth=0.8)
    elif data[metric].max() <= 1:
        ax.set_ylim(0, 1.05)
    n_seeds = data["seed"].nunique()
    ax.set_title(f"Probe {metric.replace('_', ' ')} by neuron set\nbars: mean ± sd over {_seed_label(n_seeds)}, "
                 "dots: single seeds")
    ax.set_xlabel("Neuron set (units used as probe features)")
    ax.set_ylabel(_metric_label(metric))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="Split", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_heatmap(matrix_df: pd.DataFrame, title: str, cbar_label: str, fmt: str | None = None) -> Figure:
    """A class × class matrix with annotated cells on a diverging colormap centred at 0.

    Row and column labels come from the frame's index and columns (their `.name` labels the axes).
    `fmt` is a format spec for the cell text; by default integers print whole and others with 2 decimals.
    Matrices wider than 30 classes are drawn without cell text, which would be unreadable.
    """
    try:
        values = matrix_df.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise NeurolocError(f"plot_heatmap: {title!r} must hold numbers only ({exc})") from None
    if values.size == 0:
        raise NeurolocError(f"plot_heatmap: {title!r} is an empty matrix")
    nrows, ncols = values.shape
    finite = values[np.isfinite(values)]
    limit = float(np.abs(finite).max()) if finite.size else 1.0
    limit = limit or 1.0
    if fmt is None:
        fmt = ".0f" if finite.size and np.all(finite == np.round(finite)) else (".2f" if limit < 100 else ".0f")

    fig = Figure(figsize=(min(max(5.0, 0.6 * ncols + 2.8), 18.0), min(max(4.0, 0.5 * nrows + 2.2), 18.0)),
                 layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad="#D9D9D9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.9)
    columns = [str(c) for c in matrix_df.columns]
    if max(map(len, columns)) > 4 or ncols > 10:  # long labels would overlap side by side
        ax.set_xticks(range(ncols), labels=columns, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(ncols), labels=columns)
    ax.set_yticks(range(nrows), labels=[str(r) for r in matrix_df.index])
    ax.set_xlabel(str(matrix_df.columns.name or "Class"))
    ax.set_ylabel(str(matrix_df.index.name or "Class"))
    ax.set_title(title)
    if max(nrows, ncols) <= _MAX_ANNOTATED_CELLS:
        size = max(6.0, min(10.0, 160.0 / max(nrows, ncols)))
        for (r, c), value in np.ndenumerate(values):
            text = "n/a" if np.isnan(value) else format(value, fmt)
            dark = np.isfinite(value) and abs(value) > 0.6 * limit
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color="white" if dark else BLACK)
    return fig


# -------------------------------------------------------------------------------------------- output
def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (for embedding in the HTML report); the figure stays open."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG at 150 dpi atomically (no half file on failure), then close it."""
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        if fig.canvas.manager is not None:  # made through pyplot: drop it from pyplot's figure list
            import matplotlib.pyplot as plt

            plt.close(fig)
    return Path(path)
