"""Matched controls for lesions: the same number of units per site, drawn from outside the target.

`random_matched` draws uniformly; `magnitude_matched` picks, for every target unit, a non-target unit
of the same site with a similar mean |activation|, so that "language-selective" can be told apart
from merely "large" (zeroing a huge residual coordinate breaks a model whatever its selectivity).

Control kinds live in a registry with stable identifiers (`CONTROLS`): a kind is a function
(target, seed, ControlData) → UnitSet. Adding one is a new module with that function plus one line
in `CONTROLS` (or `register_control(name, fn)` from user code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from ..localize.selection import select_random
from ..units import UnitSet


@dataclass(frozen=True)
class ControlData:
    """What a control kind may read besides the target: per-unit mean |activation| (`magnitudes`)
    and per-unit selectivity scores (`scores`), each aligned with the target's `flat_mask()`."""

    magnitudes: np.ndarray | None = None
    scores: np.ndarray | None = None


def _site_groups(units: UnitSet) -> np.ndarray:
    return np.repeat(np.arange(len(units.sites)), units.widths)


def random_matched(units: UnitSet, seed: int) -> UnitSet:
    """Uniformly random units with `units`' per-site counts, none of them in `units`."""
    counts = {i: int(m.sum()) for i, m in enumerate(units.masks.values()) if m.any()}
    mask = select_random(len(_site_groups(units)), counts_per_group=counts, groups=_site_groups(units),
                         seed=seed, exclude=units.flat_mask().numpy())
    return UnitSet.from_flat(mask, units.sites, units.widths, model=units.model)


def magnitude_matched(units: UnitSet, magnitude: np.ndarray, seed: int, neighbours: int = 3) -> UnitSet:
    """Per target unit, a random one of the `neighbours` unused non-target units of the same site whose
    log mean |activation| is closest to the target's. `magnitude` is aligned with `units.flat_mask()`."""
    magnitude = np.asarray(magnitude, dtype=float)
    target = units.flat_mask().numpy()
    if magnitude.shape != target.shape:
        raise NeurolocError(f"magnitudes for {magnitude.size} units, but the UnitSet spans {target.size}")
    rng = np.random.default_rng(seed)
    log_mag = np.log(np.maximum(magnitude, 1e-12))
    chosen = np.zeros_like(target)
    start = 0
    for width in units.widths:
        stop = start + width
        targets = np.flatnonzero(target[start:stop]) + start
        free = np.flatnonzero(~target[start:stop]) + start
        if len(targets) > len(free):
            raise NeurolocError(f"cannot match {len(targets)} units with only {len(free)} others in the same site")
        for unit in rng.permutation(targets):
            distance = np.abs(log_mag[free] - log_mag[unit])
            nearest = np.argsort(distance, kind="stable")[:neighbours]
            pick = rng.choice(nearest)
            chosen[free[pick]] = True
            free = np.delete(free, pick)
        start = stop
    return UnitSet.from_flat(chosen, units.sites, units.widths, model=units.model)


def _random(target: UnitSet, seed: int, data: ControlData) -> UnitSet:
    return random_matched(target, seed)


def _magnitude(target: UnitSet, seed: int, data: ControlData) -> UnitSet:
    if data.magnitudes is None:
        raise NeurolocError("magnitude-matched controls need localizer statistics: pass a "
                            "`neuroloc localize` output directory as --units")
    return magnitude_matched(target, data.magnitudes, seed)


ControlKind = Callable[[UnitSet, int, ControlData], UnitSet]
CONTROLS: dict[str, ControlKind] = {"random": _random, "magnitude": _magnitude}
CONTROL_KINDS = tuple(CONTROLS)  # the built-in identifiers


def register_control(name: str, kind: ControlKind) -> None:
    """Make a control kind available to `draw_control` and `--control-kind` under `name`."""
    CONTROLS[name] = kind


def draw_control(kind: str, target: UnitSet, seed: int, data: ControlData | None = None) -> UnitSet:
    """A control set of kind `kind` for `target` (seeded), never overlapping it."""
    if kind not in CONTROLS:
        raise NeurolocError(f"unknown control kind {kind!r}; choose from {', '.join(CONTROLS)}")
    return CONTROLS[kind](target, seed, data or ControlData())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark, subset, metric and lesion size: intact, target, each control's mean ± sd, and
    the target's effect in control standard deviations ((target − control mean) / control sd)."""
    keys = ["benchmark", "subset", "metric"]
    intact = results[results.condition == "intact"].groupby(keys).value.mean().rename("intact")
    lesioned = results[results.condition != "intact"]
    rows = []
    for (benchmark, subset, metric, percent), group in lesioned.groupby(keys + ["percent"], dropna=False):
        target = group[group.condition == "target"].value
        row = {"benchmark": benchmark, "subset": subset, "metric": metric, "percent": percent,
               "intact": intact.get((benchmark, subset, metric), np.nan),
               "target": target.mean() if len(target) else np.nan}
        for kind in sorted(set(group.condition) - {"target"}):
            values = group[group.condition == kind].value.to_numpy()
            mean, sd = values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{kind}_mean"], row[f"{kind}_sd"], row[f"{kind}_n"] = mean, sd, len(values)
            row[f"effect_vs_{kind}_sd"] = (row["target"] - mean) / sd if sd and np.isfinite(sd) and sd > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
