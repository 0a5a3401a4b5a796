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
  A layer whose extra positions the model reports neither way has no `residual` site, with that reason;
- one value per token wider than the config's hidden size (Qwen4-Exp's hyper-connection streams, already
  side by side): the layer's units are that output's width;
- other orders: time-major (tokens, batch, hidden) — XLNet — and streams-first (streams, batch, tokens,
  hidden) — Gemma 3n's AltUp streams — are read as (batch, tokens, units), streams side by side.

The same pass settles whether the model can be recorded at all: a model whose forward pass fails on token
ids alone (it needs inputs neuroloc cannot give, e.g. another model's key/value cache or audio codebooks)
or that runs a layer more than once per pass (a recurrent loop over layers: no one output per token) is
refused at load with that reason (`Probe.refusal`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerShape:
    """Units per token of a layer's output, and where its text positions are ("first" / "last" of more
    positions, None when there is one position per token); `reason` when the text cannot be located;
    `order` when the output is not batch-first: "time" (tokens, batch, ...) or "streams" (streams, batch,
    tokens, ...)."""

    width: int
    text: str | None = None
    reason: str | None = None
    order: str | None = None


@dataclass(frozen=True)
class Probe:
    """What one probe pass showed: the `LayerShape` of each layer whose output is not one (tokens, hidden)
    row per token, how many times each watched module ran, how many times each layer ran, and the error
    when the pass failed."""

    shapes: dict[int, LayerShape]
    calls: dict[int, int]
    runs: dict[int, int]
    failure: str | None = None

    def refusal(self, model_type: str, layers_path: str) -> str | None:
        """Why neuroloc cannot record this model (None when it can)."""
        if self.failure is not None:
            return (f"model type {model_type!r} does not run on token ids alone: a text-only forward pass raised "
                    f"{self.failure}; neuroloc gives a model token ids and an attention mask only, so it cannot "
                    "record this model")
        repeated = {i: n for i, n in self.runs.items() if n > 1}
        if repeated:
            ran = ", ".join(f"{i} ran {n} times" for i, n in repeated.items())
            return (f"model type {model_type!r} applies some of its layers more than once per forward pass (of "
                    f"{layers_path}, layer {ran} on one text), so such a layer has no one output per token and "
                    "neuroloc cannot name its sites")
        return None


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def probe_layer_shapes(model: nn.Module, layers: list[nn.Module], ids: torch.Tensor, hidden: int,
                       watch: dict[int, nn.Module] | None = None) -> Probe:
    """One probe pass of `ids` (one row): per layer whose output is not one (tokens, `hidden`) row per
    token, its `LayerShape`; how many times each module of `watch` (layer → module) ran in the pass (an
    attention output projection run once per stream has no single value per token) and each layer ran;
    or the error that ended the pass."""
    seen: dict[int, torch.Tensor] = {}
    calls = {i: 0 for i in watch or {}}
    runs = {i: 0 for i in range(len(layers))}

    running: list[int] = []  # the layer now running: a module shared by layers counts in each once

    def count(i: int):
        def hook(_module, _args) -> None:
            if running and running[-1] == i:
                calls[i] += 1
        return hook

    def enter(i: int):
        def hook(_module, _args) -> None:
            running.append(i)
            runs[i] += 1
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
        run_probe(model, ids, use_cache=False)
    except Exception as error:  # noqa: BLE001 - the model cannot run on token ids: the caller refuses it
        return Probe({}, {}, {}, f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
    finally:
        for handle in handles:
            handle.remove()
    length = ids.shape[1]
    reported: list[torch.Tensor] = []
    if any(torch.is_tensor(v) and v.dim() == 3 and v.shape[0] == 1 and v.shape[1] > length for v in seen.values()):
        # only then: asking for hidden states makes some models install hooks of their own for good
        try:
            output = run_probe(model, ids, use_cache=False, output_hidden_states=True)
            reported = [h for h in (getattr(output, "hidden_states", None) or ()) if torch.is_tensor(h)]
        except Exception:  # noqa: BLE001 - no reported states: the text positions stay unknown, and say so
            reported = []
    shapes: dict[int, LayerShape] = {}
    rules: dict[int, str] = {}  # number of positions → where the text is, from any layer the model reports
    for i, value in seen.items():
        if not torch.is_tensor(value) or value.dim() < 3:
            continue
        if value.dim() == 3 and tuple(value.shape[:2]) == (length, 1) and length > 1:
            shapes[i] = LayerShape(value.shape[-1], order="time")
        elif value.dim() == 4 and tuple(value.shape[1:3]) == (1, length) and value.shape[0] > 1:
            shapes[i] = LayerShape(value.shape[0] * value.shape[3], order="streams")
        elif value.shape[0] != 1:
            continue
        elif value.shape[1] == length and value.dim() == 4:
            shapes[i] = LayerShape(value.shape[2] * value.shape[3])
        elif value.shape[1] == length and value.dim() == 3 and value.shape[2] != hidden:
            shapes[i] = LayerShape(value.shape[2])
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
    return Probe(shapes, calls, runs)


def run_probe(model: nn.Module, ids: torch.Tensor, **flags):
    """The model's output on `ids`, with the `flags` its forward takes."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    with torch.no_grad():
        return model(input_ids=ids, **{key: value for key, value in flags.items() if key in parameters or takes_any})


def text_view(value: torch.Tensor, tokens: tuple[int, int], shape: LayerShape | None) -> tuple[torch.Tensor, str | None]:
    """The (batch, tokens, units) view of a value of a layer with this `shape` for a (batch, tokens) batch:
    streams side by side, time-major or streams-first values reordered, or the text's positions among more
    ("first"/"last"); the second item says how to put an edit back."""
    batch, length = tokens
    order = shape.order if shape is not None else None
    if order == "time" and value.dim() == 3 and tuple(value.shape[:2]) == (length, batch):
        return value.transpose(0, 1), "time"
    if order == "streams" and value.dim() == 4 and tuple(value.shape[1:3]) == (batch, length):
        return value.permute(1, 2, 0, 3).reshape(batch, length, -1), "streams-first"
    if value.dim() == 4 and tuple(value.shape[:2]) == (batch, length):
        return value.reshape(batch, length, -1), "streams"
    text = shape.text if shape is not None else None
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
    if how == "time":
        return new.transpose(0, 1)
    if how == "streams-first":
        streams, batch, length, width = value.shape
        return new.reshape(batch, length, streams, width).permute(2, 0, 1, 3)
    return new.reshape(value.shape)
