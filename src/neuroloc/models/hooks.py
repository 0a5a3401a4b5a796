"""Scoped hooks on the unmodified model: observe or edit sites, and stop the forward pass early.

Every context manager removes its handles on exit, exceptions included, and resolves every site up
front (an unknown site raises before anything runs).

Hooks know what they edit: code that runs a forward pass declares the batch with `batch_context`
(example ids of the rows, attention mask, position ids; `run_forward` declares the mask and
positions of the batch it is given), and an editor or observer that takes a second argument receives
a `HookContext` (the site and that batch). Position- or example-specific interventions — patching one
example's activation from another input, a steering vector at some positions — are built on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Mapping, Sequence, Union

import torch

from .layout import ModelLayout, Site
from .moe import install_experts, install_router
from .streams import LayerShape, put_back, text_view

__all__ = ["BatchContext", "Editor", "HookContext", "Observer", "StopForward", "batch_context", "current_batch",
           "hooks", "input_device", "record", "run_forward", "takes_context"]


@dataclass(frozen=True)
class BatchContext:
    """The batch a forward pass runs on. `example_ids[b]` names row b (e.g. its index in the caller's
    dataset); `attention_mask` and `position_ids` are (batch, tokens). Any of them may be unknown (None)."""

    example_ids: tuple[int, ...] | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None

    @property
    def positions(self) -> torch.Tensor | None:
        """Position of every token: the position ids when given, else counted over real tokens of the
        attention mask (so left padding does not shift them), else None."""
        if self.position_ids is not None:
            return self.position_ids
        if self.attention_mask is None:
            return None
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def row(self, example_id: int) -> int | None:
        """The batch row holding `example_id`, or None when it is not in this batch."""
        if self.example_ids is None:
            return None
        try:
            return self.example_ids.index(example_id)
        except ValueError:
            return None


@dataclass(frozen=True)
class HookContext:
    """What an editor or observer is looking at: the site and the batch. At an `expert` site, `routed`
    (batch, tokens) says which tokens were routed to the expert: the value is the expert's neurons there
    and 0 elsewhere (an expert never sees the other tokens)."""

    site: Site
    batch: BatchContext
    routed: torch.Tensor | None = None

    @property
    def example_ids(self) -> tuple[int, ...] | None:
        return self.batch.example_ids

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return self.batch.attention_mask

    @property
    def positions(self) -> torch.Tensor | None:
        return self.batch.positions


Observer = Union[Callable[[torch.Tensor], None], Callable[[torch.Tensor, HookContext], None]]
Editor = Union[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, HookContext], torch.Tensor]]

_BATCH: contextvars.ContextVar[BatchContext] = contextvars.ContextVar("neuroloc_batch", default=BatchContext())


def current_batch() -> BatchContext:
    """The batch declared by the innermost `batch_context` (all fields None outside one)."""
    return _BATCH.get()


@contextlib.contextmanager
def batch_context(*, example_ids: Sequence[int] | None = None, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None) -> Iterator[BatchContext]:
    """Declare the batch of the forward passes run inside the block; fields left None keep the value
    of an enclosing block (so a recorder can name the examples and `run_forward` add the mask)."""
    if attention_mask is not None and example_ids is not None and len(example_ids) != attention_mask.shape[0]:
        raise ValueError(f"{len(example_ids)} example ids for a batch of {attention_mask.shape[0]} rows")
    outer = _BATCH.get()
    changes = {name: value for name, value in (("example_ids", None if example_ids is None else tuple(example_ids)),
                                               ("attention_mask", attention_mask), ("position_ids", position_ids))
               if value is not None}
    token = _BATCH.set(replace(outer, **changes))
    try:
        yield _BATCH.get()
    finally:
        _BATCH.reset(token)


def takes_context(fn: Callable, plain_arguments: int) -> bool:
    """Whether `fn` takes a context after its `plain_arguments` positional arguments: it has more
    required positional parameters than that, or *args. Parameters with defaults do not count.
    Plain functions are answered once per code object (hooks are installed for every batch)."""
    code = getattr(fn, "__code__", None)
    if code is None or not inspect.isfunction(fn):
        return _takes_context(fn, plain_arguments)
    key = (code, len(fn.__defaults__ or ()), plain_arguments)
    if key not in _TAKES_CONTEXT:
        _TAKES_CONTEXT[key] = _takes_context(fn, plain_arguments)
    return _TAKES_CONTEXT[key]


_TAKES_CONTEXT: dict[tuple, bool] = {}


def _takes_context(fn: Callable, plain_arguments: int) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    required = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return len(required) > plain_arguments


class StopForward(Exception):
    """Raised by a hook after the last layer a recording needs; caught by `run_forward`."""


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_hidden(output, hidden):
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a named tuple (Reformer's layers)
        return output._replace(**{output._fields[0]: hidden})
    if isinstance(output, (tuple, list)):
        return type(output)([hidden, *output[1:]])
    return hidden


def _tokens_view(value: torch.Tensor, batch: BatchContext) -> torch.Tensor:
    """(batch, tokens, width) view of a value some families flatten to (batch·tokens, width) (OPT's MLP)."""
    mask = batch.attention_mask
    if value.dim() == 2 and mask is not None and mask.dim() == 2 and value.shape[0] == mask.numel():
        return value.view(*mask.shape, value.shape[-1])
    return value


def _wrap(site: Site, editor: Editor | None, observer: Observer | None,
          shape: LayerShape | None = None) -> Callable[..., torch.Tensor]:
    """One function applying the editor then the observer, passing a context to those that take it
    (`routed`: the expert's routed tokens, at `expert` sites). A layer with several streams per token, more
    positions than the text or another order than batch first (`shape`) is shown as one row per text token
    (`models/streams.py`), and an edit is put back in place."""
    edit_ctx = editor is not None and takes_context(editor, 1)
    observe_ctx = observer is not None and takes_context(observer, 1)

    def apply(value: torch.Tensor, routed: torch.Tensor | None = None) -> torch.Tensor:
        batch = _BATCH.get()
        context = HookContext(site, batch, routed)
        mask = batch.attention_mask
        how = None
        if mask is not None and mask.dim() == 2 and value.dim() >= 3:
            view, how = text_view(value, tuple(mask.shape), shape)
        if how is None:
            view = _tokens_view(value, batch)
        new = view
        if editor is not None:
            new = editor(view, context) if edit_ctx else editor(view)
        if observer is not None:
            observer(new, context) if observe_ctx else observer(new)
        if new is view or new is value:
            return value
        return put_back(value, new, how)

    return apply


@contextlib.contextmanager
def hooks(
    layout: ModelLayout,
    *,
    observe: Mapping[Site, Observer] | None = None,
    edit: Mapping[Site, Editor] | None = None,
    stop_after_layer: int | None = None,
) -> Iterator[None]:
    """Install editors and observers on sites (editors run first, observers see the edited value).

    Editors and observers get the site's value, (batch, tokens, width) — also for families that
    flatten tokens, when the batch's attention mask is declared — and, if they take a second argument,
    a `HookContext`. Residual sites hook a decoder layer's output, `mlp_gate` the gate activation's
    output; `mlp` and `attn` sites hook the input of the down projection / attention output
    projection; `shared_expert` the input of the shared expert's down projection, `ssm` the mixer's
    output. `expert` sites get the expert's neurons on its routed tokens (0 elsewhere; the context's
    `routed` mask says which; an observer with a `routed_rows(rows, tokens)` attribute gets the routed rows
    and their flat token positions instead) and `router` sites the router's expert probabilities (see
    `models/moe.py`). A layer carrying several streams per token is shown with its streams side by side,
    one carrying more positions than the text at the text's positions (`models/streams.py`).
    With `stop_after_layer`, the layer's output raises `StopForward`, so later blocks and
    the LM head never run (use `run_forward`).
    """
    observe, edit = dict(observe or {}), dict(edit or {})
    handles = []
    try:
        experts: dict[int, dict[int, tuple]] = {}
        modules = {site: layout.module(site) for site in sorted(set(observe) | set(edit))}  # all resolve first
        for site, module in modules.items():
            apply = _wrap(site, edit.get(site), observe.get(site), layout.layer_shape(site.layer))
            edits = site in edit
            if site.kind == "expert":  # an observer may take the routed rows directly (no dense tensor)
                rows = None if edits else getattr(observe.get(site), "routed_rows", None)
                experts.setdefault(site.layer, {})[site.expert] = (apply, edits, rows)
            elif site.kind == "router":
                install_router(layout, site.layer, apply, edits, handles)
            elif layout.reads_output(site):
                def output_hook(_module, _args, output, apply=apply, edits=edits):
                    new = apply(_hidden(output))
                    return _replace_hidden(output, new) if edits else None

                handles.append(module.register_forward_hook(output_hook))
            else:
                def input_hook(_module, args, apply=apply, edits=edits):
                    new = apply(args[0])
                    return (new, *args[1:]) if edits else None

                handles.append(module.register_forward_pre_hook(input_hook))
        for layer, wanted in experts.items():
            install_experts(layout, layer, wanted, handles)
        if stop_after_layer is not None:
            def stop(_module, _args, _output):
                raise StopForward

            layout.check(Site(stop_after_layer, "residual"))
            handles.append(layout.layers[stop_after_layer].register_forward_hook(stop))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_forward(model: torch.nn.Module, *, example_ids: Sequence[int] | None = None, **batch) -> object | None:
    """Call the model on `batch` inside a `batch_context` (its attention mask and position ids, and
    `example_ids` when given); return its output, or None when a hook stopped it early."""
    try:
        with batch_context(example_ids=example_ids, attention_mask=batch.get("attention_mask"),
                           position_ids=batch.get("position_ids")):
            return model(**batch)
    except StopForward:
        return None


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's input ids belong: its input embedding's device (for a model dispatched over
    several devices, the first one); an offloaded embedding (meta) takes its inputs on the CPU."""
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is None:  # one embedding, or a list of them (one per audio codebook: MusicGen)
        weight = getattr(embeddings, "weight", None)
        device = weight.device if isinstance(weight, torch.Tensor) else next(embeddings.parameters()).device
    device = torch.device(device)
    return torch.device("cpu") if device.type == "meta" else device


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
