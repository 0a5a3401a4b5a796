"""The atlas's statistics: how networks overlap, and which lesion hurts which benchmark beyond its controls.

No model runs here; everything reads unit sets and lesion result rows:

- `network_overlap`: every pair of networks' shared units, Jaccard and Dice against the exact chance overlap
  of random sets with the same per-site counts (`localize.overlap.compare_sets`: a sum of per-site
  hypergeometrics, so the p-value needs no simulation);
- `benchmark_columns`: the matrix's columns — a benchmark, or one `NAME/SUBSET` column per language of
  `multilingual_perplexity` and per relation of `relations` (`PER_SUBSET`);
- `dissociation_cells`: for every lesioned network × benchmark column, the target lesion's damage in units of the
  control distribution's sd, per control kind: z = s · (control mean − target) / control sd, with s = +1
  where higher is better (accuracy, mean log-probability) and −1 where lower is (perplexity), so z > 0 means
  the target lesion hurt more than its controls. Its one-sided p-value is Crawford & Howell's (1998) test of a
  single case against a small control sample, t = z / sqrt(1 + 1/n) on n − 1 degrees of freedom (n control
  seeds): the normal approximation would be far too liberal with a handful of seeds. Benjamini–Hochberg q
  across every cell of the matrix, per control kind. A cell is `significant` when z > 0 and q ≤ alpha against
  every control kind, and never on a benchmark at which the intact model is at chance (`intact_chance`);
- `dissociation_verdicts`: for every pair of networks A, B with their own benchmarks a, b: side A holds when A's
  lesion significantly hurts a and B's lesion does not, with z(A, a) > z(B, a); side B the reverse. Both:
  double dissociation; one: single; none: neither; a benchmark at chance (or one shared by both networks)
  makes the pair untestable.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import NeurolocError
from ..evaluate.chance import above_chance
from ..localize.overlap import compare_sets
from ..localize.scores import benjamini_hochberg
from ..units import UnitSet

__all__ = ["PER_SUBSET", "PRIMARY", "benchmark_columns", "chance_table", "comparable_pairs", "crawford_howell",
           "dissociation_cells", "dissociation_verdicts", "network_overlap", "primary_rows"]

# The row of each benchmark a cell reads: (subset, or None for its only subset; metric; higher is better).
PRIMARY: dict[str, tuple[str | None, str, bool]] = {
    "blimp": ("overall", "accuracy", True),
    "syntaxgym": ("overall", "accuracy", True),
    "perplexity": (None, "perplexity", False),
    "reasoning": ("overall", "accuracy", True),
    "theory_of_mind": ("belief", "accuracy", True),
}
# Benchmarks whose every subset is a column of its own, `NAME/SUBSET` (a language, a relation): (metric,
# higher is better).
PER_SUBSET: dict[str, tuple[str, bool]] = {
    "multilingual_perplexity": ("perplexity", False),
    "relations": ("accuracy", True),
}


def benchmark_columns(results: pd.DataFrame) -> list[str]:
    """The matrix's columns, in the order of the rows: a benchmark's name, or for a `PER_SUBSET` benchmark
    one `NAME/SUBSET` column per subset."""
    columns: list[str] = []
    for benchmark, rows in results.groupby("benchmark", sort=False):
        if benchmark in PER_SUBSET:
            columns += [f"{benchmark}/{subset}" for subset in dict.fromkeys(rows.subset)]
        else:
            columns.append(str(benchmark))
    return columns


def _reads(column: str) -> tuple[str, str | None, str, bool]:
    """(benchmark, subset or None, metric, higher is better) of a column."""
    benchmark, sep, subset = column.partition("/")
    if sep and benchmark in PER_SUBSET:
        return (benchmark, subset, *PER_SUBSET[benchmark])
    return (column, *PRIMARY.get(column, ("overall", "accuracy", True)))


def _same_sites(a: UnitSet, b: UnitSet) -> bool:
    return [s.name for s in a.sites] == [s.name for s in b.sites] and list(a.widths) == list(b.widths)


def comparable_pairs(units: Mapping[str, UnitSet]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs of networks on the same sites, pairs on different sites — their overlap means nothing)."""
    same, different = [], []
    for a, b in combinations(list(units), 2):
        (same if _same_sites(units[a], units[b]) else different).append((a, b))
    return same, different


def network_overlap(units: Mapping[str, UnitSet], scores: Mapping[str, np.ndarray], level: float = 0.95, *,
                    pairs: Sequence[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per pair of networks over all sites, one row per pair and site): n_a, n_b, n_both (shared
    units), jaccard, dice, their chance means and `level` intervals, p_overlap = P(shared ≥ observed) under
    layer-matched random sets of the same sizes, and r, the correlation of the two networks' scores. `pairs`:
    the pairs to compare (default: every pair), each on the same sites (`comparable_pairs`)."""
    frames = []
    for a, b in (pairs if pairs is not None else combinations(list(units), 2)):
        ua, ub = units[a], units[b]
        if not _same_sites(ua, ub):
            raise NeurolocError(f"networks {a} and {b} were localized on different sites; localize them with the "
                                "same --site and layers to compare them")
        frame = compare_sets(ua.flat_mask().numpy(), ub.flat_mask().numpy(), np.asarray(scores[a], dtype=float),
                             np.asarray(scores[b], dtype=float), ua.sites, ua.widths, level)
        frames.append(frame.assign(network_a=a, network_b=b))
    table = pd.concat(frames, ignore_index=True)
    table = table[["network_a", "network_b", *[c for c in table.columns if c not in ("network_a", "network_b")]]]
    return (table[table.site == "all"].drop(columns=["site", "kind", "layer"]).reset_index(drop=True),
            table[table.site != "all"].reset_index(drop=True))


def primary_rows(results: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """The rows of `results` a dissociation cell reads for the column `benchmark` (`PRIMARY`; unknown
    benchmarks: their `overall` accuracy; `NAME/SUBSET` of a `PER_SUBSET` benchmark: that subset's metric)."""
    name, subset, metric, _ = _reads(benchmark)
    rows = results[(results.benchmark == name) & (results.metric == metric)]
    if subset is not None:
        rows = rows[rows.subset == subset]
    elif rows.subset.nunique() > 1:
        raise NeurolocError(f"benchmark {benchmark} reports several subsets of {metric}; the atlas reads one")
    if rows.empty:
        raise NeurolocError(f"benchmark {benchmark} gave no {subset or ''} {metric} row for the atlas to read")
    return rows


def chance_table(intact: pd.DataFrame, benchmarks: Sequence[str], alpha: float) -> pd.DataFrame:
    """Per benchmark, the intact model's primary value and whether it is above chance (binomial test,
    `evaluate.chance`); benchmarks that report no chance level (BLiMP's mean over phenomena, perplexity)
    have `above_chance` NA ("not tested")."""
    rows = []
    for benchmark in benchmarks:
        primary = primary_rows(intact, benchmark)
        subset, metric = primary.subset.iloc[0], primary.metric.iloc[0]
        row = {"benchmark": benchmark, "subset": subset, "metric": metric, "intact": float(primary.value.iloc[0]),
               "chance": np.nan, "n_items": np.nan, "pvalue": np.nan, "above_chance": pd.NA}
        tested = above_chance(intact[(intact.benchmark == primary.benchmark.iloc[0]) & (intact.subset == subset)],
                              metric=metric, alpha=alpha) if metric == "accuracy" else pd.DataFrame()
        if len(tested):
            found = tested.iloc[0]
            row.update(chance=float(found.chance), n_items=int(found.n_items), pvalue=float(found.pvalue),
                       above_chance=bool(found.above_chance))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["above_chance"] = table["above_chance"].astype("boolean")
    return table


def crawford_howell(z: np.ndarray, n: np.ndarray) -> np.ndarray:
    """One-sided p-value that a single case lies z control sds above the mean of n controls
    (Crawford & Howell 1998: t = z / sqrt(1 + 1/n), n − 1 degrees of freedom); NaN where n < 2 or z is NaN."""
    z, n = np.asarray(z, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = stats.t.sf(z / np.sqrt(1 + 1 / n), np.maximum(n - 1, 1))
    return np.where((n >= 2) & np.isfinite(z), p, np.nan)


def _fdr(p: pd.Series) -> np.ndarray:
    """BH q over the finite p-values (NaN elsewhere)."""
    q = np.full(len(p), np.nan)
    finite = np.isfinite(p.to_numpy(dtype=float))
    if finite.any():
        q[finite] = benjamini_hochberg(p.to_numpy(dtype=float)[finite])
    return q


def dissociation_cells(results: pd.DataFrame, networks: Sequence[str], benchmarks: Sequence[str],
                       control_kinds: Sequence[str], *, alpha: float,
                       chance: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per lesioned network × benchmark (see the module docstring). `results` holds the lesion rows
    with columns network, condition (intact / target / a control kind), seed, benchmark, subset, metric,
    value; `chance` is `chance_table`'s (default: computed from the intact rows)."""
    intact = results[results.condition == "intact"]
    chance = chance if chance is not None else chance_table(intact, benchmarks, alpha)
    at_chance = {b: (not pd.isna(above) and not bool(above)) for b, above in zip(chance.benchmark, chance.above_chance)}
    rows = []
    for benchmark in benchmarks:
        higher = _reads(benchmark)[3]
        sign = 1.0 if higher else -1.0
        primary = primary_rows(results, benchmark)
        intact_value = float(primary[primary.condition == "intact"].value.mean())
        for network in networks:
            own = primary[primary.network == network]
            target = float(own[own.condition == "target"].value.mean())
            row = {"network": network, "benchmark": benchmark, "subset": primary.subset.iloc[0],
                   "metric": primary.metric.iloc[0], "intact": intact_value, "target": target,
                   "damage": sign * (intact_value - target)}
            for kind in control_kinds:
                values = own[own.condition == kind].value.to_numpy(dtype=float)
                mean = values.mean() if len(values) else np.nan
                # identical controls have no spread: sd 0 exactly (their float mean would leave ~1e-16)
                sd = (0.0 if np.ptp(values) == 0 else values.std(ddof=1)) if len(values) > 1 else np.nan
                z = sign * (mean - target) / sd if np.isfinite(sd) and sd > 0 else np.nan
                row.update({f"{kind}_mean": mean, f"{kind}_sd": sd, f"{kind}_n": len(values), f"z_{kind}": z,
                            f"p_{kind}": float(crawford_howell(np.array([z]), np.array([len(values)]))[0])})
            row["intact_chance"] = bool(at_chance.get(benchmark, False))
            rows.append(row)
    cells = pd.DataFrame(rows)
    significant = np.ones(len(cells), dtype=bool)
    for kind in control_kinds:
        cells[f"q_{kind}"] = _fdr(cells[f"p_{kind}"])
        significant &= (cells[f"z_{kind}"] > 0).to_numpy() & (cells[f"q_{kind}"] <= alpha).to_numpy()
    cells["significant"] = significant & ~cells["intact_chance"].to_numpy()
    return cells


def _side(cells: pd.DataFrame, lesioned: str, other: str, benchmark: str, kind: str) -> tuple[bool, float, float]:
    """(lesioning `lesioned` hurts `benchmark` significantly, lesioning `other` does not, and by more), z, z."""
    own = cells[(cells.network == lesioned) & (cells.benchmark == benchmark)].iloc[0]
    foreign = cells[(cells.network == other) & (cells.benchmark == benchmark)].iloc[0]
    z_own, z_foreign = float(own[f"z_{kind}"]), float(foreign[f"z_{kind}"])
    holds = bool(own.significant) and not bool(foreign.significant) and \
        (not np.isfinite(z_foreign) or z_own > z_foreign)
    return holds, z_own, z_foreign


def dissociation_verdicts(cells: pd.DataFrame, own: Mapping[str, str], control_kind: str) -> pd.DataFrame:
    """For every pair of networks (A, B) with own benchmarks (a, b): the cells that decide (z against
    `control_kind` controls: A on a, B on a, B on b, A on b), whether each side holds, and the verdict —
    double, single (A > B on a, or B > A on b), neither, or untestable (with the reason)."""
    rows = []
    chance = dict(zip(cells.benchmark, cells.intact_chance))
    for a, b in combinations(list(own), 2):
        bench_a, bench_b = own[a], own[b]
        row = {"network_a": a, "network_b": b, "benchmark_a": bench_a, "benchmark_b": bench_b}
        side_a, row["z_a_on_a"], row["z_b_on_a"] = _side(cells, a, b, bench_a, control_kind)
        side_b, row["z_b_on_b"], row["z_a_on_b"] = _side(cells, b, a, bench_b, control_kind)
        untestable = [f"{x} is at chance in the intact model" for x in dict.fromkeys((bench_a, bench_b)) if chance[x]]
        if bench_a == bench_b:
            untestable.insert(0, f"both networks' benchmark is {bench_a}")
        row["a_side"], row["b_side"] = side_a, side_b
        if untestable:
            row["verdict"], row["reason"] = "untestable", "; ".join(untestable)
        elif side_a and side_b:
            row["verdict"] = "double"
            row["reason"] = f"{a} lesion hurts {bench_a} beyond {b}'s, and {b} lesion hurts {bench_b} beyond {a}'s"
        elif side_a or side_b:
            x, y, bench = (a, b, bench_a) if side_a else (b, a, bench_b)
            row["verdict"], row["reason"] = "single", f"{x} lesion hurts {bench} beyond controls and beyond {y}'s"
        else:
            row["verdict"], row["reason"] = "neither", "no network's lesion hurts its own benchmark selectively"
        rows.append(row)
    return pd.DataFrame(rows, columns=["network_a", "network_b", "benchmark_a", "benchmark_b", "z_a_on_a", "z_b_on_a",
                                       "z_b_on_b", "z_a_on_b", "a_side", "b_side", "verdict", "reason"])
