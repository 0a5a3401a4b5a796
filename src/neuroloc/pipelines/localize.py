"""The localize study: score every unit on a design, keep the most selective, write units and scores.

The recording checkpoints its statistics (every minute by default, and when interrupted) so a rerun of the
same command resumes; under `torchrun` / `accelerate launch` each process records a share of the stimuli
and every process fits the same localizer from the merged statistics (the main one writes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Each, InstanceOf, Interval, param
from ..errors import NeurolocError
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..parse import parse_layers, parse_list
from ..record.distributed import DistContext, merge_across_ranks, shard_stimuli
from ..report.figures import plot_layer_distribution, save_figure
from ..report.html import Section
from ..runner import RunContext, StudyConfig, StudyResult, run
from ..stimuli.base import StimulusSet
from ..stimuli.design import Design
from ..stimuli.registry import STIMULI, get_stimuli
from ..units import LabeledUnits
from . import fields

__all__ = ["LocalizeConfig", "LocalizeResult", "layer_table", "run_localize", "selection_summary"]


def _layers(value: Any) -> Any:
    return None if value == "all" else value


@dataclass(frozen=True, kw_only=True)
class LocalizeConfig(StudyConfig):
    """Localize selective units: score every unit on a design (a contrast, one-vs-rest, groups), keep the
    most selective."""

    command = "localize"
    title = "Localizer"
    shares_work = True

    stimuli: str = param("language", InstanceOf(str), flag="--localizer", aliases={"-l": None},
                         help="A built-in stimulus set (language, md, tom) or a CSV/TSV/JSONL file with a text "
                              "and a condition column.")
    stimuli_path: str | None = param(None, InstanceOf(str), None,
                                     help="The data of a built-in set (default: found under --data, else the "
                                          "installed package's copy).")
    data: str | None = fields.data_root()
    text_column: str = param("text", InstanceOf(str), help="The text column of a stimulus file.")
    condition_column: str = param("condition", InstanceOf(str), help="The condition column of a stimulus file.")
    design: str | None = param(None, InstanceOf(str), None, aliases={"--contrast": None, "--one-vs-rest": "one-vs-rest"},
                               help="What is compared: TARGET:CONTROL, one-vs-rest, groups (optionally :A,B,C), "
                                    "or a JSON design file (default: the stimuli's contrast, else one-vs-rest).")
    site: tuple[str, ...] = fields.sites()
    layers: tuple[int, ...] | None = param(None, Each(Interval(int, 0, None)), None, parse=parse_layers,
                                           coerce=_layers, help="Layers to score, e.g. 0-5,12 (default: all).")
    score: str = fields.score()
    absolute: bool = param(False, InstanceOf(bool), flag="--abs",
                           help="Test |activation| (the reference code's choice); a score option.")
    quantile: float | None = param(None, Interval(float, 0, 1, closed="left"), None,
                                   help="LAPE's activation-probability bar (default 0.95); a score option.")
    pooling: str = fields.pooling()
    percent: float | None = param(None, Interval(float, 0, 100, closed="right"), None,
                                  help="Top percent of each site kind's units (default: 1, unless --count).")
    count: int | None = param(None, Interval(int, 1, None), None, help="Top number of units instead of a percent.")
    per_layer: bool = param(False, InstanceOf(bool), help="Select within each layer.")
    fdr: float | None = param(None, Interval(float, 0, 1, closed="right"), None,
                              help="Keep only units whose BH-adjusted p is at most this.")

    def check(self) -> None:
        super().check()
        if self.percent is not None and self.count is not None:
            raise NeurolocError("percent (--percent) and count (--count): give at most one")
        self.design_spec()
        self.localizer().check_params()

    def design_spec(self) -> Design | None:
        """The design asked for (a file is read now)."""
        if self.design is None:
            return None
        if self.design.endswith(".json") or Path(self.design).is_file():
            return Design.from_file(self.design)
        return Design.parse(self.design)

    def localizer(self) -> Localizer:
        """The estimator this config describes, with its run settings."""
        return Localizer(list(self.site), score=self.score, design=self.design_spec(), pooling=self.pooling,
                         percent=self.percent, count=self.count, per_layer=self.per_layer, absolute=self.absolute,
                         fdr=self.fdr, layers=self.layers, quantile=self.quantile, settings=self.settings)

    def load_inputs(self) -> StimulusSet:
        design = self.design_spec()
        contrast = design.labels if design is not None and design.kind == "contrast" else None
        if self.stimuli in STIMULI:
            return get_stimuli(self.stimuli, seed=self.seed, contrast=contrast, path=self.stimuli_path,
                               data_root=self.data)
        return get_stimuli(self.stimuli, contrast=contrast, text_column=self.text_column,
                           condition_column=self.condition_column)

    def compute(self, lm: LoadedModel, ctx: RunContext, stimuli: StimulusSet) -> "LocalizeResult":
        localizer = self.localizer()
        checkpoint = None
        if ctx.checkpointing:
            key = ctx.key(lm, data=stimuli.content_hash(), study=self.identity())
            checkpoint = ctx.checkpoint("stats", key)
        recorded = localizer.record(lm, shard_stimuli(stimuli, ctx.dist), checkpoint=checkpoint)
        stats = merge_across_ranks(recorded, ctx.dist)
        localizer.fit_recorded(lm, stimuli, stats)  # on every rank: a next stage may share out its work
        return LocalizeResult(config=self, model=dict(lm.identity), localizer=localizer, stimuli=stimuli,
                              gate=lm.layout.describe()["mlp_gate"], world_size=ctx.dist.world_size,
                              summary=selection_summary(localizer))


def layer_table(localizer: Localizer) -> pd.DataFrame:
    """Per site and layer: units there and units selected (for several labels: selected for any)."""
    units = localizer.units_
    return pd.DataFrame((units.union() if isinstance(units, LabeledUnits) else units).per_layer_counts())


def selection_summary(localizer: Localizer) -> dict:
    """How many units were selected, overall, per site and per label."""
    units = localizer.units_
    if isinstance(units, LabeledUnits):
        union = units.union()
        return {"n_selected": len(union), "per_site": union.counts(),
                "per_label": {label: len(u) for label, u in units.items()}}
    return {"n_selected": len(units), "per_site": units.counts()}


@dataclass
class LocalizeResult(StudyResult):
    """A fitted localizer and the stimuli it was fitted on."""

    localizer: Localizer = None
    stimuli: StimulusSet = None
    gate: str = ""
    world_size: int = 1

    def __post_init__(self) -> None:
        counts = layer_table(self.localizer)
        title = f"{self.stimuli.name} localizer: top units per layer ({self.model.get('spec')})"
        self.figures = {"layers": plot_layer_distribution(counts, title=title)}
        self.counts = counts

    def write(self, folder: Path) -> None:
        self.localizer.save(folder)
        save_figure(self.figures["layers"], folder / "layers.png")

    def manifest_sections(self) -> dict[str, Any]:
        return {"stimuli": self.localizer.stimuli_ | {"metadata": self.stimuli.metadata},
                "design": self.localizer.design_.to_dict(), "mlp_gate": self.gate, "world_size": self.world_size}

    def sections(self) -> list[Section]:
        loc = self.localizer
        n = self.summary["n_selected"]
        rule = (f"top {loc.count} units" if loc.count else f"top {loc.percent or 1:g}% of units") + \
            (" per layer" if loc.per_layer else "") + (f", BH-adjusted p ≤ {loc.fdr:g}" if loc.fdr else "")
        text = (f"{n} unit{'s' if n != 1 else ''} selected from {len(self.stimuli)} stimuli "
                f"({self.stimuli.name}; design: {loc.design_}). Score: {loc.score_function.name}; "
                f"{loc.pooling}-token pooling; {rule}; BOS policy: {loc.bos}.")
        table = self.counts.groupby("site")[["n_units", "n_selected"]].sum().reset_index()
        return [Section("Selected units", text=text, figures=[self.figures["layers"]], tables=[table])]

    def headline(self) -> str:
        return f"{self.summary['n_selected']} units selected"


def run_localize(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out_dir: str | Path,
                 *, seed: int = 0, extra_parameters: dict | None = None, checkpoint_every: int | None = 20,
                 dist: DistContext | None = None) -> Localizer:
    """Deprecated (use `neuroloc.run(LocalizeConfig(...), out)`): fit `localizer` on `stimuli` in memory
    and write its outputs into `out_dir` through the runner."""
    warnings.warn("run_localize is deprecated; use neuroloc.run(neuroloc.LocalizeConfig(...), out)",
                  DeprecationWarning, stacklevel=2)
    params = localizer.get_params()
    config = LocalizeConfig(stimuli=stimuli.name, site=tuple(localizer.site if not isinstance(localizer.site, str)
                                                              else parse_list(localizer.site)),
                            design=params["design"], score=params["score"], absolute=localizer.absolute,
                            quantile=localizer.quantile, pooling=localizer.pooling, percent=localizer.percent,
                            count=localizer.count, per_layer=localizer.per_layer, fdr=localizer.fdr,
                            layers=None if localizer.layers is None else tuple(localizer.layers),
                            settings=localizer.settings, seed=seed, model=lm.identity.get("spec", "in-memory"))
    from ..runner import RunOptions

    result = run(config, out_dir, lm=lm, inputs=stimuli, options=RunOptions(
        checkpoint_every=0.0, checkpoint_batches=checkpoint_every, overwrite=True, keep_checkpoints=True))
    fitted = result.localizer
    localizer.__dict__.update(fitted.__dict__)
    return localizer
