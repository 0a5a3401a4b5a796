"""The Localizer estimator: stream stimuli through the model, score every unit, select a set.

Reads like scikit-learn's `SelectKBest(score_func)`: parameters in the constructor (the score is one),
`fit(lm, stimuli)` returns self, learned attributes end in `_` (`scores_`, `pvalues_`, `units_`),
`get_support()` gives the mask. `fit` = record into a `StatsStore` → `fit_stats(stats)`; `fit_stats`
needs no model, so statistics gathered elsewhere (another process, a resumed run) can be fitted, and
the same statistics serve any number of re-selections (`select`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..errors import NeurolocError
from ..io import atomic_path, atomic_write_json, atomic_write_with
from ..models.layout import SITE_KINDS, Site
from ..models.loading import LoadedModel
from ..record.checkpoint import Checkpoint, collect_resumable
from ..record.collect import KINDS as RECORDED, collect
from ..record.folds import FoldStats, record_folds
from ..record.pooling import check_pooling
from ..record.recorder import Recorder
from ..record.stats import StatsStore
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from ..stimuli.design import Design
from ..stimuli.folds import FoldAssignment, assign_folds
from ..units import LabeledUnits, UnitIndex, UnitSet
from .score_functions import ScoreCallable, ScoreFunction, Scores, get_score, ordered_sites
from .scores import benjamini_hochberg
from .selection import select_band, select_fdr

STATS_FILE = "stats.safetensors"
MEANS_FILE = "means.safetensors"
SCORES_FILE = "scores.parquet"
LOCALIZER_FILE = "localizer.json"


def _settings(settings: RunSettings | Mapping | None, legacy: Mapping[str, Any]) -> RunSettings:
    """The run settings from `settings` and the deprecated keywords batch_size, bos, max_tokens, progress."""
    unknown = sorted(set(legacy) - {"batch_size", "bos", "max_tokens", "progress"})
    if unknown:
        raise TypeError(f"Localizer got unexpected keyword argument(s) {', '.join(unknown)}")
    if isinstance(settings, Mapping):
        settings = RunSettings.from_dict(settings, where="localizer settings")
    settings = settings if settings is not None else RunSettings(progress=False)
    return settings.replace(**legacy) if legacy else settings


def site_kinds(site: str | Sequence[str]) -> list[str]:
    """`"residual,mlp"` or a list → validated site kinds."""
    kinds = [site] if isinstance(site, str) else list(site)
    kinds = [k.strip() for part in kinds for k in part.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SITE_KINDS]
    if unknown or not kinds:
        raise NeurolocError(f"unknown site {unknown or site!r}; choose from {', '.join(SITE_KINDS)}")
    return kinds


class Localizer:
    """Find the units that respond selectively to labels of a stimulus set.

    Parameters
    ----------
    site: "residual", "mlp", "mlp_gate", "attn" or several ("residual,mlp"); selection is per site kind.
    score: a registered score name (`neuroloc.localize.score_functions.SCORES`: welch, cohen_d,
        one_vs_rest_welch, activation_probability, lape, average_precision) or a callable
        `(stats, design) -> Scores`.
    design: what is compared (`Design`, or "A:B" / "one-vs-rest" / "groups"); default: the stimuli's
        contrast, else one-vs-rest over every label.
    pooling: "last" (the paper) or "mean" token pooling, or "tokens" (every real token: activation
        probabilities, as LAPE counts them).
    percent / count: how many units to keep (percent of the site's units, or a count; neither means 1%).
    per_layer: select the top units of each layer instead of across all layers of a site.
    per_kind: select within each site kind (default), or — False — across every unit of every site kind
        together (a study's "k units per label", e.g. task neurons over mlp and attention heads).
    absolute: test |activation| (the reference code's choice) instead of activation.
    fdr: keep only units whose Benjamini–Hochberg adjusted p is ≤ fdr (and the score's sign agrees).
    layers: restrict to these layers (default: all).
    quantile: LAPE's activation-probability bar (a quantile of all unit × label probabilities; default: the
        score's own, 0.95).
    options: further options of the score (e.g. the attribution scores' `aggregate`, `z0`,
        `nuisance_percent`; average precision's `negate`).
    settings: the run settings (`neuroloc.settings.RunSettings`: BOS policy, batch size, truncation,
        progress bars) every recording pass uses.

    `absolute`, `quantile` and `options` are options of the score: a score that does not take an option given
    refuses it. A score that needs statistics a recording does not make (the attribution scores: `attribution`,
    from the attribution engine) is fitted from given statistics (`fit_stats`) only.
    The keywords `batch_size`, `bos`, `max_tokens` and `progress` are deprecated aliases of the run settings'
    fields (neuroloc 0.1.0 and 0.1 outputs' `localizer.json` use them).
    folds: record the statistics per fold too (K folds by content, `neuroloc.stimuli.folds`), in the same
        single pass: `fold_stats_` then gives every fold's statistics (`neuroloc.localize.reliability`
        reads them), while the fit itself is on all stimuli, as without folds.
    """

    def __init__(self, site: str | Sequence[str] = "residual", *, score: str | ScoreCallable = "welch",
                 design: Design | str | None = None, pooling: str = "last", percent: float | None = None,
                 count: int | None = None, per_layer: bool = False, absolute: bool = False,
                 fdr: float | None = None, layers: Sequence[int] | None = None, padding_side: str = "right",
                 quantile: float | None = None, settings: RunSettings | Mapping | None = None,
                 folds: int | None = None, per_kind: bool = True, options: Mapping[str, Any] | None = None,
                 **legacy: Any) -> None:
        self.site = site
        self.score = score
        self.design = design
        self.pooling = pooling
        self.percent = percent
        self.count = count
        self.per_layer = per_layer
        self.absolute = absolute
        self.fdr = fdr
        self.layers = layers
        self.padding_side = padding_side
        self.quantile = quantile
        self.settings = _settings(settings, legacy)
        self.folds = folds
        self.per_kind = per_kind
        self.options = dict(options) if options else None

    def get_params(self) -> dict:
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                  if not k.endswith("_") and not k.startswith("_")}
        params["score"] = self.score_function.name
        params["design"] = None if self.design is None else str(self._design_spec())
        params["settings"] = self.settings.to_dict()
        return params

    @property
    def bos(self) -> str:
        """The BOS policy of the recording (what scoring a lesion of these units should use too)."""
        return self.settings.bos

    def score_options(self) -> dict[str, Any]:
        """The score options given (`absolute`, `quantile`), for the score to take or refuse."""
        options: dict[str, Any] = {}
        if self.absolute:
            options["absolute"] = True
        if self.quantile is not None:
            options["quantile"] = self.quantile
        return {**options, **(self.options or {})}

    @property
    def score_function(self) -> ScoreFunction:
        return get_score(self.score)

    def _design_spec(self) -> Design | None:
        if self.design is None or isinstance(self.design, Design):
            return self.design
        return Design.parse(self.design)

    def check_params(self) -> None:
        """Refuse bad parameters before any recording (so a failed run writes nothing)."""
        site_kinds(self.site)
        check_pooling(self.pooling)
        self._design_spec()
        self.score_function.check_options(self.score_options())
        if self.percent is not None and (isinstance(self.percent, bool) or not 0 < self.percent <= 100):
            raise NeurolocError(f"percent must be in (0, 100], got {self.percent!r}")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count < 1):
            raise NeurolocError(f"count must be an int >= 1, got {self.count!r}")
        if self.percent is not None and self.count is not None:
            raise NeurolocError("give at most one of percent and count")
        if self.quantile is not None and not 0 <= self.quantile < 1:
            raise NeurolocError(f"quantile must be in [0, 1), got {self.quantile!r}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int)
                                       or self.folds < 2):
            raise NeurolocError(f"folds must be an int >= 2 (or None), got {self.folds!r}")

    def statistic_kinds(self) -> tuple[str, ...]:
        """What to record: the score's needs, token statistics always (unit means for mean lesions). A score
        needing statistics no recording makes (`attribution`) gets exactly its needs."""
        if not set(self.score_function.needs) <= set(RECORDED):
            return tuple(self.score_function.needs)
        needs = set(self.score_function.needs) | {"tokens"}
        if self.pooling == "tokens":
            needs.discard("moments")
            needs.discard("rows")
        elif "tokens" in self.score_function.needs and not needs & {"moments", "rows"}:
            needs.add("moments")
        return tuple(k for k in ("moments", "tokens", "rows") if k in needs)

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, lm: LoadedModel, stimuli: StimulusSet) -> "Localizer":
        """Record `stimuli`, score every unit and select `units_`."""
        for attr in [a for a in vars(self) if a.endswith("_") or a.startswith("_")]:
            delattr(self, attr)
        if self.folds is not None:
            self.check_params()
            return self.fit_folds(lm, stimuli, assign_folds(stimuli, self.folds), settings=self.settings, rows=False)
        return self.partial_fit(lm, stimuli)

    def fit_folds(self, lm: LoadedModel, stimuli: StimulusSet, assignment: FoldAssignment, *,
                  settings: RunSettings, rows: bool, fractions: Sequence[float] = (),
                  checkpoint: Checkpoint | None = None) -> "Localizer":
        """Record `stimuli` once with statistics per bucket of `assignment` (fine enough for its folds and
        the first `fractions` of the stimuli), keeping their pooled rows when `rows`, and fit on all of
        them. Sets `folds_` (the assignment) and `fold_stats_` (a `FoldStats`). The run settings must
        agree with this localizer's BOS policy and truncation, which its output records. With a `checkpoint`
        (its key covering the assignment, `rows` and `fractions`) the recording resumes from it."""
        self.check_params()
        if (settings.bos, settings.max_tokens) != (self.settings.bos, self.settings.max_tokens):
            raise NeurolocError(f"the run settings (bos={settings.bos!r}, max_tokens={settings.max_tokens}) differ "
                                f"from the localizer's (bos={self.settings.bos!r}, max_tokens="
                                f"{self.settings.max_tokens}): build the Localizer with settings=the run settings")
        for attr in [a for a in vars(self) if a.endswith("_") or a.startswith("_")]:
            delattr(self, attr)
        design = self._resolve_design(sorted(stimuli.labels), stimuli)
        compared = design.labels if design.kind == "contrast" else stimuli.labels
        assignment.check(stimuli, compared)
        recording = record_folds(lm, stimuli, assignment, sites=lm.layout.sites(site_kinds(self.site), self.layers),
                                 pooling=self.pooling, kinds=self.statistic_kinds(),
                                 n_buckets=assignment.n_buckets(fractions), rows=rows, settings=settings,
                                 description=f"localizing ({stimuli.name}, {assignment.k} folds)",
                                 checkpoint=checkpoint)
        self.fit_recorded(lm, stimuli, recording.full(), design)
        self.folds_ = assignment
        self.fold_stats_: FoldStats = recording
        return self

    def clone(self) -> "Localizer":
        """An unfitted localizer with the same parameters (scikit-learn's `clone`)."""
        return type(self)(**{k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")})

    def record(self, lm: LoadedModel, stimuli: StimulusSet, stats: StatsStore | None = None, *,
               checkpoint: Checkpoint | None = None) -> StatsStore:
        """Stream `stimuli` into (new or given) statistics; nothing is scored. With a `checkpoint`, the
        statistics are saved every few batches and a rerun with the same inputs resumes from them."""
        self.check_params()
        other = sorted(set(self.score_function.needs) - set(RECORDED))
        if other:
            raise NeurolocError(f"score {self.score_function.name!r} needs {', '.join(other)} statistics, which a "
                                "recording of activations does not make (the attribution scores are computed by "
                                "`neuroloc task` and `neuroloc pos`); fit it on such statistics with fit_stats")
        sites = lm.layout.sites(site_kinds(self.site), self.layers)
        recorder = Recorder(lm, sites, pooling=self.pooling, batch_size=self.settings.batch_size,
                            max_tokens=self.settings.max_tokens, padding_side=self.padding_side,
                            bos=self.settings.bos, progress=self.settings.progress,
                            description=f"localizing ({stimuli.name})")
        if checkpoint is not None:
            return collect_resumable(recorder, stimuli, checkpoint, kinds=self.statistic_kinds(), store=stats)
        return collect(recorder, stimuli, stats, kinds=self.statistic_kinds())

    def partial_fit(self, lm: LoadedModel, stimuli: StimulusSet) -> "Localizer":
        """Add `stimuli` to the statistics gathered so far (same design), then re-score."""
        if self.folds is not None:
            raise NeurolocError("partial_fit records no statistics per fold; with folds, fit on every stimulus at once")
        design = self._resolve_design(sorted(stimuli.labels), stimuli)
        if getattr(self, "design_", None) not in (None, design):
            raise NeurolocError(f"partial_fit with design {design}, but the localizer was fit on {self.design_}")
        for label in design.labels:
            if len(stimuli.indices(label)) < 2:
                raise NeurolocError(f"condition {label!r} of {stimuli.name!r} needs at least 2 items")
        stats = self.record(lm, stimuli, getattr(self, "stats_", None))
        return self.fit_recorded(lm, stimuli, stats, design)

    def fit_recorded(self, lm: LoadedModel, stimuli: StimulusSet, stats: StatsStore,
                     design: Design | None = None) -> "Localizer":
        """`fit_stats` on statistics recorded from `stimuli` (here, by other processes, or resumed),
        with the stimuli's identity and design recorded."""
        design = design or self._resolve_design(sorted(stimuli.labels), stimuli)
        info = {"name": stimuli.name, "sha256": stimuli.content_hash(), "n": len(stimuli),
                "labels": stimuli.labels, "contrast": list(stimuli.contrast or ()), "source": stimuli.source,
                "bos": self.bos}
        return self.fit_stats(stats, model=lm.identity, stimuli=info, design=design,
                              widths={s.name: lm.layout.width(s) for s in lm.layout.sites(site_kinds(self.site))})

    def _resolve_design(self, labels: Sequence[str], stimuli: StimulusSet | None = None) -> Design:
        design = self._design_spec() or (stimuli.design if stimuli is not None else None)
        if design is None:
            design = Design.contrast(*labels) if len(labels) == 2 else Design.one_vs_rest()
        return design.resolve(labels)

    def fit_stats(self, stats: StatsStore, *, model: dict | None = None, stimuli: dict | None = None,
                  design: Design | None = None, widths: dict[str, int] | None = None) -> "Localizer":
        """Score and select from statistics alone (no model needed): merged from several processes,
        restored from disk, or just recorded."""
        kinds_recorded = self.statistic_kinds()
        kind = next(k for k in ("moments", "rows", "tokens", *kinds_recorded) if k in kinds_recorded)
        kinds = site_kinds(self.site)
        names = ordered_sites(stats, kind)
        self.sites_ = [site for site in map(Site.parse, names)
                       if site.kind in kinds and (self.layers is None or site.layer in self.layers)]
        if not self.sites_:
            raise NeurolocError(f"the statistics hold no {'/'.join(kinds)} sites ({kind}: {names or 'none'})")
        if len(self.sites_) != len(names):  # score only the sites asked for
            stats = stats.restricted(s.name for s in self.sites_)
        self.stats_ = stats
        self.design_ = design or self._resolve_design(stats.labels(kind))
        self.widths_ = [(widths or {}).get(s.name) or stats.get(kind, stats.labels(kind)[0], s.name).width
                        for s in self.sites_]
        self.model_ = dict(model or getattr(self, "model_", {}) or {})
        self.stimuli_ = stimuli or getattr(self, "stimuli_", {}) or {}
        self._score()
        self.means_ = self._means()
        self.units_ = self.select()
        return self

    def _score(self) -> None:
        scores: Scores = self.score_function(self.stats_, self.design_, **self.score_options())
        self.result_ = scores
        self.labels_ = scores.labels
        single = len(scores.labels) == 1
        self.scores_ = scores.values[0] if single else scores.values
        self.pvalues_ = None if scores.pvalues is None else (scores.pvalues[0] if single else scores.pvalues)
        self.p_fdr_ = None if self.pvalues_ is None else benjamini_hochberg(self.pvalues_)
        self.p_ = self.pvalues_  # neuroloc 0.1's names for the two-condition Welch localizer
        if single:
            for name, table in scores.columns.items():
                setattr(self, f"{name}_", table[0])
            if self.score_function.name in ("welch", "one_vs_rest_welch"):
                self.t_ = self.scores_

    def _means(self) -> dict[str, torch.Tensor]:
        """Mean activation of every hooked coordinate over the target label's tokens (all labels'
        when the design has no single target): the replacement values of mean lesions."""
        if not self.stats_.has("tokens"):
            return {}
        labels = [self.design_.labels[0]] if self.design_.kind == "contrast" else list(self.stats_.labels("tokens"))
        return {site: self.stats_.pooled("tokens", labels, site).mean().float().cpu()
                for site in self.stats_.sites("tokens")}

    def unit_magnitudes(self) -> np.ndarray:
        """Mean |activation| of every unit over the design's labels (from moments, rows or token sums,
        `StatsStore.mean_abs`): what magnitude-matched controls match."""
        self._check_fitted()
        labels = list(self.design_.labels)
        return np.concatenate([self.stats_.mean_abs(labels, site.name).cpu().numpy() for site in self.sites_])

    # -- selection --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise NeurolocError("the localizer is not fitted yet: call fit(lm, stimuli) or Localizer.load(dir)")

    def selection_groups(self) -> np.ndarray:
        """The group of every unit that selection counts within (a site kind, or each site when per layer)."""
        self._check_fitted()
        return self._groups(self.per_layer)

    def _groups(self, per_layer: bool) -> np.ndarray:
        """Selection groups per unit: the site kind, or each (layer, kind) site when per layer."""
        kinds = site_kinds(self.site)
        labels = [i if per_layer else kinds.index(s.kind) if self.per_kind else 0 for i, s in enumerate(self.sites_)]
        return np.repeat(labels, self.widths_)

    def _units(self, mask: np.ndarray) -> UnitSet:
        return UnitSet.from_flat(mask, self.sites_, self.widths_, model=self.model_)

    def _row_mask(self, row: int, percent, count, per_layer: bool, largest: bool) -> np.ndarray:
        values = self.result_.values[row]
        key = values if self.result_.larger_is_better else -values
        eligible = None
        if self.fdr is not None:
            if self.result_.pvalues is None:
                raise NeurolocError(f"fdr needs p-values, and score {self.score_function.name!r} has none")
            p_fdr = benjamini_hochberg(self.result_.pvalues[row])
            eligible = select_fdr(p_fdr, self.fdr) & ((key > 0) if largest else (key < 0))
        return self.result_.top(row, percent=percent, count=count, groups=self._groups(per_layer), eligible=eligible,
                                largest=largest, allow_fewer=self.fdr is not None)

    def get_support(self, percent: float | None = None, count: int | None = None) -> np.ndarray:
        """Boolean mask over the flat units (one row per label for multi-label designs)."""
        self._check_fitted()
        return self._mask(percent, count, self.per_layer, True)

    def _mask(self, percent, count, per_layer: bool, largest: bool) -> np.ndarray:
        if percent is None and count is None:
            percent, count = self.percent, self.count
            if percent is None and count is None:
                percent = 1.0
        if self.result_.support is not None and largest:
            masks = self.result_.support(percent, count)
        else:
            masks = np.stack([self._row_mask(r, percent, count, per_layer, largest)
                              for r in range(len(self.labels_))])
        return masks[0] if len(self.labels_) == 1 else masks

    def select(self, percent: float | None = None, count: int | None = None, *, per_layer: bool | None = None,
               largest: bool = True) -> UnitSet | LabeledUnits:
        """Re-select from the fitted scores (defaults: the constructor's); `largest=False` gives the
        least selective units. One label → a UnitSet; several → a LabeledUnits."""
        self._check_fitted()
        per_layer = self.per_layer if per_layer is None else per_layer
        masks = self._mask(percent, count, per_layer, largest)
        if len(self.labels_) == 1:
            return self._units(masks)
        return LabeledUnits({label: self._units(mask) for label, mask in zip(self.labels_, masks)})

    def band(self, low_percentile: float, high_percentile: float, like: UnitSet, seed: int = 0) -> UnitSet:
        """Random units from a percentile band of the score with `like`'s per-site counts (the paper's
        selectivity-matched control). Two-condition designs only."""
        self._check_fitted()
        if len(self.labels_) != 1:
            raise NeurolocError("band controls need a single-row score (a two-condition contrast)")
        counts = {i: c for i, c in enumerate(like.counts().get(s.name, 0) for s in self.sites_) if c}
        mask = select_band(self.scores_, low_percentile=low_percentile, high_percentile=high_percentile,
                           counts_per_group=counts, groups=self._groups(True), seed=seed,
                           exclude=like.flat_mask().numpy() if like.sites == self.sites_ else None)
        return self._units(mask)

    # -- tables and persistence --------------------------------------------------------------------
    def scores_frame(self, selected: UnitSet | LabeledUnits | None = None) -> pd.DataFrame:
        """One row per unit (two-condition designs: unit, site, layer, index, t, p, p_fdr, d, mean_a,
        mean_b, selected) or per (label, unit) for multi-label designs (score, p, p_fdr, selected and
        the score's further columns)."""
        self._check_fitted()
        selected = selected if selected is not None else self.units_
        base = UnitIndex(self.sites_, self.widths_).table().to_dict("series")
        if len(self.labels_) == 1 and self.score_function.name in ("welch", "one_vs_rest_welch"):
            return pd.DataFrame({**base, "t": self.t_, "p": self.p_, "p_fdr": self.p_fdr_, "d": self.d_,
                                 "mean_a": self.mean_a_, "mean_b": self.mean_b_,
                                 "selected": selected.flat_mask().numpy()})
        frames = []
        for row, label in enumerate(self.labels_):
            units = selected if isinstance(selected, UnitSet) else selected[label]
            frame = pd.DataFrame({**base, "label": label, "score": self.result_.values[row]})
            if self.result_.pvalues is not None:
                frame["p"] = self.result_.pvalues[row]
                frame["p_fdr"] = benjamini_hochberg(self.result_.pvalues[row])
            for name, table in self.result_.columns.items():
                frame[name] = table[row]
            frame["selected"] = units.flat_mask().numpy()
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def save(self, directory: str | Path) -> None:
        """Write units, scores, streamed statistics and unit means (for mean lesions) to `directory`."""
        self._check_fitted()
        directory = Path(directory)
        self.units_.save(directory)
        frame = self.scores_frame()
        atomic_write_with(directory / SCORES_FILE, lambda tmp: frame.to_parquet(tmp, index=False))
        self.stats_.save(directory / STATS_FILE)
        if self.means_:
            with atomic_path(directory / MEANS_FILE) as tmp:
                save_file({k: v.contiguous() for k, v in self.means_.items()}, str(tmp),
                          metadata={"labels": ",".join(self.design_.labels)})
        atomic_write_json(directory / LOCALIZER_FILE, {
            "params": self.get_params(), "design": self.design_.to_dict(),
            "sites": [s.name for s in self.sites_], "widths": self.widths_,
            "model": self.model_, "stimuli": self.stimuli_,
        })

    @classmethod
    def load(cls, directory: str | Path, score: ScoreCallable | None = None) -> "Localizer":
        """Restore a fitted localizer from a `neuroloc localize` output directory (a custom score
        callable must be passed again)."""
        directory = Path(directory)
        info_path = directory / LOCALIZER_FILE
        if not info_path.is_file():
            raise NeurolocError(f"{directory} holds no localizer output ({LOCALIZER_FILE} missing); "
                                f"run `neuroloc localize --out {directory}` first")
        try:
            info = json.loads(info_path.read_text())
            params = dict(info["params"])
            info["sites"], info["model"], info["stimuli"]  # noqa: B018 - present, or the record is damaged
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise NeurolocError(f"{info_path} is not a readable localizer record ({type(error).__name__}: {error}); "
                                "run `neuroloc localize` again into a new folder") from None
        if "settings" not in params:
            params.setdefault("bos", "tokenizer")  # neuroloc 0.1.0 recorded with the tokenizer's defaults
        if params.get("quantile") == 0.95 and params.get("score") != "lape":
            params["quantile"] = None  # neuroloc 0.1 recorded LAPE's default bar for every score
        if score is not None:
            params["score"] = score
        localizer = cls(**params)
        design = (Design(info["design"]["kind"], tuple(info["design"]["labels"])) if "design" in info
                  else Design.contrast(*info["contrast"]))  # neuroloc 0.1 output
        stats = StatsStore.load(directory / STATS_FILE)
        widths = dict(zip(info["sites"], info["widths"])) if "widths" in info else None
        localizer.fit_stats(stats, model=info["model"], stimuli=info["stimuli"], design=design, widths=widths)
        if (directory / MEANS_FILE).is_file() and not localizer.means_:
            localizer.means_ = load_file(str(directory / MEANS_FILE))
        saved = UnitSet.load(directory) if len(localizer.labels_) == 1 else LabeledUnits.load(directory)
        localizer.units_ = saved
        return localizer
