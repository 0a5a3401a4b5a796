"""The atlas: every network on one model — localized with one setting, their overlaps, and the dissociation
matrix of their lesions against matched controls on every network's benchmark.

A study of studies: one localize child per registered localizer (`OUT/<network>/`, its own manifest; each
localizer's stimuli are recorded once) and, when asked for (`pos:NOUN`, `multilingual:fr`, `task:capital`), one
child study per kind (`OUT/pos/`, `OUT/multilingual/`, `OUT/task/`) whose labels become networks
(`pipelines.networks`); where a child cannot use the atlas-wide site, pooling or size, the manifest and the
report say what differs and why, and the overlap compares only networks on the same sites. Then one lesion plan
— the intact model, and for every network its units and its random and magnitude-matched control sets
(several seeds) — evaluated on every benchmark (per language and per relation for `multilingual_perplexity`
and `relations`, which join when such networks are asked for), each finished condition saved in the run's
item log (an interrupted run resumes with the conditions still to do; under torchrun the conditions are shared
out). The statistics (overlap against layer-matched chance, z against the controls, Crawford–Howell p, FDR,
verdicts) are `neuroloc.studies.atlas`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..config import Each, InstanceOf, Interval, Options, Valid, param
from ..errors import MissingData, NeurolocError
from ..evaluate.controls import ControlData
from ..evaluate.registry import BenchmarkSpec, parse_benchmarks
from ..lesion import Intervention
from ..localize.reliability import ReliabilityConfig
from ..localize.score_functions import SCORES, get_score, score_name
from ..models.loading import LoadedModel
from ..parse import parse_list
from ..report.atlas_figures import plot_dissociation, plot_overlap
from ..report.figures import plot_layer_distribution, save_figure
from ..report.html import Section
from ..runner import RunContext, StudyConfig, StudyResult, run
from ..settings import RunSettings
from ..studies.atlas import (benchmark_columns, chance_table, comparable_pairs, dissociation_cells,
                             dissociation_verdicts, network_overlap)
from . import fields
from .lesion import PlannedCondition, evaluate_plan, lesion_conditions
from .localize import LocalizeConfig
from .multilingual import MultilingualConfig
from .networks import (LOCALIZER_OWN, Network, NetworkSpec, default_own, differences, localizer_network,
                       multilingual_network, own_pair, parse_network, pos_network, task_network, unit_count)
from .pos import PosConfig
from .task import TaskConfig

__all__ = ["FULL", "AtlasConfig", "AtlasResult", "atlas"]

# Quick default: about 6k tokens per condition (the reasoning items' three solved examples are most of it):
# SmolLM2 took 17.5 CPU-minutes for 16 conditions (2 controls); the default 3 controls make 22.
QUICK_BENCHMARKS = parse_benchmarks("blimp:limit=1;reasoning:limit=3;theory_of_mind:limit=3")
# --full: what the paper-sized run changes (fields still at their quick defaults)
FULL = {"benchmarks": parse_benchmarks("blimp;syntaxgym;perplexity;reasoning;theory_of_mind"), "n_controls": 5,
        "max_items": None}
OWN = tuple(f"{network}:{benchmark}" for network, benchmark in LOCALIZER_OWN.items())
CHILD_STUDIES = {"pos": PosConfig, "multilingual": MultilingualConfig, "task": TaskConfig}


@dataclass(frozen=True, kw_only=True)
class AtlasConfig(StudyConfig):
    """Every network on one model: localize each (one site, pooling and size), their overlaps against chance,
    and the double-dissociation matrix of their lesions against matched controls."""

    command = "atlas"
    title = "Functional atlas"
    shares_work = True

    networks: tuple[str, ...] = param(("language", "md", "tom"), Each(InstanceOf(str)), parse=parse_list,
                                      help="The networks, comma-separated: registered localizers (language, md, "
                                           "tom) and, when their data is given, pos:CLASS (a UPOS class's key "
                                           "neurons), multilingual:LANG (a language's units), task:LABEL (a "
                                           "relation's units).")
    own: tuple[str, ...] = param(OWN, Each(Valid(own_pair, "NETWORK:BENCHMARK")), parse=parse_list,
                                 flag="--own-benchmarks",
                                 help="Each network's own benchmark (the one its lesion should hurt), as "
                                      "NETWORK:BENCHMARK pairs (pos:NOUN:perplexity; a language or relation "
                                      "column: multilingual_perplexity/fr, relations/capital); the verdicts compare "
                                      "these. Unpaired: pos → perplexity, multilingual:LANG → "
                                      "multilingual_perplexity/LANG, task:REL → relations/REL.")
    data: str | None = fields.data_root()
    site: tuple[str, ...] = fields.sites()
    pooling: str = fields.pooling()
    percent: float = param(1.0, Interval(float, 0, 100, closed="right"),
                           help="Every network's size: top percent of each site kind's units.")
    folds: int = param(2, Interval(int, 0, None),
                       help="Split-half reliability of every localizer's network from its one recording (K folds "
                            "by content); 0: skip it.")
    mode: str = fields.intervention()
    n_controls: int = fields.n_controls(3, minimum=2, help="Control sets per kind and network (quick default; "
                                                           "--full: 5); at least 2, for a control sd, but with 2 "
                                                           "no cell survives the FDR unless z is about 70.")
    control_kinds: tuple[str, ...] = fields.control_kinds(("random", "magnitude"))
    benchmarks: tuple[BenchmarkSpec, ...] = fields.benchmarks(
        QUICK_BENCHMARKS, "Benchmarks with options (quick default; --full: no limits, SyntaxGym and perplexity "
                          "too). Those without data are skipped, with a message, unless a network's own. A pos, "
                          "multilingual or task network's own benchmark joins when not listed.")
    max_items: int | None = param(20, Interval(int, 1, None), None,
                                  help="Items per column of the benchmarks that join for pos, multilingual and task "
                                       "networks (perplexity texts, held-out texts per language, test facts per "
                                       "relation; also the task study's test items) — quick default; --full: all.")
    pos_score: str = param("one_vs_rest_welch", Options(lambda: SCORES, noun="score"), parse=score_name,
                           help="The pos study's score: one_vs_rest_welch (the Welch t of word activations, fast) "
                                "or ig / gradxact (the attribution recipe; slow on a CPU).")
    task_items: str = param("relations", InstanceOf(str),
                            help="The task study's items: 'relations' (the built-in relation set) or a prompt–answer "
                                 "file (prompt, answer, label); its test split is the relations benchmark.")
    alpha: float = param(0.05, Interval(float, 0, 1, "neither"),
                         help="Level of the FDR across cells, of the chance tests and of the overlap marks.")
    full: bool = param(False, InstanceOf(bool),
                       help="The paper-sized run: full benchmarks (SyntaxGym too), all items and 5 controls (for the "
                            "fields left at their defaults).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.full:
            fields.apply_preset(self, FULL)

    def check(self) -> None:
        super().check()
        if self.folds == 1:
            raise NeurolocError("--folds: 1 is not allowed; give 0 (no reliability) or K ≥ 2")
        try:
            specs = self.specs()
        except NeurolocError as error:
            raise NeurolocError(f"networks (--networks): {error}") from None
        if len({s.name for s in specs}) != len(specs):
            raise NeurolocError("networks (--networks): name each network once")
        if Intervention.parse(self.mode).method.data == "means":
            lacking = [s.name for s in specs if s.kind in ("pos", "task")]
            if lacking:
                raise NeurolocError(f"mode (--mode): {self.mode} replaces units by their means, which the pos and task "
                                    f"studies do not record ({', '.join(lacking)}); use zero or scale:0")
        for kind in self.kinds():
            try:
                self.child_config(kind)
            except NeurolocError as error:
                raise NeurolocError(f"the atlas's {kind} study: {error}") from None
        names = {b.name for b in self.benchmark_specs()}
        for network, column in self.own_benchmarks().items():
            if column.partition("/")[0] not in names:
                raise NeurolocError(f"own benchmarks (--own-benchmarks): {column} is not among --benchmarks; "
                                    "add it there")

    def specs(self) -> list[NetworkSpec]:
        """The networks asked for, parsed (`pipelines.networks.parse_network`)."""
        return [parse_network(n) for n in self.networks]

    def kinds(self) -> dict[str, list[NetworkSpec]]:
        """Child study kind → its networks, for the kinds asked for (pos, multilingual, task; in that order)."""
        found: dict[str, list[NetworkSpec]] = {}
        for spec in self.specs():
            if spec.kind != "localize":
                found.setdefault(spec.kind, []).append(spec)
        return {kind: found[kind] for kind in CHILD_STUDIES if kind in found}

    def own_benchmarks(self) -> dict[str, str]:
        """Network → its own benchmark column, for the networks studied (in their order): the pairs given
        (`--own-benchmarks`; pairs naming other networks are not used), else a pos, multilingual or task
        network's default (`pipelines.networks.default_own`)."""
        pairs = dict(own_pair(p) for p in self.own)
        own = {}
        for spec in self.specs():
            column = pairs.get(spec.name) or default_own(spec)
            if column is not None:
                own[spec.name] = column
        return own

    def benchmark_specs(self) -> tuple[BenchmarkSpec, ...]:
        """--benchmarks, and the own benchmarks of pos, multilingual and task networks that it does not list:
        perplexity, multilingual_perplexity (the multilingual study's held-out split, the languages asked for) and
        relations (the task study's test split, the relations asked for), each bounded by --max-items."""
        specs, listed = list(self.benchmarks), {b.name for b in self.benchmarks}
        wanted: dict[str, list[str]] = {}
        for column in self.own_benchmarks().values():
            name, _, subset = column.partition("/")
            if name not in listed and name in ("perplexity", "multilingual_perplexity", "relations"):
                wanted.setdefault(name, [])
                if subset and subset not in wanted[name]:
                    wanted[name].append(subset)
        limit = {} if self.max_items is None else {"limit": self.max_items}
        for name, subsets in wanted.items():
            options: dict[str, Any] = dict(limit)
            if name == "multilingual_perplexity":
                child = self.child_config("multilingual")
                options.update(languages=",".join(subsets), n_identify=child.n_identify, n_heldout=child.n_heldout,
                               seed=child.seed)
            elif name == "relations":
                options["relations"] = ",".join(subsets)
                if self.task_items != "relations":
                    options["path"] = self.task_items
            specs.append(BenchmarkSpec(name, options))
        return tuple(specs)

    def localize_config(self, network: str) -> LocalizeConfig:
        reliability = (ReliabilityConfig(folds=self.folds, permutations=0, stability=(), confounds=False,
                                         seed=self.seed) if self.folds else None)
        return self.derived(LocalizeConfig, stimuli=network, data=self.data, site=self.site, pooling=self.pooling,
                            percent=self.percent, reliability=reliability)

    def child_config(self, kind: str, k: int | None = None) -> StudyConfig:
        """The child study of `kind` with the atlas's setting where it can take it (`differences`: where not);
        `k`, the units per label of pos and task, is set once the model's widths are known."""
        labels = tuple(s.label for s in self.kinds().get(kind, ()))
        common = {"model": self.model, "seed": self.seed, "data": self.data, "n_controls": self.n_controls}
        sized = {"k": k} if k is not None else {}
        if kind == "pos":
            return PosConfig(**common, settings=self.settings.replace(max_tokens=None), site=self.site,
                             classes=labels, score=self.pos_score, **sized)
        if kind == "task":
            pooling = self.pooling if self.pooling in ("last", "mean") else "last"
            return TaskConfig(**common, settings=self.settings.replace(max_tokens=None), items=self.task_items,
                              site=self.site, pooling=pooling, modes=(self.mode,), dose=(), max_test=self.max_items,
                              **sized)
        return MultilingualConfig(**common, settings=self.settings, percent=self.percent, deactivation=False,
                                  steering=False)

    def differs(self) -> list[dict]:
        """Every setting a child study could not take from the atlas: what it used instead and why."""
        return [row for kind in self.kinds() for row in differences(
            kind, site=self.site, pooling=self.pooling, percent=self.percent, folds=self.folds,
            max_tokens=self.settings.max_tokens,
            pos_attribution=get_score(self.pos_score).needs == ("attribution",))]

    def load_inputs(self) -> dict[str, Any]:
        own = {column.partition("/")[0] for column in self.own_benchmarks().values()}
        benchmarks, skipped = [], []
        for spec in self.benchmark_specs():
            try:
                benchmarks.append(spec.build(self.settings, self.data))
            except MissingData as missing:
                if spec.name in own:
                    raise
                skipped.append(f"{spec.name} ({missing})")
        self._check_columns(benchmarks)
        children = {kind: self.child_config(kind).load_inputs() for kind in self.kinds()}
        self._check_labels(children)
        return {"stimuli": {s.name: self.localize_config(s.name).load_inputs() for s in self.specs()
                            if s.kind == "localize"},
                "children": children, "benchmarks": benchmarks, "skipped": skipped}

    def _check_columns(self, benchmarks: list) -> None:
        """Every own column of a per-language or per-relation benchmark is among the subsets it will report."""
        subsets = {b.name: b.subsets for b in benchmarks}
        for network, column in self.own_benchmarks().items():
            name, _, subset = column.partition("/")
            if subset and subsets.get(name) is not None and subset not in subsets[name]:
                raise NeurolocError(f"own benchmarks (--own-benchmarks): {network}'s {column} is not scored; the "
                                    f"{name} benchmark reports {', '.join(subsets[name])} (add {subset} to its "
                                    "options, or leave --benchmarks without it so it joins with every column needed)")

    def _check_labels(self, children: dict[str, Any]) -> None:
        """Every label asked for is in its child study's data (before any model work)."""
        for kind, specs in self.kinds().items():
            inputs = children[kind]
            if kind == "pos":
                present = sorted({tag for sentence in inputs.train for tag in sentence.upos})
            elif kind == "multilingual":
                present = list(inputs.corpus.languages)
            else:
                present = list(inputs.identification.label_names)
            for spec in specs:
                if spec.label not in present:
                    raise NeurolocError(f"networks (--networks): {spec.name}: the {kind} study's data has no "
                                        f"{spec.label}; it has {', '.join(present)}")

    def compute(self, lm: LoadedModel, ctx: RunContext, inputs: dict[str, Any]) -> "AtlasResult":
        for skipped in inputs["skipped"]:
            ctx.warn(f"skipping {skipped}")
        children: dict[str, StudyResult] = {}
        networks: dict[str, Network] = {}
        kinds = self.kinds()
        for spec in self.specs():
            if spec.kind == "localize":
                children[spec.name] = self.localize_config(spec.name).run(lm, ctx.child(spec.name),
                                                                          inputs["stimuli"][spec.name])
        widths = {kind: sum(lm.layout.width(site) for site in lm.layout.sites(kind)) for kind in self.site}
        for kind in kinds:
            k = unit_count(self.percent, widths) if kind != "multilingual" else None
            children[kind] = self.child_config(kind, k).run(lm, ctx.child(kind), inputs["children"][kind])
        build = {"pos": pos_network, "multilingual": multilingual_network, "task": task_network}
        for spec in self.specs():
            networks[spec.name] = (localizer_network(spec.name, children[spec.name]) if spec.kind == "localize"
                                   else build[spec.kind](spec, children[spec.kind]))
        intervention = Intervention.parse(self.mode)
        plan = [PlannedCondition({"network": "", "condition": "intact", "seed": 0}, None)]
        for name, network in networks.items():
            network.units.check_compatible(lm.layout, lm.identity)
            controls = ControlData(magnitudes=network.magnitudes, scores=network.scores)
            data = {"means": network.means} if network.means else {}
            plan += [PlannedCondition({"network": name, "condition": c, "seed": s}, u, data) for c, s, u in
                     lesion_conditions(network.units, n_controls=self.n_controls, control_kinds=self.control_kinds,
                                       seed=self.seed, data=controls)]
        frames = evaluate_plan(lm, ctx, plan, inputs["benchmarks"], intervention=intervention, positions=None,
                               data={}, key={"study": self.identity()})
        results = pd.concat(frames, ignore_index=True)
        results = results[["network", "condition", "seed", "n_units", "benchmark", "subset", "metric", "value"]]
        return AtlasResult(config=self, model=dict(lm.identity), children=children, networks=networks,
                           results=results, benchmarks=inputs["benchmarks"], skipped=inputs["skipped"],
                           intervention=str(intervention))


@dataclass
class AtlasResult(StudyResult):
    """The child studies (`children`: a localize result per localizer, one pos / multilingual / task result),
    the networks read from them (`networks`), the lesion rows (`results`) and the tables computed from them:
    `overlap` (pairs on the same sites), `overlap_sites` (pairs × sites), `layers` (units per network and
    layer), `chance` (the intact model per benchmark column), `cells` (the dissociation matrix), `verdicts` (per
    pair of networks) and `differs` (settings a child study could not take from the atlas)."""

    networks: dict[str, Network] = None
    results: pd.DataFrame = None
    benchmarks: list = None
    skipped: list = None
    intervention: str = ""

    def __post_init__(self) -> None:
        config: AtlasConfig = self.config
        networks = list(self.networks)
        names = benchmark_columns(self.results[self.results.condition == "intact"])
        units = {n: self.networks[n].units for n in networks}
        scores = {n: self.networks[n].scores for n in networks}
        pairs, self.not_compared = comparable_pairs(units)
        self.overlap, self.overlap_sites = network_overlap(units, scores, pairs=pairs) if pairs else (None, None)
        halves = [network.reliability for network in self.networks.values() if network.reliability is not None]
        self.reliability = pd.concat(halves, ignore_index=True) if halves else None
        self.layers = pd.concat([self.networks[n].layers() for n in networks], ignore_index=True)
        self.differs = pd.DataFrame(config.differs(), columns=["study", "setting", "atlas", "used", "why"])
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
                        "not_compared": [f"{a}/{b}" for a, b in self.not_compared],
                        "verdicts": {f"{r.network_a}/{r.network_b}": r.verdict for r in self.verdicts.itertuples()},
                        "at_chance": [b for b, a in zip(self.chance.benchmark, self.chance.above_chance)
                                      if not pd.isna(a) and not a],
                        "skipped_benchmarks": self.skipped}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, by the name of its CSV file."""
        tables = {"lesion_results": self.results, "dissociation": self.cells, "verdicts": self.verdicts,
                  "chance": self.chance, "layers": self.layers}
        if len(self.differs):
            tables["differs"] = self.differs
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
        return {"networks": {n: network.source for n, network in self.networks.items()},
                "own_benchmarks": self.config.own_benchmarks(),
                "differs": self.differs.to_dict("records"),
                "overlap_not_compared": {f"{a}/{b}": "on different sites" for a, b in self.not_compared},
                "benchmarks": [{"name": b.name, "source": b.source} for b in self.benchmarks],
                "intervention": self.intervention,
                "statistics": {"z": "sign * (control mean - target) / control sd; sign -1 for perplexity",
                               "p": "one-sided Crawford-Howell t test of the target against the control seeds",
                               "fdr": "Benjamini-Hochberg across cells, per control kind",
                               "overlap_p": "exact: sum of per-site hypergeometrics (layer-matched random sets)"},
                "reliability": f"split-half of the localizers' networks, {self.config.folds} folds by content"
                if self.config.folds else "not computed (--folds 0)"}

    def sections(self) -> list[Section]:
        config: AtlasConfig = self.config
        counts = ", ".join(f"{n} {k}" for n, k in self.summary["n_units"].items())
        text = (f"Each network: top {config.percent:g}% of {', '.join(config.site)} units by its localizer's score "
                f"({config.pooling}-token pooling), selected across layers: {counts} units.")
        if self.config.kinds():
            text += (" pos, multilingual and task networks come from one child study of each kind (pos/, "
                     "multilingual/, task/), with the atlas's setting except where listed under \"Settings that "
                     "differ\".")
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
        if len(self.differs):
            sections.append(Section(
                "Settings that differ", text="Where a child study could not take the atlas-wide setting: what it used "
                                             "instead, and why.", tables=[self.differs]))
        apart = ("" if not self.not_compared else " Not compared (their units lie on different sites, so shared "
                 "units mean nothing): " + ", ".join(f"{a} × {b}" for a, b in self.not_compared) + ".")
        if self.overlap is not None:
            overlap = self.overlap[["network_a", "network_b", "n_a", "n_b", "n_both", "jaccard", "jaccard_chance",
                                    "jaccard_chance_high", "p_overlap", "r"]]
            sections.append(Section(
                "Overlap", text="Shared units of every pair of networks on the same sites against layer-matched random "
                                "sets of the same sizes (exact: a sum of per-site hypergeometrics); r correlates the "
                                "two networks' scores over every unit." + apart,
                figures=[self.figures["overlap"]], tables=[overlap.round(4)]))
        elif apart:
            sections.append(Section("Overlap", text=apart.strip()))
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
