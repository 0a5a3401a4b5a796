"""What the hooks on a model touch, so that scoring knows which work an intervention cannot change.

An intervention declares its `Footprint`: the sites it edits, the token positions (None: every
position) and whether its edit of a token reads only that token's activation (`token_local`; true for
neuroloc's built-in lesions — a custom editor may read the batch, e.g. its example ids or positions).
`declared(model, footprint, manager)` enters `manager` (which installs hooks) and records the hooks it
added as that footprint's. `hook_state(model)` reports the active footprints and whether any hook on
the model declares nothing: then nothing may be reused and every pass runs the whole model.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import ContextManager, Iterator, Sequence, Union

import torch

from .layout import Site

__all__ = ["Footprint", "HookState", "declared", "hook_keys", "hook_state"]

Positions = Union[None, str, Sequence[int]]


@dataclass(frozen=True)
class Footprint:
    """The sites an intervention edits, at which token `positions` (None: all), and whether the edit
    of a token reads nothing but that token's activation (`token_local`)."""

    sites: frozenset[Site]
    positions: Positions = None
    token_local: bool = False

    def intact_layers(self, n_layers: int) -> int:
        """How many leading layers compute exactly as in the intact model, output included (before the
        hooks on that output): a residual site of layer l edits l's output, any other site edits inside l."""
        return min((site.layer + 1 if site.kind == "residual" else site.layer for site in self.sites),
                   default=n_layers)


@dataclass(frozen=True)
class HookState:
    """The footprints active on a model, and whether a hook that declares nothing is installed."""

    footprints: tuple[Footprint, ...]
    undeclared: bool

    def intact_layers(self, n_layers: int) -> int:
        """Leading layers no hook changes (0 when an undeclared hook may change anything)."""
        if self.undeclared:
            return 0
        return min((fp.intact_layers(n_layers) for fp in self.footprints), default=n_layers)

    @property
    def position_wise(self) -> bool:
        """Every hook edits each token from that token's activation alone, at every position: a token's
        activations then depend only on the tokens before it, so texts may share their common prefix."""
        return not self.undeclared and all(fp.token_local and fp.positions is None for fp in self.footprints)


_DECLARED: "weakref.WeakKeyDictionary[torch.nn.Module, list[tuple[Footprint, frozenset]]]" = \
    weakref.WeakKeyDictionary()
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


def hook_keys(model: torch.nn.Module) -> frozenset:
    """Identifiers of every forward (pre-)hook on the model's modules (hook ids are unique per process)."""
    return frozenset((name, key) for module in model.modules() for name in _HOOK_DICTS
                     for key in getattr(module, name, {}))


@contextlib.contextmanager
def declared(model: torch.nn.Module, footprint: Footprint, manager: ContextManager) -> Iterator[Footprint]:
    """Enter `manager` (which installs hooks on `model`) and declare the hooks it added as `footprint`."""
    before = hook_keys(model)
    with manager:
        entry = (footprint, hook_keys(model) - before)
        entries = _DECLARED.setdefault(model, [])
        entries.append(entry)
        try:
            yield footprint
        finally:
            entries.remove(entry)


def hook_state(model: torch.nn.Module) -> HookState:
    """The declared footprints on `model` and whether any other forward hook (or a global one) is active."""
    entries = list(_DECLARED.get(model, ()))
    known = frozenset().union(*(keys for _, keys in entries))
    global_hooks = bool(torch.nn.modules.module._global_forward_hooks) or \
        bool(torch.nn.modules.module._global_forward_pre_hooks)
    return HookState(tuple(fp for fp, _ in entries), global_hooks or bool(hook_keys(model) - known))
