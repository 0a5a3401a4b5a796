"""What a decoder layer outputs per token: its units, and which of its positions are the text's.

Most layers output (batch, tokens, hidden). Some carry more, and one probe pass at load settles it from
evidence rather than from a table:

- several residual streams per token, (batch, tokens, streams, hidden) — hyper-connections (DeepSeek-V4,
  HY-V4), whose next layer reads every stream: the layer's units are all of them side by side (stream s,
  coordinate i is unit s·hidden + i);
- more positions than the text — CPM-Ant prepends learned prompt positions, ProphetNet carries its n-gram
  predict streams after its main stream: the text's positions are the first or the last `tokens` ones,
  whichever the model's own `output_hidden_states` reports for the layer (CPM-Ant: the last, after the
  prompt; ProphetNet: the first, its main stream), and every token-wise site of the layer is read there.
  A layer whose extra positions the model reports neither way has no `residual` site, with that reason.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerShape:
    """Units per token of a layer's output, and where its text positions are ("first" / "last" of more
    positions, None when there is one position per token); `reason` when the text cannot be located."""

    width: int
    text: str | None = None
    reason: str | None = None


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def probe_layer_shapes(model: nn.Module, layers: list[nn.Module], ids: torch.Tensor,
                       watch: dict[int, nn.Module] | None = None) -> tuple[dict[int, LayerShape], dict[int, int]]:
    """Per layer whose output is not one (tokens, hidden) row per token on a probe pass of `ids` (one row),
    its `LayerShape`, and how many times each module of `watch` (layer → module) ran in the pass (an
    attention output projection run once per stream has no single value per token); ({}, {}) when the
    probe pass fails (the layers are then taken as plain)."""
    seen: dict[int, torch.Tensor] = {}
    calls = {i: 0 for i in watch or {}}

    running: list[int] = []  # the layer now running: a module shared by layers counts in each once

    def count(i: int):
        def hook(_module, _args) -> None:
            if running and running[-1] == i:
                calls[i] += 1
        return hook

    def enter(i: int):
        def hook(_module, _args) -> None:
            running.append(i)
        return hook

    def keep(i: int):
        def hook(_module, _args, output) -> None:
            seen.setdefault(i, _hidden(output))
            if running:
                running.pop()
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_pre_hook(enter(i)) for i, layer in enumerate(layers)]
    handles += [module.register_forward_pre_hook(count(i)) for i, module in (watch or {}).items()]
    try:
        _run(model, ids, use_cache=False)
    except Exception:  # noqa: BLE001 - no evidence: layers stay plain, as before the probe
        return {}, {}
    finally:
        for handle in handles:
            handle.remove()
    length = ids.shape[1]
    reported: list[torch.Tensor] = []
    if any(torch.is_tensor(v) and v.dim() == 3 and v.shape[0] == 1 and v.shape[1] > length for v in seen.values()):
        # only then: asking for hidden states makes some models install hooks of their own for good
        try:
            output = _run(model, ids, use_cache=False, output_hidden_states=True)
            reported = [h for h in (getattr(output, "hidden_states", None) or ()) if torch.is_tensor(h)]
        except Exception:  # noqa: BLE001 - no reported states: the text positions stay unknown, and say so
            reported = []
    shapes: dict[int, LayerShape] = {}
    rules: dict[int, str] = {}  # number of positions → where the text is, from any layer the model reports
    for i, value in seen.items():
        if not torch.is_tensor(value) or value.dim() < 3 or value.shape[0] != 1:
            continue
        if value.shape[1] == length and value.dim() == 4:
            shapes[i] = LayerShape(value.shape[2] * value.shape[3])
        elif value.shape[1] > length and value.dim() == 3:
            for text, part in (("first", value[:, :length]), ("last", value[:, -length:])):
                if any(h.shape == part.shape and torch.equal(h, part) for h in reported):
                    rules.setdefault(value.shape[1], text)
                    shapes[i] = LayerShape(value.shape[-1], text)
    for i, value in seen.items():
        if torch.is_tensor(value) and value.dim() == 3 and value.shape[0] == 1 and value.shape[1] > length \
                and i not in shapes:
            text = rules.get(value.shape[1])
            shapes[i] = LayerShape(value.shape[-1], text, None if text else (
                f"{type(layers[i]).__name__} outputs {value.shape[1]} positions for {length} tokens and the model "
                "reports none of them as its hidden states, so neuroloc cannot tell which are the text's"))
    return shapes, calls


def _run(model: nn.Module, ids: torch.Tensor, **flags):
    """The model's output on `ids`, with the `flags` its forward takes."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    with torch.no_grad():
        return model(input_ids=ids, **{key: value for key, value in flags.items() if key in parameters or takes_any})


def text_view(value: torch.Tensor, tokens: tuple[int, int], text: str | None) -> tuple[torch.Tensor, str | None]:
    """The (batch, tokens, units) view of a layer's value for a (batch, tokens) batch: streams side by
    side, or the text's positions among more ("first"/"last"); the second item says how to put an edit back."""
    batch, length = tokens
    if value.dim() == 4 and tuple(value.shape[:2]) == (batch, length):
        return value.reshape(batch, length, -1), "streams"
    if text is not None and value.dim() == 3 and value.shape[0] == batch and value.shape[1] > length:
        return (value[:, :length] if text == "first" else value[:, -length:]), text
    return value, None


def put_back(value: torch.Tensor, new: torch.Tensor, how: str | None) -> torch.Tensor:
    """`value` with its text view replaced by `new` (see `text_view`)."""
    if how in ("first", "last"):
        length = new.shape[1]
        out = value.clone()
        if how == "first":
            out[:, :length] = new
        else:
            out[:, -length:] = new
        return out
    return new.reshape(value.shape)
