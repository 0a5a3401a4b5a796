"""Score how well a unit set's activations predict brain recordings, against honest baselines.

One feature extraction pass records every layer of the needed site kinds; then each feature set —
the unit set, random unit sets matched to it per layer and site, all units, each whole layer and the
confound baselines — goes through the same grouped cross-validation, and scores are normalised by
the inter-subject ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..record.features import extract_features
from ..units import UnitSet
from .baselines import CONFOUNDS, confound_features, matched_random_units, permutation_pvalue, rank_among
from .ceiling import Ceiling, intersubject_ceiling
from .metric import cross_validate, group_folds, score_table
from .recordings import Recordings, read_recordings
from .ridge import DEFAULT_ALPHAS

METRICS = ("ridge", "linear")


@dataclass
class AlignmentResult:
    """Tables of one alignment run.

    `scores`: one row per feature set, fold and level (`all`, `roi`, `subject`) with the median r.
    `summary`: one row per feature set: score (median over neuroids, mean over folds), its sd over
    folds, the ceiling-normalised score and, for the unit set, its rank among the random sets and p.
    `neuroid_scores`: per neuroid mean r of the unit set and of all units. `by_roi`: per feature set
    and ROI/subject, score and normalised score. `figures` is filled by `neuroloc.align` (pipelines).
    """

    scores: pd.DataFrame
    summary: pd.DataFrame
    by_roi: pd.DataFrame
    neuroid_scores: pd.DataFrame
    ceiling: Ceiling | None
    recordings: dict[str, Any]
    parameters: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)

    def score(self, features: str = "units") -> float:
        rows = self.summary[self.summary.features == features]
        if rows.empty:
            raise NeurolocError(f"no feature set {features!r}; have {self.summary.features.tolist()}")
        return float(rows.score.iloc[0])


def _kinds(units: UnitSet | None, site: str) -> list[str]:
    if units is not None:
        return sorted({s.kind for s, m in units.masks.items() if m.any()})
    return [k.strip() for k in site.split(",") if k.strip()]


def _layers(layers: str | Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return []
    if isinstance(layers, str):
        if layers == "all":
            return list(range(n_layers))
        try:
            layers = [int(v) for v in layers.split(",") if v.strip()]
        except ValueError:
            raise NeurolocError(f"--layers takes 'all' or layer numbers like 10,20, got {layers!r}") from None
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise NeurolocError(f"layers {bad} do not exist; the model has layers 0–{n_layers - 1}")
    return list(layers)


def score_alignment(lm: LoadedModel, recordings: Recordings | Any, units: UnitSet | None = None, *,
                    controls: int = 10, layers: str | Sequence[int] | None = None, site: str = "residual",
                    pooling: str = "last", context: bool = True, max_context: int | None = None, metric: str = "ridge",
                    alphas: Sequence[float] = DEFAULT_ALPHAS, alpha_per_target: bool = False, folds: int = 10,
                    ceiling: str | float | None = "auto", confounds: Sequence[str] = CONFOUNDS, seed: int = 0,
                    batch_size: int, bos: str, device: str | None = None, ceiling_subsets: int = 10,
                    ceiling_holdouts: int = 5, ceiling_bootstraps: int = 100, progress: bool = False,
                    checkpoint: Any = None, **read_options: Any) -> AlignmentResult:
    """Cross-validated encoding scores of `units` (plus `controls` matched random sets, all units,
    `layers` one by one, and `confounds`) on `recordings` (Recordings, a path, a DataFrame or a
    DataArray), with the inter-subject ceiling (`ceiling="auto"`), a given one (a float) or none. A
    `checkpoint` (`record.checkpoint.Checkpoint`) makes the feature recording resumable."""
    if metric not in METRICS:
        raise NeurolocError(f"unknown metric {metric!r}; choose ridge or linear")
    if controls < 0:
        raise NeurolocError(f"--controls must be ≥ 0, got {controls}")
    if units is not None and controls and len(units) == 0:
        raise NeurolocError("the unit set is empty")
    given_ceiling = None
    if isinstance(ceiling, (int, float)) and not isinstance(ceiling, bool):
        given_ceiling = Ceiling.given(float(ceiling))
    elif ceiling not in ("auto", "none", None):
        raise NeurolocError(f"--ceiling takes 'auto', 'none' or a number in (0, 1], got {ceiling!r}")
    rec = read_recordings(recordings, **read_options)
    fold_list = group_folds(rec.groups, folds, seed=seed)
    penalties = alphas if metric == "ridge" else None
    device = device or ("cuda" if lm.device.type == "cuda" else "cpu")
    kinds = _kinds(units, site)
    layer_list = _layers(layers, lm.layout.n_layers)
    real_groups = not rec.stimuli["group"].equals(rec.stimuli["stimulus_id"])
    features = extract_features(
        lm, rec.texts, lm.layout.sites(kinds), pooling=pooling,
        passages=rec.groups if context and real_groups else None,
        positions=rec.stimuli["position"].tolist() if context and real_groups else None, max_context=max_context,
        batch_size=batch_size, bos=bos, progress=progress, checkpoint=checkpoint)

    sets: list[tuple[dict[str, Any], Any]] = []
    if units is not None:
        sets.append(({"features": "units", "kind": "units", "layer": -1, "seed": -1}, lambda: features.units(units)))
        for k in range(controls):
            control = matched_random_units(units, seed=seed + k)
            sets.append(({"features": f"random-{seed + k}", "kind": "random", "layer": -1, "seed": seed + k},
                         lambda c=control: features.units(c)))
    sets.append(({"features": "all", "kind": "all", "layer": -1, "seed": -1}, features.all))
    for layer in layer_list:
        sets.append(({"features": f"layer-{layer}", "kind": "layer", "layer": layer, "seed": -1},
                     lambda la=layer: features.layer(la)))
    if not real_groups:  # without passages, position and passage identity carry nothing to test
        confounds = [c for c in confounds if c != "position"]
    for name in confounds:
        sets.append(({"features": name, "kind": "confound", "layer": -1, "seed": -1},
                     lambda n=name: confound_features(n, rec, lm.tokenizer)))

    tables, neuroid_scores = [], rec.neuroids[["neuroid_id", "subject", "roi"]].copy()
    with progress_bar("alignment", len(sets), progress) as advance:
        for meta, build in sets:
            matrix = build()
            matrix = matrix.numpy() if torch.is_tensor(matrix) else matrix
            cv = cross_validate(matrix, rec.responses, fold_list, alphas=penalties, alpha_per_target=alpha_per_target,
                                device=device)
            table = score_table(cv.r, rec.neuroids)
            for key, value in {**meta, "n_units": matrix.shape[1]}.items():
                table.insert(0, key, value)
            tables.append(table)
            if meta["kind"] in ("units", "all"):
                neuroid_scores[meta["features"]] = cv.per_neuroid()
            advance(1)
    scores = pd.concat(tables, ignore_index=True)[["features", "kind", "layer", "seed", "n_units", "level", "name",
                                                   "fold", "n_neuroids", "r"]]

    if given_ceiling is not None:
        ceiling_result = given_ceiling
    elif ceiling == "auto" and len(rec.subjects) > 1:
        ceiling_result = intersubject_ceiling(rec, fold_list, alphas=penalties, alpha_per_target=alpha_per_target,
                                              n_subsets=ceiling_subsets, n_holdouts=ceiling_holdouts,
                                              n_bootstraps=ceiling_bootstraps, seed=seed, device=device)
    else:
        ceiling_result = None

    summary = _summary(scores, ceiling_result)
    by_roi = _by_roi(scores, ceiling_result)
    parameters = {"controls": controls, "layers": layer_list, "kinds": kinds, "pooling": pooling, "bos": bos,
                  "context": bool(context and real_groups),
                  "max_context": max_context, "metric": metric,
                  "alphas": list(penalties) if penalties is not None else None, "alpha_per_target": alpha_per_target,
                  "folds": len(fold_list), "ceiling": ceiling,
                  "confounds": list(confounds), "seed": seed, "n_units": len(units) if units is not None else None}
    return AlignmentResult(scores, summary, by_roi, neuroid_scores, ceiling_result, rec.describe(), parameters)


def _summary(scores: pd.DataFrame, ceiling: Ceiling | None) -> pd.DataFrame:
    overall = scores[scores.level == "all"]
    grouped = overall.groupby(["features", "kind", "layer", "seed", "n_units"], sort=False).r
    summary = grouped.agg(score="mean", sd_folds="std").reset_index()
    value = ceiling.value() if ceiling is not None else np.nan
    summary["ceiling"] = value
    summary["normalized"] = summary.score / value
    null = summary.loc[summary.kind == "random", "score"].to_numpy()
    summary["rank"], summary["p"] = np.nan, np.nan
    if len(null):
        target = summary.kind == "units"
        observed = float(summary.loc[target, "score"].iloc[0])
        summary.loc[target, "rank"] = rank_among(observed, null)
        summary.loc[target, "p"] = permutation_pvalue(observed, null)
        summary.loc[target, "random_mean"] = null.mean()
        summary.loc[target, "random_sd"] = null.std(ddof=1) if len(null) > 1 else np.nan
    return summary


def _by_roi(scores: pd.DataFrame, ceiling: Ceiling | None) -> pd.DataFrame:
    parts = scores[scores.level != "all"]
    if parts.empty:
        return pd.DataFrame(columns=["features", "level", "name", "score", "ceiling", "normalized"])
    table = parts.groupby(["features", "kind", "level", "name"], sort=False).r.mean().rename("score").reset_index()
    table["ceiling"] = np.nan
    if ceiling is not None:
        lookup = {(row.level, row.name): row.ceiling for row in ceiling.table.itertuples()}
        table["ceiling"] = [lookup.get((level, name), np.nan) for level, name in zip(table.level, table.name)]
    table["normalized"] = table.score / table.ceiling
    return table
