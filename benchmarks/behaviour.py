"""The behavioural benchmarks (reasoning, theory_of_mind) on a real model: accuracy per subset beside
its chance level, the binomial test against chance, the last-location pattern, and the run time.

    python benchmarks/behaviour.py [--model smollm2] [--per-cell 24] [--shots K] [--batch-size 32] [--list-choices]
                                   [--benchmarks reasoning,theory_of_mind]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from neuroloc import load_model
from neuroloc.evaluate.benchmark import BenchmarkOptions
from neuroloc.evaluate.chance import above_chance
from neuroloc.evaluate.reasoning import ReasoningConfig
from neuroloc.evaluate.reasoning import benchmark as reasoning
from neuroloc.evaluate.theory_of_mind import TheoryOfMindConfig, last_location_pattern
from neuroloc.evaluate.theory_of_mind import benchmark as theory_of_mind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--per-cell", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list-choices", action="store_true")
    parser.add_argument("--shots", type=int, default=None, help="solved examples (default: each config's)")
    parser.add_argument("--benchmarks", default="reasoning,theory_of_mind")
    args = parser.parse_args()
    lm = load_model(args.model, dtype="float32")
    options = BenchmarkOptions(batch_size=args.batch_size, bos="prepend")
    common = dict(seed=args.seed, per_cell=args.per_cell, list_choices=args.list_choices,
                  **({} if args.shots is None else {"shots": args.shots}))
    builders = {"reasoning": lambda: reasoning(options, ReasoningConfig(**common)),
                "theory_of_mind": lambda: theory_of_mind(options, TheoryOfMindConfig(**common))}
    built = [builders[name]() for name in args.benchmarks.split(",")]
    frames = []
    for benchmark in built:
        start = time.perf_counter()
        results = benchmark.run(lm.model, lm.tokenizer)
        seconds = time.perf_counter() - start
        items = int(results.loc[(results.subset == "overall") & (results.metric == "n_items"), "value"].iloc[0])
        print(f"{benchmark.name}: {items} items in {seconds:.1f} s ({items / seconds:.1f} items/s)")
        frames.append(results)
    results = pd.concat(frames, ignore_index=True)
    table = above_chance(results)
    exact = results[results.metric == "exact_match"].set_index(["benchmark", "subset"])["value"]
    table["exact_match"] = [exact[(b, s)] for b, s in zip(table.benchmark, table.subset)]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if "theory_of_mind" in set(results.benchmark):
            extra = results[results.metric.isin(["false_minus_true", "last_location_rate"])
                            & results.subset.str.startswith(("belief", "false_belief", "true_belief"))]
            print(extra.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            print(last_location_pattern(results).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
