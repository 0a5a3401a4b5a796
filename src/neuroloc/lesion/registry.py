"""The intervention registry: stable identifiers → intervention kinds, and parsed specs ("scale:2").

Adding an intervention is one new module in `neuroloc/lesion/` defining an `InterventionKind`
subclass, plus one line in `INTERVENTIONS` below (or `register_intervention(kind)` from user code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import NeurolocError
from ..models.hooks import HookContext

__all__ = ["INTERVENTIONS", "Intervention", "InterventionKind", "register_intervention"]


class InterventionKind:
    """One way of changing the selected units' activations.

    `name` is the stable identifier; `argument` says whether a number follows it ("none",
    "optional" with `default`, "required": `scale:2`); `data` names the keyword of `lesion()` holding
    the per-site tensors it reads (e.g. "means"), or None. `edit` returns the new activation.
    `token_local`: the edit of a token reads only that token's activation, the mask, the factor and the
    data — never the context — so scoring may share the common prefix of texts under it (declare it
    only when true).
    """

    name: ClassVar[str]
    argument: ClassVar[str] = "none"
    default: ClassVar[float | None] = None
    data: ClassVar[str | None] = None
    usage: ClassVar[str] = ""
    token_local: ClassVar[bool] = False

    def edit(self, x: torch.Tensor, mask: torch.Tensor, factor: float | None, value: torch.Tensor | None,
             context: HookContext) -> torch.Tensor:
        """`x`: the site's (batch, tokens, coordinates) activation; `mask`: bool over coordinates (True
        at the selected units); `value`: this site's data (on x's device, x's dtype) or None."""
        raise NotImplementedError


@dataclass(frozen=True)
class Intervention:
    """A parsed mode: a registered kind and its numeric argument (`factor`), e.g. "scale:2"."""

    kind: str
    factor: float | None = None

    @classmethod
    def parse(cls, spec: "str | Intervention") -> "Intervention":
        if isinstance(spec, Intervention):
            return spec
        name, sep, argument = str(spec).partition(":")
        kind = INTERVENTIONS.get(name)
        if kind is None:
            raise NeurolocError(f"unknown lesion mode {spec!r}; use one of {', '.join(_usages())}")
        if not sep:
            if kind.argument == "required":
                raise NeurolocError(f"lesion mode {name!r} needs a number: {kind.usage}")
            return cls(name, kind.default)
        if kind.argument == "none":
            raise NeurolocError(f"lesion mode {name!r} takes no argument; write {name!r}")
        try:
            return cls(name, float(argument))
        except ValueError:
            raise NeurolocError(f"lesion mode {spec!r}: {argument!r} is not a number; {kind.usage}") from None

    @property
    def method(self) -> InterventionKind:
        return INTERVENTIONS[self.kind]

    def __str__(self) -> str:
        kind = self.method
        if kind.argument == "none" or (kind.argument == "optional" and self.factor == kind.default):
            return self.kind
        return f"{self.kind}:{self.factor:g}"


def _usages() -> list[str]:
    return [kind.usage or name for name, kind in INTERVENTIONS.items()]


def register_intervention(kind: InterventionKind) -> None:
    """Make `kind` available to `lesion()` and `--mode` under `kind.name`."""
    INTERVENTIONS[kind.name] = kind


def _builtins() -> dict[str, InterventionKind]:
    from .add import Add
    from .mean import Mean
    from .scale import Scale
    from .unroute import Unroute
    from .value import Value
    from .zero import Zero

    return {kind.name: kind for kind in (Zero(), Mean(), Scale(), Value(), Add(), Unroute())}


INTERVENTIONS: dict[str, InterventionKind] = _builtins()
