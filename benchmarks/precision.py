"""float32 against bfloat16 on SmolLM2: speed and agreement of the language localizer and BLiMP scoring.

For each dtype: a bare forward pass and `Localizer("residual").fit` over the Fedorenko localizer
strings (tokens/s, their ratio), and BLiMP scoring (pairs/s, accuracy). On a CPU, times are this
process's CPU time (fair on a shared machine; run with OMP_NUM_THREADS=1), on a GPU wall-clock. Then bf16's agreement with
float32: Pearson r of the t-values, Jaccard of the top-1% units, BLiMP accuracy difference, and what
`--dtype auto`'s agreement probe measures on this model.

    python benchmarks/precision.py [--model smollm2] [--data ../shared/data] [--device cpu|cuda]
                                   [--blimp-limit 20] [--batch-size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import batches  # noqa: E402  (the bare forward's batches, as benchmarks/record.py forms them)

from neuroloc import Localizer, evaluate_blimp, load_blimp, load_model  # noqa: E402
from neuroloc.models.precision import agreement_probe, bf16_hardware  # noqa: E402
from neuroloc.stimuli.language import load_language_localizer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """Wall-clock on a GPU; on a CPU this process's CPU time (other jobs on a shared CPU do not count)."""
    return time.perf_counter() if device.startswith("cuda") else time.process_time()


def time_bare(lm, texts, batch_size: int, repeats: int, device: str) -> float:
    """Tokens/s of a bare forward over length-sorted batches (best of `repeats`)."""
    prepared = batches(lm, texts, batch_size)
    tokens = sum(int(b["attention_mask"].sum()) for b in prepared)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            sync(device)
            start = clock(device)
            for batch in prepared:
                lm.model(**batch)
            sync(device)
            best = min(best, clock(device) - start)
    return tokens / best


def run(dtype: str, device: str, args, stim, pairs) -> dict:
    lm = load_model(args.model, dtype=dtype, device=device)
    tokens = sum(len(ids) + 1 for ids in lm.tokenizer(list(stim.texts), add_special_tokens=False)["input_ids"])
    time_bare(lm, stim.texts[:64], args.batch_size, 1, device)  # warm-up
    bare = time_bare(lm, stim.texts, args.batch_size, args.repeats, device)
    best, fitted = float("inf"), None
    for _ in range(args.repeats):
        sync(device)
        start = clock(device)
        fitted = Localizer("residual", pooling="last", batch_size=args.batch_size).fit(lm, stim)
        sync(device)
        best = min(best, clock(device) - start)
    blimp_best, frame = float("inf"), None
    for _ in range(args.repeats):
        sync(device)
        start = clock(device)
        frame = evaluate_blimp(lm.model, lm.tokenizer, pairs, batch_size=args.batch_size, bos="prepend")
        sync(device)
        blimp_best = min(blimp_best, clock(device) - start)
    n_pairs = sum(len(v) for v in pairs.values())
    return {"lm": lm, "bare": bare, "localize_s": best, "localize_tps": tokens / best, "t": np.asarray(fitted.t_),
            "units": set(fitted.units_.names()), "blimp_s": blimp_best, "blimp_pps": n_pairs / blimp_best,
            "blimp": frame.set_index("subset").value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with fedorenko2010/ and blimp/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--blimp-limit", type=int, default=20, help="pairs per phenomenon")
    args = parser.parse_args()
    stim = load_language_localizer(args.data / "fedorenko2010")
    pairs = load_blimp(args.data / "blimp", limit=args.blimp_limit)
    fast, why = bf16_hardware(args.device)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}, best of {args.repeats}; "
          f"{len(stim)} localizer strings, {sum(len(v) for v in pairs.values())} BLiMP pairs")
    print(f"bf16 hardware rule: {'fast' if fast else 'slow'} — {why}")
    results = {dtype: run(dtype, args.device, args, stim, pairs) for dtype in ("float32", "bfloat16")}
    f32, b16 = results["float32"], results["bfloat16"]
    for dtype, r in results.items():
        print(f"{dtype:>8}: bare {r['bare']:,.0f} tok/s | localize {r['localize_s']:.2f} s = {r['localize_tps']:,.0f} "
              f"tok/s (record/bare {r['localize_tps'] / r['bare']:.2f}) | BLiMP {r['blimp_s']:.2f} s = "
              f"{r['blimp_pps']:,.1f} pairs/s, accuracy {r['blimp']['overall']:.4f}")
    r = float(np.corrcoef(f32["t"], b16["t"])[0, 1])
    jaccard = len(f32["units"] & b16["units"]) / len(f32["units"] | b16["units"])
    acc = (b16["blimp"] - f32["blimp"]).abs()
    print(f"speed-up bf16/f32: localize {f32['localize_s'] / b16['localize_s']:.2f}x, "
          f"BLiMP {f32['blimp_s'] / b16['blimp_s']:.2f}x, bare forward {b16['bare'] / f32['bare']:.2f}x")
    print(f"agreement: t correlation {r:.5f}, top-1% Jaccard {jaccard:.3f}, BLiMP overall accuracy difference "
          f"{acc['overall']:.4f} (largest per phenomenon {acc.drop('overall').max():.4f})")
    probe = agreement_probe(f32["lm"].model, f32["lm"].tokenizer)
    print(f"auto's agreement probe: min layer correlation {probe['min_layer_correlation']:.5f} "
          f"(layer {probe['worst_layer']}), log-prob shift {probe['mean_logprob_shift']:.4f} nats/token")


if __name__ == "__main__":
    main()
