"""`--dtype auto`: bfloat16 where the hardware runs it fast and the model agrees with itself in it.

The rule, in order (each step records why in `PrecisionChoice.reason`, which goes into every manifest):

1. Hardware. bfloat16 is fast on CUDA devices of compute capability ≥ 8 (Ampere, Hopper, …) and on
   CPUs with AMX (`amx_bf16`) or AVX-512 BF16 (`avx512_bf16`) in /proc/cpuinfo. Anywhere else bf16
   matrix products are emulated and slower than float32, so `auto` keeps float32.
2. The model's stored precision. A model whose checkpoint is float16/bfloat16 (`config.torch_dtype`)
   already lives at that precision: `auto` loads it in bfloat16 without a probe.
3. Agreement probe, for float32 checkpoints (small research models, dequantized GGUF files): the
   model runs `PROBE_TEXTS` in float32 and in a bfloat16 copy; `auto` keeps bfloat16 only when the
   residual stream agrees at every layer (Pearson r ≥ `MIN_LAYER_CORRELATION` over all real tokens'
   coordinates) and the texts' log-probabilities move by at most `MAX_LOGPROB_SHIFT` nats per token on
   average. The bounds are calibrated where the localizer's t-values still correlate ≥ 0.999 with
   float32 and benchmark accuracies stay within 0.005 (benchmarks/precision.py measures both).

Statistics always accumulate in float32/float64 whatever the model's dtype (record/accumulators).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

# Calibrated on SmolLM2-135M (benchmarks/precision.py, CPU): the probe reads r = 0.99905 (layer 28) and a
# shift of 0.055 nats/token, while the localizer's t-values correlate 0.99997 with float32, the top-1%
# units overlap with Jaccard 0.989 and BLiMP accuracy does not move. The bounds leave that margin.
MIN_LAYER_CORRELATION = 0.995
MAX_LOGPROB_SHIFT = 0.1
PROBE_TEXTS = (
    "The dog that the children adopted last spring sleeps under the kitchen table.",
    "She had never seen so many stars before she moved to the mountains.",
    "Although the committee approved the plan, the funding never arrived.",
    "POME OY REE HOLILY SHOURN NE SLEOMING WHIMP DAVE TRIBBLE",
    "blue the quickly of because seven table and runs the",
    "In 1969, two astronauts walked on the Moon while millions watched on television.",
    "If you add 17 and 25, you get 42; if you subtract them, you get -8.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
)


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype `auto` chose, why, and the probe's figures when it ran."""

    dtype: torch.dtype
    reason: str
    fast_bf16: bool
    probe: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """JSON-ready description for manifests."""
        out = asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is unreadable, e.g. macOS)."""
    return frozenset(_cpu_flags())


def bf16_hardware(device: str | torch.device | None,
                  flags: frozenset[str] | set[str] | None = None,
                  capability: Callable[[torch.device], tuple[int, int]] | None = None) -> tuple[bool, str]:
    """Whether `device` runs bfloat16 matrix products fast, and the reason in words.

    `flags` and `capability` default to the real CPU flags and `torch.cuda.get_device_capability`
    (injectable for tests)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available() and capability is None:
            return False, "CUDA requested but not available"
        major, minor = (capability or torch.cuda.get_device_capability)(dev)
        if major >= 8:
            return True, f"CUDA compute capability {major}.{minor} ≥ 8 has bfloat16 tensor cores"
        return False, f"CUDA compute capability {major}.{minor} < 8 has no fast bfloat16"
    if dev.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
        if found:
            return True, f"CPU has {' and '.join(found)}"
        return False, "CPU has neither AMX (amx_bf16) nor AVX-512 BF16 (avx512_bf16): bfloat16 would be emulated"
    return False, f"no bfloat16 rule for device type {dev.type!r}"


def target_device(device: str | torch.device | None, device_map: str | dict | None) -> str:
    """The device whose arithmetic decides: an explicit device, else CUDA when a device map can use it."""
    if device is not None:
        return str(device)
    if device_map is not None and torch.cuda.is_available():
        values = device_map.values() if isinstance(device_map, dict) else [device_map]
        if any(str(v) not in ("cpu", "disk") for v in values):
            return "cuda"
    return "cpu"


def stored_dtype(config: Any) -> torch.dtype | None:
    """The checkpoint's own dtype from its config (`dtype` or `torch_dtype`), if it says."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the parameters (not the buffers: rotary frequencies stay float32, as `from_pretrained(dtype=...)`
    leaves them) in place; works on models dispatched over devices, where `model.to` may refuse."""
    for parameter in model.parameters():
        parameter.data = parameter.data.to(dtype)
    return model


def _probe_forward(model: torch.nn.Module, encoded: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    device = model.get_input_embeddings().weight.device
    inputs = {k: v.to(device) for k, v in encoded.items()}
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    mask = inputs["attention_mask"].bool()
    hidden = [h[mask].float().cpu() for h in out.hidden_states[1:]]
    logits = out.logits[:, :-1].float()
    targets = inputs["input_ids"][:, 1:]
    logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    return hidden, logprobs[mask[:, 1:]].cpu()


def agreement_probe(model: torch.nn.Module, tokenizer, texts: tuple[str, ...] = PROBE_TEXTS) -> dict[str, float]:
    """Compare a float32 model with a bfloat16 copy of it on `texts`: the lowest per-layer Pearson r of
    the residual stream and the mean absolute shift of token log-probabilities (nats)."""
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    encoded = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    hidden32, lp32 = _probe_forward(model, encoded)
    half = cast_parameters(copy.deepcopy(model), torch.bfloat16)
    hidden16, lp16 = _probe_forward(half, encoded)
    del half
    correlations = [float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
                    for a, b in zip(hidden32, hidden16)]
    return {"min_layer_correlation": min(correlations),
            "worst_layer": int(min(range(len(correlations)), key=correlations.__getitem__)),
            "mean_logprob_shift": float((lp32 - lp16).abs().mean())}


def probe_verdict(probe: dict[str, float]) -> tuple[bool, str]:
    """Whether the probe's figures meet the bounds, with the reason in words."""
    r, shift = probe["min_layer_correlation"], probe["mean_logprob_shift"]
    if not r >= MIN_LAYER_CORRELATION:  # NaN (a layer collapsed to constants in bf16) fails too
        return False, (f"bfloat16 disagrees with float32 on this model: residual correlation {r:.5f} at layer "
                       f"{probe['worst_layer']} < {MIN_LAYER_CORRELATION}")
    if not shift <= MAX_LOGPROB_SHIFT:
        return False, (f"bfloat16 disagrees with float32 on this model: log-probabilities shift by "
                       f"{shift:.3f} nats per token > {MAX_LOGPROB_SHIFT}")
    return True, (f"bfloat16 agrees with float32 on this model (residual r ≥ {r:.5f}, "
                  f"log-prob shift {shift:.4f} nats/token)")
