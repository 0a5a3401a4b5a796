"""Localizing speed and memory on SmolLM2 with the 480 Fedorenko localizer strings.

Times the path `neuroloc localize` runs — `Localizer("residual", pooling="last").fit(lm, stimuli)`:
recording every residual site into streamed statistics, then scoring and selecting — against a bare
forward pass over the same texts in the same length-sorted batches of the same size and dtype
(tokenized by the tokenizer alone, so the localizer's BOS token is the only difference), and prints
tokens/s of both, their ratio, and the peak-RSS growth between localizing the stimuli once and ten times
over (`partial_fit`, each in a fresh process). It also counts the torch operations per batch of both
(torch.profiler): on a GPU each is a kernel launch, and a small model's step is launch-bound, so the
count predicts the recording overhead there better than CPU time does.

    python benchmarks/record.py [--batch-size 32] [--dtype float32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from neuroloc import Localizer, load_model
from neuroloc.models.hooks import input_device
from neuroloc.stimuli.language import load_language_localizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"


def stimuli():
    return load_language_localizer(DATA if DATA.is_dir() else None)


def batches(lm, texts, batch_size):
    """Length-sorted, right-padded batches of `texts` (longest first), as the localizer forms them."""
    lengths = [len(ids) for ids in lm.tokenizer(list(texts))["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    device = input_device(lm.model)
    out = []
    for start in range(0, len(order), batch_size):
        encoded = lm.tokenizer([texts[i] for i in order[start:start + batch_size]], return_tensors="pt",
                               padding=True)
        out.append({"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)})
    return out


def time_bare(lm, texts, batch_size, repeats):
    prepared = batches(lm, texts, batch_size)
    tokens = sum(int(b["attention_mask"].sum()) for b in prepared)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in prepared:
                lm.model(**batch)
            best = min(best, time.perf_counter() - start)
    return tokens / best


def time_record(lm, stim, batch_size, repeats):
    """Tokens/s of `Localizer(...).fit` on residual sites, last-token pooling (best of `repeats`)."""
    tokens = sum(int(b["attention_mask"].sum()) for b in batches(lm, stim.texts, batch_size))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        Localizer("residual", pooling="last", batch_size=batch_size).fit(lm, stim)
        best = min(best, time.perf_counter() - start)
    return tokens / best


def ops_per_batch(lm, stim, batch_size) -> tuple[float, float]:
    """torch operations per batch: bare forward vs `Localizer.fit` (residual, last-token), 4 batches."""
    from torch.profiler import profile

    subset = stim.subset(list(range(0, len(stim), max(1, len(stim) // (4 * batch_size))))[:4 * batch_size])
    prepared = batches(lm, subset.texts, batch_size)

    def count(run) -> float:
        with profile() as prof:
            run()
        return sum(e.count for e in prof.key_averages()) / len(prepared)

    with torch.inference_mode():
        bare = count(lambda: [lm.model(**b) for b in prepared])
    fitted = count(lambda: Localizer("residual", pooling="last", batch_size=batch_size).fit(lm, subset))
    return bare, fitted


def peak_rss_child(times: int, batch_size: int, dtype: str) -> None:
    """Run in a fresh process: localize the stimuli `times` over, print peak RSS in MiB."""
    lm = load_model("smollm2", dtype=dtype)
    stim = stimuli()
    localizer = Localizer("residual", pooling="last", batch_size=batch_size).fit(lm, stim)
    for _ in range(times - 1):
        localizer.partial_fit(lm, stim)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "times": times}))


def peak_rss(times: int, batch_size: int, dtype: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(times), "--batch-size", str(batch_size),
                          "--dtype", dtype], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        peak_rss_child(args.rss_child, args.batch_size, args.dtype)
        return
    lm = load_model("smollm2", dtype=args.dtype)
    stim = stimuli()
    print(f"model smollm2 ({args.dtype}), {len(stim)} stimuli, batch size {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    time_bare(lm, stim.texts, args.batch_size, 1)  # warm-up
    bare = time_bare(lm, stim.texts, args.batch_size, args.repeats)
    recorded = time_record(lm, stim, args.batch_size, args.repeats)
    print(f"bare forward: {bare:,.0f} tokens/s")
    print(f"Localizer.fit residual (30 sites, last-token): {recorded:,.0f} tokens/s")
    print(f"localize/bare ratio: {recorded / bare:.2f}")
    bare_ops, fit_ops = ops_per_batch(lm, stim, args.batch_size)
    print(f"torch ops per batch: bare forward {bare_ops:,.0f}, Localizer.fit {fit_ops:,.0f} "
          f"({fit_ops / bare_ops:.2f}x)")
    once, ten = peak_rss(1, args.batch_size, args.dtype), peak_rss(10, args.batch_size, args.dtype)
    print(f"peak RSS: once {once:,.0f} MiB, ten times {ten:,.0f} MiB")
    print(f"rss growth 10x: {100 * (ten - once) / once:.1f}%")


if __name__ == "__main__":
    main()
