"""Check, on one probe forward pass, that each gated MLP's hooked activation really is its gate.

Discovery finds a gated MLP by structure (two input projections of the down projection's width, or one
fused projection of twice that width, and one activation module). Structure is not proof: the probe
captures the activation's output A, the input projections' outputs and the down projection's input D,
and accepts the layer when D = A × U for one of the up candidates U (the other projection, or either
half of a fused one). What `mlp_gate` holds is then stated from evidence, not presumed.
"""

from __future__ import annotations

import torch

from .hooks import input_device
from .streams import run_probe


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    tolerance = 1e-4 if a.dtype == torch.float32 else 2e-2
    return float((a - b).abs().max()) <= tolerance * scale


def probe_ids(model: torch.nn.Module) -> torch.Tensor:
    """Five token ids (1..5 within the vocabulary), one row, on the model's input device: probe passes."""
    vocab = getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config")
                    else model.config, "vocab_size", None) or 8
    ids = torch.arange(1, 6) % max(int(vocab), 2)
    return ids[None].to(input_device(model))


def check_gates(layout) -> dict[int, str | None]:
    """Layer → None (confirmed) or the reason `mlp_gate` is not the gate there, for layers with a gated MLP."""
    gated = {i: layout.parts(i).mlp for i in range(layout.n_layers)  # registered paths without inputs: as given
             if layout.parts(i).mlp is not None and layout.parts(i).mlp.gated and layout.parts(i).mlp.gate_act
             and layout.parts(i).mlp.inputs}
    if not gated:
        return {}
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def keep(key, output=True):
        if output:
            return lambda _m, _a, out: seen.__setitem__(key, (out[0] if isinstance(out, tuple) else out).detach())
        return lambda _m, args: seen.__setitem__(key, args[0].detach())

    try:
        for i, mlp in gated.items():
            layer = layout.layers[i]
            handles.append(layer.get_submodule(mlp.gate_act).register_forward_hook(keep((i, "act"))))
            handles.append(layer.get_submodule(mlp.down).register_forward_pre_hook(keep((i, "down"), False)))
            for j, path in enumerate(mlp.inputs):
                handles.append(layer.get_submodule(path).register_forward_hook(keep((i, f"in{j}"))))
        try:
            run_probe(layout.model, probe_ids(layout.model), use_cache=False)
        except Exception as error:  # noqa: BLE001 - any failure: the gate stays unchecked, and says why
            return {i: f"layer {i}: the gate could not be checked (a probe forward pass failed: "
                       f"{type(error).__name__}: {str(error)[:120]})" for i in gated}
    finally:
        for handle in handles:
            handle.remove()
    verdicts = {}
    for i, mlp in gated.items():
        act, down = seen.get((i, "act")), seen.get((i, "down"))
        ins = [seen[(i, f"in{j}")] for j in range(len(mlp.inputs)) if (i, f"in{j}") in seen]
        if act is None or down is None or not ins:
            verdicts[i] = f"layer {i}: the probe pass did not run through {mlp.gate_act} and {mlp.down}"
            continue
        ups = list(ins[0].chunk(2, dim=-1)) if mlp.fused else ins
        confirmed = any(_close(down.reshape(-1, down.shape[-1]), (act * up).reshape(-1, down.shape[-1]))
                        for up in ups if up.shape == act.shape)
        verdicts[i] = None if confirmed else (
            f"layer {i}: the output of {mlp.gate_act} times an up projection does not give the input of "
            f"{mlp.down} on a probe input, so it is not the MLP's gate")
    return verdicts
