"""Interventions on units through hooks: zero them, replace them by their mean, or scale them.

`lesion(lm, units, "zero" | "mean" | "scale:K")` applies at every layer and position of the selected
units; a lesioned model is still just the model, so any benchmark can consume it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch

from .errors import NeurolocError
from .models.hooks import hooks
from .models.layout import ModelLayout, Site
from .models.loading import LoadedModel
from .units import UnitSet

UnitFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def coordinate_mask(layout: ModelLayout, site: Site, unit_mask: torch.Tensor) -> torch.Tensor:
    """Expand a per-unit mask to the hooked tensor's coordinates (a head covers head_dim of them)."""
    return unit_mask.repeat_interleave(layout.head_dim) if site.kind == "attn" else unit_mask


@contextlib.contextmanager
def intervene_per_site(lm: LoadedModel, units: UnitSet, make_fn: Callable[[Site], UnitFunction]) -> Iterator[None]:
    """Like `intervene`, with a function chosen per site (e.g. per-site replacement values)."""
    units.check_compatible(lm.layout, lm.identity)
    editors = {}
    for site, mask in units.masks.items():
        if mask.any():
            coords = coordinate_mask(lm.layout, site, mask).to(lm.device)
            fn = make_fn(site)
            editors[site] = lambda x, coords=coords, fn=fn: fn(x, coords)
    with hooks(lm.layout, edit=editors):
        yield


def intervene(lm: LoadedModel, units: UnitSet, fn: UnitFunction) -> contextlib.AbstractContextManager:
    """Replace each selected site's activation x by fn(x, mask), mask a boolean over x's last dim
    (True at the selected units' coordinates). Only sites with a selected unit are hooked."""
    return intervene_per_site(lm, units, lambda site: fn)


@dataclass(frozen=True)
class Intervention:
    """A parsed mode: zero, mean, or scale by `factor` (×0 suppress, ×2 enhance)."""

    kind: str
    factor: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> "Intervention":
        if spec in ("zero", "mean"):
            return cls(spec)
        if spec.startswith("scale:"):
            try:
                return cls("scale", float(spec.split(":", 1)[1]))
            except ValueError:
                pass
        raise NeurolocError(f"unknown lesion mode {spec!r}; use 'zero', 'mean' or 'scale:K' (e.g. scale:2)")

    def __str__(self) -> str:
        return f"scale:{self.factor:g}" if self.kind == "scale" else self.kind


@contextlib.contextmanager
def lesion(lm: LoadedModel, units: UnitSet, mode: str | Intervention = "zero",
           means: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Lesion `units` for the duration of the block.

    `mean` needs `means`: per site name, the mean activation of each hooked coordinate on a reference
    text set (the localizer stores them for its target condition).
    """
    spec = mode if isinstance(mode, Intervention) else Intervention.parse(mode)
    if spec.kind == "zero":
        fn: UnitFunction = lambda x, m: x.masked_fill(m, 0)  # noqa: E731
        with intervene(lm, units, fn):
            yield
        return
    if spec.kind == "scale":
        fn = lambda x, m: x * torch.where(m, spec.factor, 1.0).to(x.dtype)  # noqa: E731
        with intervene(lm, units, fn):
            yield
        return
    if means is None:
        raise NeurolocError("lesion mode 'mean' needs unit means: use the output directory of `neuroloc localize`")
    missing = [site.name for site, mask in units.masks.items() if mask.any() and site.name not in means]
    if missing:
        raise NeurolocError(f"lesion mode 'mean': no stored means for sites {missing}")
    values = {name: value.to(lm.device) for name, value in means.items()}

    def replace_with_mean(site: Site) -> UnitFunction:
        value = values[site.name]
        return lambda x, m: torch.where(m, value.to(x.dtype), x)

    with intervene_per_site(lm, units, replace_with_mean):
        yield
