"""Lesion-stage throughput: the demo's lesion plan evaluated plainly and with reuse, one model, one process.

The plan is the lesion stage of `neuroloc run language --model smollm2` (`make demo`): intact, then for
0.25, 0.5 and 1 % of residual units (re-selected from one localizer fit on the Fedorenko 2010 stimuli)
the target and 2 random + 2 magnitude-matched controls — 16 conditions — each scoring BLiMP (3 pairs per
phenomenon), SyntaxGym (3 items per suite) and perplexity (50 UD EWT dev sentences) from ../shared/data.

- plain: `evaluate_conditions(..., reuse=False)`: every text of every condition through the whole model,
  one text per row (today's path);
- reuse: `evaluate_conditions(..., reuse=True)`: shared prefixes packed into tree-masked rows, and each
  lesion started from the stored residual stream below its lowest edited layer.

The two paths alternate (plain, reuse, then reuse, plain, ... for `--rounds`), on the same model object,
so the machine's load falls on both; wall-clock and CPU time of this process are printed for each, with
the ratio and the largest difference of any result (and how many accuracies differ). BLiMP scoring
alone is timed the same way (`token_logprobs` with and without prefix sharing), with the plain path's
own float noise (batch 32 against batch 31, and against batch 1) for scale. Smaller plans: `--percents 1 --n-controls 1`.

    python benchmarks/lesion.py [--model smollm2] [--data ../shared/data] [--units runs/language/localize]
                                [--percents 0.25 0.5 1] [--n-controls 2] [--rounds 1] [--blimp-rounds 2]
                                [--benchmarks blimp syntaxgym perplexity] [--dtype float32] [--device cuda]
                                [--threads N] [--skip-lesion]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neuroloc import Localizer, get_stimuli, lesion, load_blimp, load_model, token_logprobs
from neuroloc.evaluate.conditions import Condition, evaluate_conditions
from neuroloc.evaluate.controls import ControlData
from neuroloc.evaluate.registry import build_benchmarks
from neuroloc.evaluate.scoring import prefix_sharing
from neuroloc.pipelines.lesion import TRUNK_CACHE_BYTES, lesion_conditions, unit_magnitudes
from neuroloc.settings import RunSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def alternate(rounds: int):
    """Path order per round: plain first, then reuse first, ... (ABBA), so drifts in load cancel."""
    return [(False, True) if r % 2 == 0 else (True, False) for r in range(rounds)]


def demo_conditions(lm, localizer: Localizer, percents, n_controls: int) -> list[Condition]:
    """The demo's plan, as `run_lesion_study` builds it: intact, then per size the target and its controls."""
    data = ControlData(magnitudes=unit_magnitudes(localizer), scores=np.asarray(localizer.t_))
    conditions = [Condition("intact")]
    for percent in percents:
        target = localizer.select(percent=percent)
        for kind, seed, units in lesion_conditions(target, n_controls=n_controls, control_kinds=("random", "magnitude"),
                                                   seed=0, data=data):
            conditions.append(Condition(f"{percent}% {kind} {seed}", lambda units=units: lesion(lm, units, "zero")))
    return conditions


def lesion_stage(args, lm, settings: RunSettings) -> None:
    stimuli = get_stimuli("language", path=str(args.data / "fedorenko2010"))
    if args.units is not None:
        localizer = Localizer.load(args.units)
    else:
        localizer = Localizer("residual", pooling="last", percent=max(args.percents), settings=settings)
        _, wall, _ = timed(lambda: localizer.fit(lm, stimuli))
        print(f"localizer fitted in {wall:.0f} s (not part of the lesion stage)")
    benchmarks = build_benchmarks(args.benchmarks, settings=settings, data_dir=args.data, limit=args.limit,
                                  syntaxgym_limit=args.syntaxgym_limit, perplexity_limit=args.perplexity_limit)
    conditions = demo_conditions(lm, localizer, args.percents, args.n_controls)
    print(f"lesion plan: {len(conditions)} conditions × {', '.join(b.name for b in benchmarks)}")
    times = {False: [0.0, 0.0], True: [0.0, 0.0]}
    frames = {}
    for order in alternate(args.rounds):
        for reuse in order:
            frames[reuse], wall, cpu = timed(lambda: evaluate_conditions(
                lm, conditions, benchmarks, cache_bytes=TRUNK_CACHE_BYTES, reuse=reuse))
            times[reuse][0] += wall
            times[reuse][1] += cpu
            print(f"  {'reuse' if reuse else 'plain'}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    plain, reuse = (pd.concat(frames[flag], keys=[c.name for c in conditions]) for flag in (False, True))
    difference = np.abs(plain.value.to_numpy() - reuse.value.to_numpy())
    accuracy = (plain.metric == "accuracy").to_numpy()
    changed = int((plain.value.to_numpy()[accuracy] != reuse.value.to_numpy()[accuracy]).sum())
    logprob = (plain.metric == "mean_logprob").to_numpy()
    perplexity = (plain.metric == "perplexity").to_numpy()
    relative = difference[perplexity] / plain.value.to_numpy()[perplexity] if perplexity.any() else np.zeros(1)
    (pw, pc), (rw, rc) = times[False], times[True]
    print(f"lesion stage ({args.rounds} round(s) each): plain {pw:.1f} s wall / {pc:.1f} s CPU; reuse {rw:.1f} s "
          f"wall / {rc:.1f} s CPU; speed-up {pw / rw:.2f}x wall, {pc / rc:.2f}x CPU")
    print(f"largest |difference|: accuracy {difference[accuracy].max(initial=0):.2e} ({changed} of "
          f"{int(accuracy.sum())} differ), mean log p {difference[logprob].max(initial=0):.2e} nats, perplexity "
          f"{relative.max(initial=0):.2e} relative (any result, absolute: {difference.max():.2e})")


def blimp_alone(args, lm, settings: RunSettings) -> None:
    pairs = load_blimp(args.data / "blimp", limit=args.limit)
    texts = [s for items in pairs.values() for pair in items for s in pair]

    def score(share: bool, batch_size: int) -> np.ndarray:
        with prefix_sharing(share):
            scores = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=batch_size, bos=settings.bos)
        return np.concatenate([s.logprobs for s in scores])

    times = {False: [0.0, 0.0], True: [0.0, 0.0]}
    results = {}
    for order in alternate(args.blimp_rounds):
        for share in order:
            results[share], wall, cpu = timed(lambda: score(share, args.batch_size))
            times[share][0] += wall
            times[share][1] += cpu
    floor = np.abs(score(False, args.batch_size - 1) - results[False]).max()
    alone = np.abs(score(False, 1) - results[False]).max()  # batch 1: no padding, another attention kernel
    (pw, pc), (rw, rc) = times[False], times[True]
    print(f"BLiMP scoring alone ({len(texts)} sentences, {args.blimp_rounds} round(s) each): plain {pw:.1f} s wall / "
          f"{pc:.1f} s CPU; prefix sharing {rw:.1f} s wall / {rc:.1f} s CPU; speed-up {pw / rw:.2f}x wall, "
          f"{pc / rc:.2f}x CPU")
    print(f"largest |difference| of a token log-probability: {np.abs(results[True] - results[False]).max():.2e} nats "
          f"(the plain path's own, batch {args.batch_size} vs {args.batch_size - 1}: {floor:.2e}; vs batch 1: "
          f"{alone:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", type=Path, default=DATA, help="folder laid out like ../shared/data")
    parser.add_argument("--units", type=Path, default=None, help="a `neuroloc localize` output (else fitted here)")
    parser.add_argument("--percents", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--n-controls", type=int, default=2)
    parser.add_argument("--limit", type=int, default=3, help="BLiMP pairs per phenomenon")
    parser.add_argument("--syntaxgym-limit", type=int, default=3)
    parser.add_argument("--perplexity-limit", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--benchmarks", nargs="+", default=["blimp", "syntaxgym", "perplexity"],
                        help="the benchmarks of the plan (those whose data the machine has)")
    parser.add_argument("--dtype", default="float32", help="float32 (default: compare numbers), bfloat16, auto")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: where the model loads)")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each path for the lesion stage")
    parser.add_argument("--blimp-rounds", type=int, default=2, help="timed runs of each path for BLiMP alone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-lesion", action="store_true", help="time BLiMP scoring alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = RunSettings(batch_size=args.batch_size, dtype=args.dtype, device=args.device, progress=False)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    device = next(lm.model.parameters()).device
    print(f"{args.model} ({lm.dtype}) on {device}, torch threads {torch.get_num_threads()}")
    token_logprobs(lm.model, lm.tokenizer, ["A warm-up sentence.", "A warm-up line."], batch_size=2, bos=settings.bos)
    if "blimp" in args.benchmarks:
        blimp_alone(args, lm, settings)
    if not args.skip_lesion:
        lesion_stage(args, lm, settings)


if __name__ == "__main__":
    main()
