"""Recording speed and memory on SmolLM2 with the 480 Fedorenko localizer strings.

Prints tokens/s of a bare forward pass and of neuroloc recording every residual site (last-token
pooling into accumulators) with the same batches and dtype, their ratio, and the peak-RSS growth
between recording the stimuli once and ten times over (each in a fresh process).

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

from neuroloc import ConditionStats, Recorder, load_model
from neuroloc.record.recorder import model_inputs, tokenize
from neuroloc.stimuli.language import load_language_localizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"


def stimuli():
    return load_language_localizer(DATA if DATA.is_dir() else None)


def batches(lm, texts, batch_size):
    """The recorder's own length-sorted batches, so both paths see identical inputs."""
    recorder = Recorder(lm, lm.layout.sites("residual"), batch_size=batch_size)
    order = recorder._order(texts)
    return [model_inputs(lm, tokenize(lm, [texts[i] for i in order[s:s + batch_size]]))
            for s in range(0, len(order), batch_size)]


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
    recorder = Recorder(lm, lm.layout.sites("residual"), batch_size=batch_size)
    prepared = batches(lm, stim.texts, batch_size)
    tokens = sum(int(b["attention_mask"].sum()) for b in prepared)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        recorder.accumulate(stim, ConditionStats())
        best = min(best, time.perf_counter() - start)
    return tokens / best


def peak_rss_child(times: int, batch_size: int, dtype: str) -> None:
    """Run in a fresh process: record the stimuli `times` over, print peak RSS in MiB."""
    lm = load_model("smollm2", dtype=dtype)
    stim = stimuli()
    recorder = Recorder(lm, lm.layout.sites("residual"), batch_size=batch_size)
    stats = ConditionStats()
    for _ in range(times):
        recorder.accumulate(stim, stats)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "n": stats.count("sentences")}))


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
    print(f"record residual (30 sites, last-token, accumulators): {recorded:,.0f} tokens/s")
    print(f"record/bare ratio: {recorded / bare:.2f}")
    once, ten = peak_rss(1, args.batch_size, args.dtype), peak_rss(10, args.batch_size, args.dtype)
    print(f"peak RSS: once {once:,.0f} MiB, ten times {ten:,.0f} MiB")
    print(f"rss growth 10x: {100 * (ten - once) / once:.1f}%")


if __name__ == "__main__":
    main()
