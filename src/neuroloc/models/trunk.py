"""Run a model from a stored residual stream: skip the layers an intervention cannot change.

A lesion that edits only layers ≥ L leaves layers < L computing exactly as in the intact model, so the
residual stream leaving layer L − 1 (the "trunk" at level L) can be captured once and reused. Both
directions work on the unmodified model through the layer list of its layout (`ModelLayout.layers`):

- `capture(layout, levels)` stores, during an ordinary forward pass, the output of layer L − 1 for each
  level L — before any hook on that output, so an edit of the residual site L − 1 is not captured;
- `resume(layout, level, hidden)` temporarily replaces the `forward` of layers 0..L − 1: the first L − 1
  return their input unchanged, layer L − 1 returns `hidden`; hooks on layer L − 1's output still run
  (a residual edit there applies to the stored value), and everything above runs as usual.

Embeddings, position encodings and the attention mask are still computed (cheap); a layer whose output
is a tuple carrying anything but the hidden state (a cache, a second stream) cannot be resumed and says
so (`TrunkUnsupported`), and callers fall back to the whole model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .layout import ModelLayout

__all__ = ["Captured", "TrunkUnsupported", "capture", "resume"]

_MISSING = object()


class TrunkUnsupported(RuntimeError):
    """The layers' outputs carry more than the hidden state: this model cannot be resumed mid-way."""


def _hidden_only(output) -> tuple[torch.Tensor, int | None]:
    """(hidden state, tuple length or None for a bare tensor); refuses tuples carrying anything else."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor) and \
            all(item is None for item in output[1:]):
        return output[0], len(output)
    raise TrunkUnsupported(f"a decoder layer returns {type(output).__name__} with more than its hidden state")


@dataclass
class Captured:
    """What `capture` saw in the latest pass: the residual entering each level, and the layers' output
    form (`arity`: None for a bare tensor, else the tuple's length), which `resume` must reproduce."""

    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    arity: int | None = None


@contextlib.contextmanager
def capture(layout: ModelLayout, levels: Sequence[int]) -> Iterator[Captured]:
    """For every forward pass in the block, `found.hidden[L]` is a copy of layer L − 1's output (the
    residual entering layer L) before any other hook on it. Levels must be in 1..n_layers."""
    found = Captured()
    handles = []

    def keeper(level: int):
        def keep(_module, _args, output):
            hidden, found.arity = _hidden_only(output)
            found.hidden[level] = hidden.detach().clone()
        return keep

    try:
        for level in sorted(set(levels)):
            if not 1 <= level <= layout.n_layers:
                raise ValueError(f"trunk level {level} is outside 1..{layout.n_layers}")
            handles.append(layout.layers[level - 1].register_forward_hook(keeper(level), prepend=True))
        yield found
    finally:
        for handle in handles:
            handle.remove()


def _passthrough(arity: int | None):
    def forward(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return hidden if arity is None else (hidden, *([None] * (arity - 1)))
    return forward


def _constant(value: torch.Tensor, arity: int | None):
    def forward(*args, **kwargs):
        fresh = value.clone()  # hooks or layers above may write into their input: the stored trunk stays intact
        return fresh if arity is None else (fresh, *([None] * (arity - 1)))
    return forward


@contextlib.contextmanager
def resume(layout: ModelLayout, level: int, hidden: torch.Tensor, arity: int | None) -> Iterator[None]:
    """Inside the block, a forward pass starts at layer `level` from `hidden` (the residual stream
    entering it, shaped like the batch's). Layers below only hand it on, in the output form `arity`
    (`Captured.arity`); their original `forward` is restored on exit, exceptions included."""
    if not 1 <= level <= layout.n_layers:
        raise ValueError(f"trunk level {level} is outside 1..{layout.n_layers}")
    saved = []
    try:
        for index, layer in enumerate(layout.layers[:level]):
            saved.append((layer, layer.__dict__.get("forward", _MISSING)))
            layer.forward = _constant(hidden, arity) if index == level - 1 else _passthrough(arity)
        yield
    finally:
        for layer, original in saved:
            if original is _MISSING:
                del layer.forward
            else:
                layer.forward = original
