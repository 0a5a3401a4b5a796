"""Install interventions on units through hooks, at every layer of the selected units — at every
position, or at the positions asked for (`positions=`: "last", or token positions counted over each
text's real tokens, negative from its end; like nnsight's per-position interventions).

Masks and per-site values are moved to the device and dtype of the tensor each hook sees (once per
device), never to "the model's device", so a model dispatched over several devices works.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Sequence, Union

import torch

from ..errors import NeurolocError
from ..models.footprint import Footprint, declared
from ..models.hooks import HookContext, hooks, takes_context
from ..models.layout import ModelLayout, Site
from ..models.loading import LoadedModel
from ..units import UnitSet
from .registry import Intervention

UnitFunction = Union[Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     Callable[[torch.Tensor, torch.Tensor, HookContext], torch.Tensor]]


def coordinate_mask(layout: ModelLayout, site: Site, unit_mask: torch.Tensor) -> torch.Tensor:
    """Expand a per-unit mask to the hooked tensor's coordinates (a head covers head_dim of them)."""
    return unit_mask.repeat_interleave(layout.head_dim_at(site.layer)) if site.kind == "attn" else unit_mask


class _PerDevice:
    """A tensor copied to each (device, dtype) it is asked for, once."""

    def __init__(self, tensor: torch.Tensor, keep_dtype: bool = False) -> None:
        self.tensor, self.keep_dtype, self.copies = tensor, keep_dtype, {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, None if self.keep_dtype else x.dtype)
        if key not in self.copies:
            self.copies[key] = self.tensor.to(device=x.device, dtype=None if self.keep_dtype else x.dtype)
        return self.copies[key]


def edited_sites(units: UnitSet) -> frozenset[Site]:
    """The sites holding a selected unit: the ones an intervention on `units` hooks."""
    return frozenset(site for site, mask in units.masks.items() if mask.any())


@contextlib.contextmanager
def intervene_per_site(lm: LoadedModel, units: UnitSet, make_fn: Callable[[Site], UnitFunction], *,
                       footprint: Footprint | None = None) -> Iterator[Footprint]:
    """Like `intervene`, with a function chosen per site (e.g. per-site replacement values). The hooks
    are declared as `footprint` (default: the units' sites, every position, edits that may read the
    batch), which scoring reads to reuse what the edit cannot change (`neuroloc.models.footprint`)."""
    units.check_compatible(lm.layout, lm.identity)
    footprint = Footprint(edited_sites(units)) if footprint is None else footprint
    editors = {}
    for site, mask in units.masks.items():
        if mask.any():
            coords = _PerDevice(coordinate_mask(lm.layout, site, mask), keep_dtype=True)
            fn = make_fn(site)
            if takes_context(fn, 2):
                editors[site] = lambda x, ctx, coords=coords, fn=fn: fn(x, coords.like(x), ctx)
            else:
                editors[site] = lambda x, coords=coords, fn=fn: fn(x, coords.like(x))
    with declared(lm.model, footprint, hooks(lm.layout, edit=editors)):
        yield footprint


def intervene(lm: LoadedModel, units: UnitSet, fn: UnitFunction) -> contextlib.AbstractContextManager:
    """Replace each selected site's activation x by fn(x, mask) — or fn(x, mask, context), a
    `HookContext` with the site and the batch — where mask is a boolean over x's last dim (True at the
    selected units' coordinates) on x's device. Only sites with a selected unit are hooked; the block's
    value is their `Footprint` (`fn` may read the batch, so prefixes are never shared under it)."""
    return intervene_per_site(lm, units, lambda site: fn)


Positions = Union[None, str, Sequence[int]]


def check_positions(positions: Positions) -> Positions:
    """None (every position), "last", or a sequence of ints; anything else is a one-line error."""
    if positions is None or positions == "last":
        return positions
    if isinstance(positions, str) or not isinstance(positions, Sequence) or not positions or \
            not all(isinstance(k, int) and not isinstance(k, bool) for k in positions):
        raise NeurolocError(f"positions must be None (every position), 'last' or a list of token positions "
                            f"(ints, negative from the end), got {positions!r}")
    return tuple(positions)


def position_mask(positions: Positions, x: torch.Tensor, context: HookContext) -> torch.Tensor:
    """Bool over the hooked tensor's tokens, `x.shape[:-1]`: the tokens that `positions` names.

    Positions count each row's real tokens (the batch's position ids, or its attention mask, so padding
    on either side does not move them; a prepended BOS is position 0). They need the batch declared —
    neuroloc's scorer and recorder, `run_forward` or `batch_context(attention_mask=...)` do — and a
    pass over the whole texts (not one cached generation step)."""
    mask = context.attention_mask
    tokens = tuple(x.shape[:-1]) if x.ndim == 3 else None
    if mask is None or (tokens is not None and tuple(mask.shape) != tokens) or \
            (tokens is None and mask.numel() != x.shape[0]):
        raise NeurolocError(
            "positions= needs each row's real tokens: run the model through neuroloc (scorer, recorder, "
            "run_forward) or inside batch_context(attention_mask=...) with the batch's mask; a pass that "
            "declares no batch, or one cached generation step, cannot be addressed by position")
    real = mask.to(x.device).bool()
    counted = context.positions
    counted = counted.to(x.device) if tuple(counted.shape) == tuple(real.shape) else \
        (real.long().cumsum(-1) - 1).clamp(min=0)
    length = counted.masked_fill(~real, -1).amax(1, keepdim=True) + 1
    wanted = [length - 1] if positions == "last" else [length + k if k < 0 else torch.full_like(length, k)
                                                       for k in positions]
    chosen = torch.zeros_like(real)
    for target in wanted:
        chosen |= counted == target
    return (chosen & real).reshape(x.shape[:-1])


class _PositionMasks:
    """`position_mask` once per batch, device and token shape, shared by every hooked site of a pass
    (a 30-layer lesion would otherwise recount the same positions 30 times per forward)."""

    def __init__(self, positions: Positions) -> None:
        self.positions, self.batch, self.masks = positions, None, {}

    def like(self, x: torch.Tensor, context: HookContext) -> torch.Tensor:
        if context.batch is not self.batch:
            self.batch, self.masks = context.batch, {}
        key = (x.device, tuple(x.shape[:-1]))
        if key not in self.masks:
            self.masks[key] = position_mask(self.positions, x, context)
        return self.masks[key]


def _site_values(lm: LoadedModel, units: UnitSet, spec: Intervention,
                 data: Mapping[str, torch.Tensor] | None) -> dict[Site, _PerDevice]:
    """Per hooked site, the intervention's data as a tensor over the site's coordinates."""
    name = spec.method.data
    if data is None:
        hint = " (the unit means stored by `neuroloc localize`)" if name == "means" else ""
        raise NeurolocError(f"lesion mode {spec.kind!r} needs {name}=: a tensor per site name{hint}")
    out = {}
    for site, mask in units.masks.items():
        if not mask.any():
            continue
        if site.name not in data:
            raise NeurolocError(f"lesion mode {spec.kind!r}: no {name} for site {site.name} (have {sorted(data)})")
        value = torch.as_tensor(data[site.name]).flatten()
        width = lm.layout.coordinate_width(site)
        if site.kind == "attn" and value.numel() == lm.layout.width(site):
            value = value.repeat_interleave(lm.layout.head_dim_at(site.layer))
        if value.numel() != width:
            raise NeurolocError(f"lesion mode {spec.kind!r}: {name} for {site.name} has {value.numel()} values; "
                                f"the site has {width} coordinates")
        out[site] = _PerDevice(value)
    return out


@contextlib.contextmanager
def lesion(lm: LoadedModel, units: UnitSet, mode: str | Intervention = "zero",
           means: Mapping[str, torch.Tensor] | None = None, *, positions: Positions = None,
           **data: Mapping[str, torch.Tensor]) -> Iterator[Footprint]:
    """Apply a registered intervention to `units` for the duration of the block; the block's value is
    the intervention's `Footprint` (the sites and positions it edits, and whether its kind edits each
    token from that token alone), which scoring reads to reuse the work the lesion cannot change.

    `mode`: "zero", "mean", "scale:K", "value", "add[:K]" or any registered identifier
    (`neuroloc.lesion.INTERVENTIONS`). Kinds that read per-site data take it as a keyword: `means=`
    (mean), `values=` (value), `vectors=` (add) — per site name, one value per unit or per hooked
    coordinate. `positions`: None (every position), "last" (each text's last token) or token positions
    (ints over each text's real tokens, negative from its end, e.g. [-1, -2]).
    """
    positions = check_positions(positions)
    spec = Intervention.parse(mode)
    kind = spec.method
    values: dict[Site, _PerDevice] = {}
    if kind.data is not None:
        data = {**data, "means": means} if means is not None else data
        values = _site_values(lm, units, spec, data.get(kind.data))

    where = _PositionMasks(positions) if positions is not None else None

    def make(site: Site) -> UnitFunction:
        value = values.get(site)

        def edit(x: torch.Tensor, mask: torch.Tensor, context: HookContext) -> torch.Tensor:
            edited = kind.edit(x, mask, spec.factor, None if value is None else value.like(x), context)
            return edited if where is None else torch.where(where.like(x, context)[..., None], edited, x)
        return edit

    footprint = Footprint(edited_sites(units), positions, token_local=kind.token_local)
    with intervene_per_site(lm, units, make, footprint=footprint):
        yield footprint
