"""The Localizer estimator: stream a contrast through the model, score every unit, select a set.

Reads like scikit-learn: parameters in the constructor, `fit(lm, stimuli)` returns self, learned
attributes end in `_`. Only per-condition sufficient statistics are kept, so `partial_fit` can add
stimuli later and the same statistics serve any number of re-selections (`select`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..errors import NeurolocError
from ..io import atomic_path, atomic_write_json, atomic_write_with
from ..models.layout import SITE_KINDS, Site
from ..models.loading import LoadedModel
from ..record.accumulators import ConditionStats
from ..record.recorder import Recorder
from ..stimuli.base import StimulusSet
from ..units import UnitSet, unit_name
from .scores import benjamini_hochberg, cohens_d, welch_t_test
from .selection import select_band, select_fdr, select_top

STATS_FILE = "stats.safetensors"
MEANS_FILE = "means.safetensors"
SCORES_FILE = "scores.parquet"
LOCALIZER_FILE = "localizer.json"


def _site_kinds(site: str | Sequence[str]) -> list[str]:
    kinds = [site] if isinstance(site, str) else list(site)
    kinds = [k for part in kinds for k in part.split(",") if k]
    unknown = [k for k in kinds if k not in SITE_KINDS]
    if unknown or not kinds:
        raise NeurolocError(f"unknown site {unknown or site!r}; choose from {', '.join(SITE_KINDS)}")
    return kinds


class Localizer:
    """Find the units that respond more to the contrast's target condition than to its control.

    Parameters
    ----------
    site: "residual", "mlp", "attn" or several ("residual,mlp"); selection is made per site kind.
    pooling: "last" (the paper) or "mean" token pooling.
    percent / count: how many units to keep (percent of the site's units, or a count; at most one of
        the two; neither means 1%).
    per_layer: select the top units of each layer instead of across all layers of a site.
    absolute: run the t-test on |activation| (the reference code's choice) instead of activation.
    fdr: keep only units whose Benjamini–Hochberg adjusted p is ≤ fdr (and t > 0).
    layers: restrict to these layers (default: all).
    """

    def __init__(self, site: str | Sequence[str] = "residual", *, pooling: str = "last", percent: float | None = None,
                 count: int | None = None, per_layer: bool = False, absolute: bool = False, fdr: float | None = None,
                 layers: Sequence[int] | None = None, batch_size: int = 32, max_tokens: int | None = None,
                 padding_side: str = "right", progress: bool = False) -> None:
        self.site = site
        self.pooling = pooling
        self.percent = percent
        self.count = count
        self.per_layer = per_layer
        self.absolute = absolute
        self.fdr = fdr
        self.layers = layers
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.padding_side = padding_side
        self.progress = progress

    def get_params(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                if not k.endswith("_") and not k.startswith("_")}

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, lm: LoadedModel, stimuli: StimulusSet) -> "Localizer":
        """Record `stimuli`, score every unit and select `units_`."""
        for attr in [a for a in vars(self) if a.endswith("_") or a.startswith("_")]:
            delattr(self, attr)
        return self.partial_fit(lm, stimuli)

    def partial_fit(self, lm: LoadedModel, stimuli: StimulusSet) -> "Localizer":
        """Add `stimuli` to the statistics gathered so far (same contrast), then re-score."""
        if getattr(self, "contrast_", None) not in (None, stimuli.contrast):
            raise NeurolocError(f"partial_fit with contrast {stimuli.contrast}, but the localizer was fit on {self.contrast_}")
        for condition in stimuli.contrast:
            if len(stimuli.indices(condition)) < 2:
                raise NeurolocError(f"condition {condition!r} of {stimuli.name!r} needs at least 2 items")
        kinds = _site_kinds(self.site)
        sites = lm.layout.sites(kinds, self.layers)
        recorder = Recorder(lm, sites, pooling=self.pooling, batch_size=self.batch_size, max_tokens=self.max_tokens,
                            padding_side=self.padding_side, progress=self.progress,
                            description=f"localizing ({stimuli.name})")
        stats = getattr(self, "stats_", None) or ConditionStats()
        target = stimuli.contrast[0]
        sums = getattr(self, "_token_sums", {s.name: 0.0 for s in sites})
        tokens = getattr(self, "_token_count", 0)
        for batch in recorder.iter_batches(stimuli.texts, stimuli.word_spans, token_sums=True):
            conditions = [stimuli.conditions[i] for i, _ in batch.rows]
            for condition in sorted(set(conditions)):
                rows = torch.tensor([c == condition for c in conditions])
                for site, values in batch.features.items():
                    stats.update(condition, site.name, values[rows.to(values.device)])
            in_target = torch.tensor([stimuli.conditions[i] == target for i in batch.texts])
            for site, per_text in batch.token_sums.items():
                sums[site.name] = sums[site.name] + per_text[in_target].sum(0)
            tokens += int(batch.token_counts[in_target].sum())
        self._token_sums, self._token_count = sums, tokens
        self.stats_ = stats
        self.contrast_ = stimuli.contrast
        self.sites_ = sites
        self.widths_ = [lm.layout.width(s.kind) for s in sites]
        self.model_ = dict(lm.identity)
        self.stimuli_ = {"name": stimuli.name, "sha256": stimuli.content_hash(), "n": len(stimuli),
                         "contrast": list(stimuli.contrast), "source": stimuli.source}
        self.means_ = {name: (value / max(tokens, 1)).float() for name, value in sums.items()}
        self._score()
        self.units_ = self.select()
        return self

    def _score(self) -> None:
        target, control = self.contrast_
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "p", "d", "mean_a", "mean_b", "df")}
        for site in self.sites_:
            a, b = self.stats_.get(target, site.name), self.stats_.get(control, site.name)
            mean_a = (a.abs_mean if self.absolute else a.mean).numpy()
            mean_b = (b.abs_mean if self.absolute else b.mean).numpy()
            m2_a = (a.abs_m2 if self.absolute else a.m2).numpy()
            m2_b = (b.abs_m2 if self.absolute else b.m2).numpy()
            result = welch_t_test(a.n, mean_a, m2_a, b.n, mean_b, m2_b)
            parts["t"].append(result.t)
            parts["p"].append(result.p)
            parts["df"].append(result.df)
            parts["d"].append(cohens_d(a.n, mean_a, m2_a, b.n, mean_b, m2_b))
            parts["mean_a"].append(mean_a)
            parts["mean_b"].append(mean_b)
        flat = {k: np.concatenate(v) for k, v in parts.items()}
        self.t_, self.p_, self.d_, self.df_ = flat["t"], flat["p"], flat["d"], flat["df"]
        self.mean_a_, self.mean_b_ = flat["mean_a"], flat["mean_b"]
        self.p_fdr_ = benjamini_hochberg(self.p_)

    # -- selection --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "t_"):
            raise NeurolocError("the localizer is not fitted yet: call fit(lm, stimuli) or Localizer.load(dir)")

    def _groups(self, per_layer: bool) -> np.ndarray:
        """Selection groups per unit: the site kind, or each (layer, kind) site when per layer."""
        labels = [i if per_layer else _site_kinds(self.site).index(s.kind) for i, s in enumerate(self.sites_)]
        return np.repeat(labels, self.widths_)

    def _units(self, mask: np.ndarray) -> UnitSet:
        return UnitSet.from_flat(mask, self.sites_, self.widths_, model=self.model_)

    def select(self, percent: float | None = None, count: int | None = None, *, per_layer: bool | None = None,
               largest: bool = True) -> UnitSet:
        """Re-select from the fitted scores (defaults: the constructor's); `largest=False` gives the
        least selective units."""
        self._check_fitted()
        if percent is None and count is None:
            percent, count = self.percent, self.count
            if percent is None and count is None:
                percent = 1.0
        per_layer = self.per_layer if per_layer is None else per_layer
        eligible = None
        if self.fdr is not None:
            eligible = select_fdr(self.p_fdr_, self.fdr) & (self.t_ > 0 if largest else self.t_ < 0)
        mask = select_top(self.t_, percent=percent, count=count, groups=self._groups(per_layer), per_group=True,
                          eligible=eligible, largest=largest, allow_fewer=self.fdr is not None)
        return self._units(mask)

    def band(self, low_percentile: float, high_percentile: float, like: UnitSet, seed: int = 0) -> UnitSet:
        """Random units from a percentile band of t with `like`'s per-site counts (the paper's
        selectivity-matched control)."""
        self._check_fitted()
        counts = {i: c for i, c in enumerate(like.counts().get(s.name, 0) for s in self.sites_) if c}
        mask = select_band(self.t_, low_percentile=low_percentile, high_percentile=high_percentile,
                           counts_per_group=counts, groups=self._groups(True), seed=seed,
                           exclude=like.flat_mask().numpy() if like.sites == self.sites_ else None)
        return self._units(mask)

    # -- tables and persistence --------------------------------------------------------------------
    def scores_frame(self, selected: UnitSet | None = None) -> pd.DataFrame:
        """One row per unit: unit, site, layer, index, t, p, p_fdr, d, mean_a, mean_b, selected."""
        self._check_fitted()
        selected = selected if selected is not None else self.units_
        sites = np.repeat([s.kind for s in self.sites_], self.widths_)
        layers = np.repeat([s.layer for s in self.sites_], self.widths_)
        index = np.concatenate([np.arange(w) for w in self.widths_])
        return pd.DataFrame({
            "unit": [unit_name(s, i) for s, w in zip(self.sites_, self.widths_) for i in range(w)],
            "site": sites, "layer": layers, "index": index,
            "t": self.t_, "p": self.p_, "p_fdr": self.p_fdr_, "d": self.d_,
            "mean_a": self.mean_a_, "mean_b": self.mean_b_,
            "selected": selected.flat_mask().numpy(),
        })

    def save(self, directory: str | Path) -> None:
        """Write units, scores, streamed statistics and unit means (for mean lesions) to `directory`."""
        self._check_fitted()
        directory = Path(directory)
        self.units_.save(directory)
        frame = self.scores_frame()
        atomic_write_with(directory / SCORES_FILE, lambda tmp: frame.to_parquet(tmp, index=False))
        self.stats_.save(directory / STATS_FILE)
        with atomic_path(directory / MEANS_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in self.means_.items()}, str(tmp),
                      metadata={"condition": self.contrast_[0], "tokens": str(self._token_count)})
        atomic_write_json(directory / LOCALIZER_FILE, {
            "params": self.get_params(), "contrast": list(self.contrast_), "sites": [s.name for s in self.sites_],
            "model": self.model_, "stimuli": self.stimuli_, "token_count": self._token_count,
        })

    @classmethod
    def load(cls, directory: str | Path) -> "Localizer":
        """Restore a fitted localizer from a `neuroloc localize` output directory."""
        directory = Path(directory)
        info_path = directory / LOCALIZER_FILE
        if not info_path.is_file():
            raise NeurolocError(f"{directory} holds no localizer output ({LOCALIZER_FILE} missing); "
                                f"run `neuroloc localize --out {directory}` first")
        info = json.loads(info_path.read_text())
        localizer = cls(**info["params"])
        localizer.stats_ = ConditionStats.load(directory / STATS_FILE)
        localizer.contrast_ = tuple(info["contrast"])
        localizer.sites_ = [Site.parse(name) for name in info["sites"]]
        localizer.widths_ = [localizer.stats_.get(localizer.contrast_[0], s.name).width for s in localizer.sites_]
        localizer.model_ = info["model"]
        localizer.stimuli_ = info["stimuli"]
        localizer._token_count = info["token_count"]
        localizer.means_ = load_file(str(directory / MEANS_FILE))
        localizer._token_sums = {k: v.double() * localizer._token_count for k, v in localizer.means_.items()}
        localizer._score()
        localizer.units_ = UnitSet.load(directory)
        return localizer
