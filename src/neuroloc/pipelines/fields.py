"""Fields that several studies share, declared once: sites, pooling, sizes, controls, the intervention,
benchmarks, the data root and the score — so a setting means the same thing and is checked the same way in
every study."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..config import Each, InstanceOf, Interval, Options, Valid, param
from ..evaluate.controls import CONTROLS
from ..evaluate.registry import BENCHMARKS, BenchmarkSpec, benchmark_specs, parse_benchmarks
from ..lesion import INTERVENTIONS, Intervention
from ..localize.score_functions import SCORES, score_name
from ..models.layout import SITE_KINDS
from ..parse import parse_floats, parse_list
from ..record.pooling import POOLINGS

__all__ = ["apply_preset", "benchmarks", "control_kinds", "data_root", "intervention", "n_controls", "pooling", "score", "sites",
           "sizes", "units_fold"]


def sites(default: tuple[str, ...] = ("residual",), help: str = "Site kinds, comma-separated.") -> Any:
    return param(default, Each(Options(lambda: SITE_KINDS, noun="site kind")), parse=parse_list, help=help)


def pooling(default: str = "last", choices: Any = None,
            help: str = "How each text's tokens become one row.") -> Any:
    return param(default, Options(choices or (lambda: POOLINGS), noun="pooling"), help=help)


def score(default: str = "welch", help: str = "How units are scored.", aliases: dict | None = None) -> Any:
    """A registered score (the one namespace of every study; short aliases such as `ap` are accepted and
    recorded by their registered name)."""
    return param(default, Options(lambda: SCORES, noun="score"), parse=score_name, aliases=aliases, help=help)


def sizes(default: tuple[float, ...] | None, help: str) -> Any:
    """Unit-set sizes in percent of each site kind's units (`--sizes`, formerly `--percent`)."""
    constraints = (Each(Interval(float, 0, 100, closed="right")),) + ((None,) if default is None else ())
    return param(default, *constraints, parse=parse_floats, aliases={"--percent": None}, help=help)


def n_controls(default: int, minimum: int = 0, help: str = "Control sets (seeds) per kind and size.",
               aliases: dict | None = None) -> Any:
    """The number of control sets (`--controls`): one name for it in every study (`aliases`: its old flags)."""
    return param(default, Interval(int, minimum, None), flag="--controls", aliases=aliases, help=help)


def control_kinds(default: tuple[str, ...]) -> Any:
    return param(default, Each(Options(lambda: CONTROLS, noun="control kind")), parse=parse_list,
                 flag="--control-kind", help="Control kinds, comma-separated.")


def intervention(default: str = "zero", help: str = "The intervention: zero, mean, scale:K (scale:0 suppresses, "
                                                    "scale:2 enhances), value, add:K, or unroute (router units: "
                                                    "remove the experts from routing).") -> Any:
    return param(default, Valid(Intervention.parse, "an intervention: " + ", ".join(INTERVENTIONS)),
                 flag="--mode", help=help)


def benchmarks(default: tuple, help: str) -> Any:
    return param(default, Each(InstanceOf(BenchmarkSpec), empty=True), parse=parse_benchmarks,
                 coerce=benchmark_specs, help=help + f" Registered: {', '.join(BENCHMARKS)}.")


def data_root() -> Any:
    return param(None, InstanceOf(str), None, help="Data root laid out like ../shared/data (fedorenko2010/, blimp/, "
                                                    "syntaxgym/, ud/); default: $NEUROLOC_DATA, then ../shared/data.")


def units_fold() -> Any:
    """`--fold K`: the units chosen on fold K of the localizer's stimuli alone (a `neuroloc localize --folds`
    output keeps them in folds/fold-K/)."""
    return param(None, Interval(int, 0, None), None, flag="--fold",
                 help="Use the units chosen on this fold of the localizer's stimuli alone (--units must be a "
                      "`neuroloc localize --folds K` output; its folds/fold-K/).")


def apply_preset(config: Any, preset: Mapping[str, Any]) -> None:
    """Set a preset's values (e.g. `--full`) on the fields of a frozen `config` still at their defaults, so a
    value given explicitly wins over the preset."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, value in preset.items():
        if getattr(config, name) == defaults[name]:
            object.__setattr__(config, name, value)
