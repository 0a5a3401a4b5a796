"""Scoped hooks on the unmodified model: observe or edit sites, and stop the forward pass early.

Every context manager removes its handles on exit, exceptions included, and resolves every site up
front (an unknown site raises before anything runs).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch

from .layout import ModelLayout, Site

Observer = Callable[[torch.Tensor], None]
Editor = Callable[[torch.Tensor], torch.Tensor]


class StopForward(Exception):
    """Raised by a hook after the last layer a recording needs; caught by `run_forward`."""


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def hooks(
    layout: ModelLayout,
    *,
    observe: Mapping[Site, Observer] | None = None,
    edit: Mapping[Site, Editor] | None = None,
    stop_after_layer: int | None = None,
) -> Iterator[None]:
    """Install editors and observers on sites (editors run first, observers see the edited value).

    Residual sites hook a decoder layer's output, `mlp_gate` the gate activation's output; `mlp` and
    `attn` sites hook the input of the down projection / attention output projection. With `stop_after_layer`, the layer's output raises
    `StopForward`, so later blocks and the LM head never run (use `run_forward`).
    """
    observe, edit = dict(observe or {}), dict(edit or {})
    handles = []
    try:
        for site in sorted(set(observe) | set(edit)):
            module = layout.module(site)
            editor, observer = edit.get(site), observe.get(site)
            if layout.reads_output(site):
                def output_hook(_module, _args, output, editor=editor, observer=observer):
                    hidden = _hidden(output)
                    new = editor(hidden) if editor is not None else hidden
                    if observer is not None:
                        observer(new)
                    return _replace_hidden(output, new) if editor is not None else None

                handles.append(module.register_forward_hook(output_hook))
            else:
                def input_hook(_module, args, editor=editor, observer=observer):
                    value = args[0]
                    new = editor(value) if editor is not None else value
                    if observer is not None:
                        observer(new)
                    return (new, *args[1:]) if editor is not None else None

                handles.append(module.register_forward_pre_hook(input_hook))
        if stop_after_layer is not None:
            def stop(_module, _args, _output):
                raise StopForward

            layout.check(Site(stop_after_layer, "residual"))
            handles.append(layout.layers[stop_after_layer].register_forward_hook(stop))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_forward(model: torch.nn.Module, **batch) -> object | None:
    """Call the model; return its output, or None when a hook stopped it early."""
    try:
        return model(**batch)
    except StopForward:
        return None


@contextlib.contextmanager
def record(layout: ModelLayout, sites: list[Site], *, stop_early: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Capture raw activations (batch, tokens, coordinates) of `sites` for each forward pass run
    inside the block (the dict holds the latest pass). With `stop_early`, the pass ends after the
    last layer needed — call the model through `run_forward`."""
    captured: dict[str, torch.Tensor] = {}

    def keep(site: Site) -> Observer:
        return lambda value: captured.__setitem__(site.name, value.detach())

    stop = max(s.layer for s in sites) if stop_early and sites else None
    with hooks(layout, observe={s: keep(s) for s in sites}, stop_after_layer=stop):
        yield captured
