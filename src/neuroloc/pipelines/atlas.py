"""The atlas: every network on one model — localized with one setting, their overlaps, and the dissociation
matrix of their lesions against matched controls on every network's benchmark.

A study of studies: one localize child per network (`OUT/<network>/`, its own manifest; each localizer's
stimuli are recorded once), then one lesion plan — the intact model, and for every network its units and its
random and magnitude-matched control sets (several seeds) — evaluated on every benchmark, each finished
condition saved in the run's item log (an interrupted run resumes with the conditions still to do; under
torchrun the conditions are shared out). The statistics (overlap against layer-matched chance, z against the
controls, Crawford–Howell p, FDR, verdicts) are `neuroloc.studies.atlas`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import Each, InstanceOf, Interval, Options, Valid, param
from ..errors import MissingData, NeurolocError
from ..evaluate.controls import ControlData
from ..evaluate.registry import BenchmarkSpec, parse_benchmarks
from ..lesion import Intervention
from ..localize.reliability import ReliabilityConfig
from ..models.loading import LoadedModel
from ..parse import parse_list
from ..report.atlas_figures import plot_dissociation, plot_overlap
from ..report.figures import plot_layer_distribution, save_figure
from ..report.html import Section
from ..runner import RunContext, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..stimuli.registry import STIMULI
from ..studies.atlas import chance_table, dissociation_cells, dissociation_verdicts, network_overlap
from . import fields
from .lesion import PlannedCondition, evaluate_plan, lesion_conditions, unit_magnitudes
from .localize import LocalizeConfig, LocalizeResult, layer_table

__all__ = ["FULL", "AtlasConfig", "AtlasResult", "atlas"]

# Quick default: about 6k tokens per condition (the reasoning items' three solved examples are most of it):
# SmolLM2 took 17.5 CPU-minutes for 16 conditions (2 controls); the default 3 controls make 22.
QUICK_BENCHMARKS = parse_benchmarks("blimp:limit=1;reasoning:limit=3;theory_of_mind:limit=3")
# --full: what the paper-sized run changes (fields still at their quick defaults)
FULL = {"benchmarks": parse_benchmarks("blimp;syntaxgym;perplexity;reasoning;theory_of_mind"), "n_controls": 5}
OWN = ("language:blimp", "md:reasoning", "tom:theory_of_mind")


def _pair(text: Any) -> tuple[str, str]:
    network, sep, benchmark = str(text).partition(":")
    if not sep or not network.strip() or not benchmark.strip():
        raise NeurolocError(f"takes NETWORK:BENCHMARK pairs (e.g. md:reasoning), got {text!r}")
    return network.strip(), benchmark.strip()


@dataclass(frozen=True, kw_only=True)
class AtlasConfig(StudyConfig):
    """Every network on one model: localize each (one site, pooling and size), their overlaps against chance,
    and the double-dissociation matrix of their lesions against matched controls."""

    command = "atlas"
    title = "Functional atlas"
    shares_work = True

    networks: tuple[str, ...] = param(("language", "md", "tom"), Each(Options(lambda: STIMULI, noun="localizer")),
                                      parse=parse_list, help="The networks: registered localizers, comma-separated.")
    own: tuple[str, ...] = param(OWN, Each(Valid(_pair, "NETWORK:BENCHMARK")), parse=parse_list,
                                 flag="--own-benchmarks",
                                 help="Each network's own benchmark (the one its lesion should hurt), as "
                                      "NETWORK:BENCHMARK pairs; the verdicts compare these.")
    data: str | None = fields.data_root()
    site: tuple[str, ...] = fields.sites()
    pooling: str = fields.pooling()
    percent: float = param(1.0, Interval(float, 0, 100, closed="right"),
                           help="Every network's size: top percent of each site kind's units.")
    folds: int = param(2, Interval(int, 0, None),
                       help="Split-half reliability of every network from its one recording (K folds by content); "
                            "0: skip it.")
    mode: str = fields.intervention()
    n_controls: int = fields.n_controls(3, minimum=2, help="Control sets per kind and network (quick default; "
                                                           "--full: 5); at least 2, for a control sd, but with 2 "
                                                           "no cell survives the FDR unless z is about 70.")
    control_kinds: tuple[str, ...] = fields.control_kinds(("random", "magnitude"))
    benchmarks: tuple[BenchmarkSpec, ...] = fields.benchmarks(
        QUICK_BENCHMARKS, "Benchmarks with options (quick default; --full: no limits, SyntaxGym and perplexity "
                          "too). Those without data are skipped, with a message, unless a network's own.")
    alpha: float = param(0.05, Interval(float, 0, 1, "neither"),
                         help="Level of the FDR across cells, of the chance tests and of the overlap marks.")
    full: bool = param(False, InstanceOf(bool),
                       help="The paper-sized run: full benchmarks (SyntaxGym too) and 5 controls (for the fields "
                            "left at their defaults).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.full:
            fields.apply_preset(self, FULL)

    def check(self) -> None:
        super().check()
        if self.folds == 1:
            raise NeurolocError("--folds: 1 is not allowed; give 0 (no reliability) or K ≥ 2")
        if len(set(self.networks)) != len(self.networks):
            raise NeurolocError("networks (--networks): name each network once")
        own = self.own_benchmarks()
        names = {b.name for b in self.benchmarks}
        for network, benchmark in own.items():
            if benchmark not in names:
                raise NeurolocError(f"own benchmarks (--own-benchmarks): {benchmark} is not among --benchmarks; "
                                    "add it there")

    def own_benchmarks(self) -> dict[str, str]:
        """Network → its own benchmark, for the networks studied (in their order; pairs naming other networks
        are not used)."""
        pairs = dict(_pair(p) for p in self.own)
        return {n: pairs[n] for n in self.networks if n in pairs}

    def localize_config(self, network: str) -> LocalizeConfig:
        reliability = (ReliabilityConfig(folds=self.folds, permutations=0, stability=(), confounds=False,
                                         seed=self.seed) if self.folds else None)
        return self.derived(LocalizeConfig, stimuli=network, data=self.data, site=self.site, pooling=self.pooling,
                            percent=self.percent, reliability=reliability)

    def load_inputs(self) -> dict[str, Any]:
        own = set(self.own_benchmarks().values())
        benchmarks, skipped = [], []
        for spec in self.benchmarks:
            try:
                benchmarks.append(spec.build(self.settings, self.data))
            except MissingData as missing:
                if spec.name in own:
                    raise
                skipped.append(f"{spec.name} ({missing})")
        return {"stimuli": {n: self.localize_config(n).load_inputs() for n in self.networks},
                "benchmarks": benchmarks, "skipped": skipped}

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: dict[str, Any]) -> "AtlasResult":
        for skipped in inputs["skipped"]:
            ctx.warn(f"skipping {skipped}")
        localized: dict[str, LocalizeResult] = {
            n: self.localize_config(n).run(lm, ctx.child(n), inputs["stimuli"][n]) for n in self.networks}
        intervention = Intervention.parse(self.mode)
        plan = [PlannedCondition({"network": "", "condition": "intact", "seed": 0}, None)]
        for network, result in localized.items():
            localizer = result.localizer
            localizer.units_.check_compatible(lm.layout, lm.identity)
            controls = ControlData(magnitudes=unit_magnitudes(localizer), scores=np.asarray(localizer.scores_))
            data = {"means": localizer.means_} if localizer.means_ else {}
            plan += [PlannedCondition({"network": network, "condition": c, "seed": s}, u, data) for c, s, u in
                     lesion_conditions(localizer.units_, n_controls=self.n_controls,
                                       control_kinds=self.control_kinds, seed=self.seed, data=controls)]
        frames = evaluate_plan(lm, ctx, plan, inputs["benchmarks"], intervention=intervention, positions=None,
                               data={}, key={"study": self.identity()})
        results = pd.concat(frames, ignore_index=True)
        results = results[["network", "condition", "seed", "n_units", "benchmark", "subset", "metric", "value"]]
        return AtlasResult(config=self, model=dict(lm.identity), children=dict(localized), results=results,
                           benchmarks=inputs["benchmarks"], skipped=inputs["skipped"], intervention=str(intervention))


@dataclass
class AtlasResult(StudyResult):
    """The networks' localizers (children), the lesion rows (`results`) and the tables computed from them:
    `overlap` (pairs), `overlap_sites` (pairs × sites), `layers` (units per network and layer), `chance` (the
    intact model per benchmark), `cells` (the dissociation matrix) and `verdicts` (per pair of networks)."""

    results: pd.DataFrame = None
    benchmarks: list = None
    skipped: list = None
    intervention: str = ""

    def __post_init__(self) -> None:
        config: AtlasConfig = self.config
        networks = list(config.networks)
        names = list(dict.fromkeys(self.results[self.results.condition == "intact"].benchmark))
        units = {n: self.children[n].localizer.units_ for n in networks}
        scores = {n: self.children[n].localizer.scores_ for n in networks}
        self.overlap, self.overlap_sites = network_overlap(units, scores) if len(networks) > 1 else (None, None)
        halves = [self.children[n].reliability.tables["split_half"].assign(network=n) for n in networks
                  if self.children[n].reliability is not None]
        self.reliability = pd.concat(halves, ignore_index=True) if halves else None
        self.layers = pd.concat([layer_table(self.children[n].localizer).assign(network=n) for n in networks],
                                ignore_index=True)
        self.chance = chance_table(self.results[self.results.condition == "intact"], names, config.alpha)
        self.cells = dissociation_cells(self.results, networks, names, config.control_kinds, alpha=config.alpha,
                                        chance=self.chance)
        self.verdict_kind = "random" if "random" in config.control_kinds else config.control_kinds[0]
        self.verdicts = dissociation_verdicts(self.cells, config.own_benchmarks(), self.verdict_kind)
        self.figures = {"layers": plot_layer_distribution(self.layers, title="Units per layer, every network",
                                                          group="network"),
                        "dissociation": plot_dissociation(self.cells, networks, names, self.verdict_kind)}
        if self.overlap is not None:
            self.figures["overlap"] = plot_overlap(self.overlap, networks, config.alpha)
        self.summary = {"n_units": {n: len(u) for n, u in units.items()},
                        "verdicts": {f"{r.network_a}/{r.network_b}": r.verdict for r in self.verdicts.itertuples()},
                        "at_chance": [b for b, a in zip(self.chance.benchmark, self.chance.above_chance)
                                      if not pd.isna(a) and not a],
                        "skipped_benchmarks": self.skipped}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, by the name of its CSV file."""
        tables = {"lesion_results": self.results, "dissociation": self.cells, "verdicts": self.verdicts,
                  "chance": self.chance, "layers": self.layers}
        if self.overlap is not None:
            tables |= {"overlap": self.overlap, "overlap_sites": self.overlap_sites}
        if self.reliability is not None:
            tables["reliability"] = self.reliability
        return tables

    def write(self, folder: Path) -> None:
        for name, table in self.tables.items():
            table.to_csv(folder / f"{name}.csv", index=False)
        for name, figure in self.figures.items():
            save_figure(figure, folder / f"{name}.png")

    def manifest_sections(self) -> dict[str, Any]:
        return {"networks": {n: self.children[n].localizer.stimuli_ for n in self.config.networks},
                "own_benchmarks": self.config.own_benchmarks(),
                "benchmarks": [{"name": b.name, "source": b.source} for b in self.benchmarks],
                "intervention": self.intervention,
                "statistics": {"z": "sign * (control mean - target) / control sd; sign -1 for perplexity",
                               "p": "one-sided Crawford-Howell t test of the target against the control seeds",
                               "fdr": "Benjamini-Hochberg across cells, per control kind",
                               "overlap_p": "exact: sum of per-site hypergeometrics (layer-matched random sets)"},
                "reliability": f"split-half, {self.config.folds} folds by content" if self.config.folds
                else "not computed (--folds 0)"}

    def sections(self) -> list[Section]:
        config: AtlasConfig = self.config
        counts = ", ".join(f"{n} {k}" for n, k in self.summary["n_units"].items())
        text = (f"Each network: top {config.percent:g}% of {', '.join(config.site)} units by its localizer's score "
                f"({config.pooling}-token pooling), selected across layers: {counts} units.")
        by_network = self.layers.groupby("network", sort=False)[["n_units", "n_selected"]].sum().reset_index()
        tables = [by_network]
        if self.reliability is not None:
            overall = self.reliability[self.reliability.site == "all"]
            tables.append(overall[["network", "label", "fold_a", "fold_b", "n_a", "n_b", "n_both", "jaccard",
                                   "jaccard_chance", "p_overlap", "r", "r_spearman_brown"]].round(4))
            text += (f" Split-half reliability: the same rule on each of {config.folds} folds of a network's stimuli "
                     "(by content, from the one recording): shared units against layer-matched chance, and the "
                     "correlation of the scores (Spearman–Brown: projected to all stimuli).")
        else:
            text += " Split-half reliability was not computed (--folds 0)."
        sections = [Section("The networks", text=text, figures=[self.figures["layers"]], tables=tables)]
        if self.overlap is not None:
            overlap = self.overlap[["network_a", "network_b", "n_a", "n_b", "n_both", "jaccard", "jaccard_chance",
                                    "jaccard_chance_high", "p_overlap", "r"]]
            sections.append(Section(
                "Overlap", text="Shared units of every pair of networks against layer-matched random sets of the same "
                                "sizes (exact: a sum of per-site hypergeometrics); r correlates the two networks' "
                                "scores over every unit.",
                figures=[self.figures["overlap"]], tables=[overlap.round(4)]))
        kinds = list(config.control_kinds)
        columns = ["network", "benchmark", "metric", "intact", "target", "damage"] + \
            [c for k in kinds for c in (f"{k}_mean", f"z_{k}", f"p_{k}", f"q_{k}")] + ["significant", "intact_chance"]
        at_chance = self.summary["at_chance"]
        chance_text = (f"At chance in the intact model (cells greyed out, never significant): {', '.join(at_chance)}."
                       if at_chance else "No benchmark with a chance level is at chance in the intact model.")
        text = (f"Each network's units ({self.intervention}) and {config.n_controls} control sets per kind "
                f"({', '.join(kinds)}) lesioned in turn; z = damage beyond the control mean in control sds (> 0: the "
                "network's lesion hurts more); p: one-sided Crawford–Howell test against the control seeds; q: "
                f"Benjamini–Hochberg across cells per control kind; * significant (q ≤ {config.alpha:g} and z > 0 "
                f"against every control kind). {chance_text}")
        sections.append(Section("Dissociation matrix", text=text, figures=[self.figures["dissociation"]],
                                tables=[self.cells[columns].round(4), self.chance.round(4)]))
        lines = [f"{r.network_a} × {r.network_b}: {r.verdict} — {r.reason}" for r in self.verdicts.itertuples()]
        sections.append(Section(
            "Dissociations", text="\n".join(lines) or "One network: nothing to compare.",
            tables=[self.verdicts.round(3)],
            caption=f"A's side holds when A's lesion significantly hurts A's benchmark and B's lesion does not "
                    f"(z against {self.verdict_kind} controls, larger for A); double = both sides."))
        if self.skipped:
            sections.append(Section("Benchmarks skipped", text="\n".join(f"No data: {s}" for s in self.skipped)))
        return sections

    def headline(self) -> str:
        verdicts = "; ".join(f"{k}: {v}" for k, v in self.summary["verdicts"].items())
        return f"{len(self.config.networks)} networks lesioned; {verdicts or 'no pairs'}; see report.html"


def atlas(lm: LoadedModel, networks: Sequence[str] = ("language", "md", "tom"),
          benchmarks: str | Sequence[Any] | None = None, *, out: str | Path | None = None,
          settings: RunSettings | None = None, **options: Any) -> AtlasResult:
    """The atlas of `networks` on `lm`: the same tables as `neuroloc atlas` (`result.tables`: overlap,
    dissociation, verdicts, chance, lesion_results, ...). Options are `AtlasConfig`'s fields (`percent`,
    `n_controls`, `own`, `data`, ...); with `out`, every output is written there through the runner."""
    fields_ = {"networks": tuple(networks), **options}
    if benchmarks is not None:
        fields_["benchmarks"] = benchmarks
    config = AtlasConfig(model=lm.identity.get("spec", "in-memory"), settings=settings or RunSettings(), **fields_)
    return run(config, out, lm=lm) if out is not None else config.run(lm)
