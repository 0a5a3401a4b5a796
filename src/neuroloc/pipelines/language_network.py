"""The language-network study: the paper end to end — localize the language network on the Fedorenko
2010 stimuli, lesion it against random and magnitude-matched controls at several sizes, optionally align
the units with brain recordings, and write one report.

A study of studies: its children are a localize study (`localize/`), a lesion study (`lesion/`) and, with
recordings, an alignment (`align/`), each with its own manifest; every lesion size is re-selected from the
one localizer fit. Under torchrun the processes share the stimuli, then the lesion conditions; the main
process aligns and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..config import Factory, InstanceOf, Interval, param
from ..errors import MissingData, NeurolocError
from ..evaluate.registry import BenchmarkSpec, parse_benchmarks
from ..localize.reliability import ReliabilityConfig
from ..models.loading import LoadedModel
from ..models.untrained import untrained_model
from ..report.figures import plot_layer_distribution
from ..report.html import Section
from ..runner import RunContext, StudyConfig, StudyResult
from ..stimuli.base import StimulusSet
from . import fields
from .align import AlignConfig, AlignInputs
from .lesion import LesionConfig, LesionInputs, LesionResult
from .localize import LocalizeConfig, LocalizeResult
from .reliability import reliability_field

__all__ = ["FULL", "LanguageNetworkConfig", "LanguageNetworkResult", "untrained_lesion_table"]

QUICK_BENCHMARKS = parse_benchmarks("blimp:limit=3;syntaxgym:limit=3;perplexity:limit=50")
# --full: what the paper-sized run changes (fields still at their quick defaults)
FULL = {"benchmarks": parse_benchmarks("blimp,syntaxgym,perplexity"), "n_controls": 5,
        "sizes": (0.125, 0.25, 0.5, 1.0)}


@dataclass(frozen=True, kw_only=True)
class LanguageNetworkConfig(StudyConfig):
    """The language network: localize it (sentences vs non-word strings), lesion it at several sizes against
    matched controls, evaluate BLiMP, SyntaxGym and perplexity, optionally align it with brain recordings,
    and write report.html."""

    command = "language-network"
    title = "The language network"
    shares_work = True

    stimuli_path: str | None = param(None, InstanceOf(str), None,
                                     help="The Fedorenko 2010 CSV folder (default: fedorenko2010/ under the data "
                                          "root, else the brainscore-language package's copy).")
    data: str | None = fields.data_root()
    site: tuple[str, ...] = fields.sites()
    pooling: str = fields.pooling()
    sizes: tuple[float, ...] = fields.sizes((0.25, 0.5, 1.0), "Lesion sizes (percent of each site kind's units).")
    mode: str = fields.intervention()
    n_controls: int = fields.n_controls(2, minimum=1, help="Control sets per kind and size (quick default; "
                                                           "--full: 5).")
    control_kinds: tuple[str, ...] = fields.control_kinds(("random", "magnitude"))
    benchmarks: tuple[BenchmarkSpec, ...] = fields.benchmarks(
        QUICK_BENCHMARKS, "Benchmarks with options (quick default; --full: no limits). Those without data are "
                          "skipped, with a message.")
    full: bool = param(False, InstanceOf(bool),
                       help="The paper-sized run: full benchmarks, 5 controls, sizes 0.125–1% (for the fields "
                            "left at their defaults).")
    recordings: str | None = param(None, InstanceOf(str), None, aliases={"-r": None},
                                   help="Brain recordings (.nc, CSV/TSV/Parquet): align the language units with "
                                        "them (see `neuroloc align`).")
    align_controls: int = param(10, Interval(int, 0, None),
                                help="Matched random unit sets for the alignment (with --recordings).")
    align_options: dict = param(Factory(dict), InstanceOf(dict), cli=False,
                                help="Further `AlignConfig` fields for the alignment (Python only).")
    reliability: ReliabilityConfig | None = reliability_field(
        "the localizer stimuli; with --null untrained:SEEDS each untrained copy's own units are lesioned in that "
        "copy too")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.full:
            fields.apply_preset(self, FULL)

    def localize_config(self) -> LocalizeConfig:
        return self.derived(LocalizeConfig, stimuli="language", stimuli_path=self.stimuli_path, data=self.data,
                            site=self.site, pooling=self.pooling, percent=max(self.sizes),
                            reliability=self.reliability)

    def lesion_config(self) -> LesionConfig:
        return self.derived(LesionConfig, units="localize", mode=self.mode, benchmarks=self.benchmarks,
                            data=self.data, n_controls=self.n_controls, control_kinds=self.control_kinds,
                            sizes=self.sizes)

    def align_config(self) -> AlignConfig:
        """The alignment of the largest unit set (read from the localize child), every layer too."""
        return self.derived(AlignConfig, recordings=str(self.recordings), units="localize",
                            n_controls=self.align_controls, **{"layers": "all", **self.align_options})

    def load_inputs(self) -> dict[str, Any]:
        benchmarks, skipped = [], []
        for spec in self.benchmarks:
            try:
                benchmarks.append(spec.build(self.settings, self.data))
            except MissingData as missing:
                skipped.append(f"{spec.name} ({missing})")
        if not benchmarks:
            raise NeurolocError("no benchmark has data here: " + "; ".join(skipped))
        recordings = self.align_config().read_recordings() if self.recordings is not None else None
        return {"stimuli": self.localize_config().load_inputs(), "benchmarks": benchmarks, "skipped": skipped,
                "recordings": recordings}

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: dict[str, Any]) -> "LanguageNetworkResult":
        for skipped in inputs["skipped"]:
            ctx.warn(f"skipping {skipped}")
        stimuli: StimulusSet = inputs["stimuli"]
        localized: LocalizeResult = self.localize_config().run(lm, ctx.child("localize"), stimuli)
        localizer = localized.localizer
        largest = localizer.select(percent=max(self.sizes))
        lesion_inputs = LesionInputs(largest, localizer, inputs["benchmarks"], self.settings)
        lesioned: LesionResult = self.lesion_config().run(lm, ctx.child("lesion"), lesion_inputs)
        children: dict[str, StudyResult] = {"localize": localized, "lesion": lesioned}
        for name, fitted in (localized.reliability.untrained_fits.items() if localized.reliability else ()):
            seed = int(name.split(":")[1])
            fresh = untrained_model(lm, seed)
            units = fitted.select(percent=max(self.sizes))
            children[f"lesion-untrained-{seed}"] = self.lesion_config().run(
                fresh, ctx.child(f"lesion-untrained-{seed}"), LesionInputs(units, fitted, inputs["benchmarks"],
                                                                           self.settings))
            del fresh
        if inputs.get("recordings") is not None and ctx.dist.is_main:
            recordings, source = inputs["recordings"]
            children["align"] = self.align_config().run(lm, ctx.child("align"), AlignInputs(recordings, largest, source))
        timings = {f"{name}_s": child.timings.get("total_s") for name, child in children.items()}
        return LanguageNetworkResult(config=self, model=dict(lm.identity), children=children, timings=timings,
                                     skipped=inputs["skipped"],
                                     summary={"n_units": len(largest), "skipped_benchmarks": inputs["skipped"]})


def untrained_lesion_table(children: dict[str, StudyResult]) -> pd.DataFrame | None:
    """The trained lesion's summary rows (overall subsets and perplexity, largest size) beside each untrained
    copy's (`lesion-untrained-SEED` children): model, benchmark, subset, metric, intact, target, controls'
    means and effects; None without untrained copies."""
    names = ["lesion"] + sorted(n for n in children if n.startswith("lesion-untrained-"))
    if len(names) == 1:
        return None
    frames = []
    for name in names:
        table = children[name].table
        table = table[(table.subset == "overall") | (table.benchmark == "perplexity")]
        table = table[table.percent == table.percent.max()] if table.percent.notna().any() else table
        frames.append(table.assign(model="trained" if name == "lesion" else
                                   "untrained:" + name.removeprefix("lesion-untrained-")))
    out = pd.concat(frames, ignore_index=True)
    return out[["model", *[c for c in out.columns if c != "model"]]]


@dataclass
class LanguageNetworkResult(StudyResult):
    """The children's results (`localize`, `lesion`, optionally `align`) and one report over them."""

    skipped: list = None

    def manifest_sections(self) -> dict[str, Any]:
        lesion: LesionResult = self.children["lesion"]
        return {"stimuli": self.children["localize"].localizer.stimuli_,
                "benchmarks": [{"name": b.name, "source": b.source} for b in lesion.inputs.benchmarks]}

    def sections(self) -> list[Section]:
        localizer = self.children["localize"].localizer
        largest = max(self.config.sizes)
        counts = pd.DataFrame(localizer.select(percent=largest).per_layer_counts())
        text = (f"Top {largest:g}% of {', '.join(self.config.site)} units by Welch t (sentences > non-words, "
                f"{localizer.pooling}-token pooling), selected across all layers.")
        sections = [Section("Where the language units are", text=text,
                            figures=[plot_layer_distribution(counts, title=f"Language-selective units per layer "
                                                                           f"(top {largest:g}%)")],
                            tables=[counts.groupby("site")[["n_units", "n_selected"]].sum().reset_index()])]
        sections += self.children["lesion"].sections()
        if self.children["localize"].reliability is not None:
            sections.append(self.children["localize"].sections()[-1])  # Is this unit set real?
        untrained = untrained_lesion_table(self.children)
        if untrained is not None:
            sections.append(Section(
                "What training adds: the same lesion in untrained copies",
                text=("Each untrained copy (the architecture freshly initialised by its own _init_weights, seeded) "
                      "localized with the same rule; its own top units lesioned in that copy against its own "
                      "matched controls, on the same benchmarks. An untrained network's behaviour is at floor, so "
                      "its effects say how large a lesion effect the architecture and the selection rule give "
                      "without training; the trained row is the one above."),
                tables=[untrained.round(4)]))
        if "align" in self.children:
            sections += self.children["align"].sections()
        if self.skipped:
            sections.append(Section("Benchmarks skipped", text="\n".join(f"No data: {s}" for s in self.skipped)))
        return sections

    def headline(self) -> str:
        return f"{self.summary['n_units']} language units localized and lesioned; see report.html"

