"""Cost and findings of the reliability analyses on SmolLM2 with the 480 Fedorenko localizer strings.

Times, in one process and on the same model, a plain localize (`Localizer("residual").fit`: the path
`neuroloc localize` runs) against `assess` with K = 2 folds and 1,000 permutations (one recording pass
with statistics per fold and the pooled rows kept, then split-half, held-out, stability, permutation
null and token-count checks), each `--repeats` times alternately, and prints the best wall-clock and CPU
times and their ratio (the CPU is shared, so CPU time is printed too). Target: ratio <= 1.2.

With `--findings` it also prints what the analyses say about the language units: split-half Jaccard
against chance, held-out d against random units, the permutation p, the untrained-model null (seeds 0
and 1), the effect of length matching, and the same numbers for a null contrast (the 240 sentences
split at random into two fake conditions).

    python benchmarks/reliability.py [--repeats 2] [--findings]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neuroloc import Localizer, StimulusSet, load_model
from neuroloc.localize.confounds import length_explained, token_counts
from neuroloc.localize.permutation import permutation_null
from neuroloc.localize.reliability import ReliabilityConfig, assess, fold_fits, held_out, split_half, stability
from neuroloc.settings import RunSettings
from neuroloc.stimuli.language import load_language_localizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"


def timed(run) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def fake_split(stimuli: StimulusSet, seed: int) -> StimulusSet:
    sentences = stimuli.texts_of("sentences")
    fake = np.where(np.random.default_rng(seed).permutation(len(sentences)) % 2 == 0, "A", "B")
    return StimulusSet("null-contrast", tuple(sentences), tuple(fake), ("A", "B"))


def show(title: str, frame: pd.DataFrame, columns: list[str]) -> None:
    print(f"\n{title}")
    print(frame[[c for c in columns if c in frame]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--findings", action="store_true")
    args = parser.parse_args()
    settings = RunSettings(batch_size=args.batch_size, dtype="float32", progress=False)
    lm = load_model("smollm2", dtype="float32")
    stimuli = load_language_localizer(DATA if DATA.is_dir() else None)
    config = ReliabilityConfig(folds=2, permutations=1000)

    def plain():
        return Localizer("residual", batch_size=args.batch_size).fit(lm, stimuli)

    def reliable():
        return assess(lm, stimuli, Localizer("residual", batch_size=args.batch_size), config, settings=settings)

    times = {"plain": [], "reliability": []}
    result = None
    for _ in range(args.repeats):
        times["plain"].append(timed(plain)[:2])
        wall, cpu, result = timed(reliable)
        times["reliability"].append((wall, cpu))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    print(f"SmolLM2-135M, {len(stimuli)} Fedorenko strings, residual sites, last-token pooling, float32, "
          f"batch {args.batch_size}, best of {args.repeats}")
    print(f"plain localize:              wall {best['plain'][0]:7.2f} s   cpu {best['plain'][1]:7.2f} s")
    print(f"reliability (K=2, 1000 perm): wall {best['reliability'][0]:7.2f} s   cpu {best['reliability'][1]:7.2f} s")
    print(f"ratio:                        wall {best['reliability'][0] / best['plain'][0]:.3f}      "
          f"cpu {best['reliability'][1] / best['plain'][1]:.3f}   (target <= 1.2)")
    localizer = result.localizer

    def analyses():  # what assess does after its recording pass
        fits = fold_fits(localizer)
        split_half(localizer, fits=fits)
        held_out(localizer, stimuli, draws=config.random_sets, seed=0, fits=fits)
        stability(localizer, stimuli, config.stability)
        permutation_null(localizer, localizer.fold_stats_.rows, stimuli, n=1000, seed=0, alpha=0.05)
        length_explained(localizer, localizer.fold_stats_.rows, stimuli,
                         token_counts(lm.tokenizer, stimuli, settings=settings), alpha=0.05)

    def permutations():
        permutation_null(localizer, localizer.fold_stats_.rows, stimuli, n=1000, seed=0, alpha=0.05)

    for name, run in (("analyses after the recording pass", analyses), ("of which 1000 permutations", permutations)):
        wall, cpu, _ = timed(run)
        print(f"{name + ':':34s} wall {wall:7.2f} s   cpu {cpu:7.2f} s")
    if not args.findings:
        return

    full = ReliabilityConfig(folds=2, permutations=1000, untrained=(0, 1), length_matched=True)
    real = assess(lm, stimuli, Localizer("residual", batch_size=args.batch_size), full, settings=settings)
    null = assess(lm, fake_split(stimuli, 0), Localizer("residual", batch_size=args.batch_size),
                  ReliabilityConfig(folds=2, permutations=1000), settings=settings)
    for name, found in (("language contrast (sentences vs non-words)", real), ("null contrast (fake split)", null)):
        print(f"\n=== {name}: top 1 % of residual units ===")
        show("summary", found.summary.T.reset_index(), list(found.summary.T.reset_index().columns))
        tables = found.tables
        split = tables["split_half"]
        show("split half, overall", split[split.site == "all"],
             ["label", "n_a", "n_b", "n_both", "jaccard", "jaccard_chance", "jaccard_chance_high", "p_overlap", "r",
              "r_spearman_brown"])
        show("held out", tables["held_out"], ["fold", "n_units", "t", "t_random", "d", "d_random", "d_random_high",
                                              "p_random", "roi_d", "roi_d_random", "roi_d_random_high"])
        show("stability", tables["stability"], ["fraction", "n_stimuli", "n_selected", "n_both", "jaccard",
                                                "jaccard_chance", "recall", "r"])
        show("permutation null", tables["permutation"],
             ["n_fdr", "n_fdr_null_mean", "n_fdr_null_q95", "p_n_fdr", "threshold", "threshold_null_mean",
              "threshold_null_q95", "p_threshold", "fwer_threshold", "n_fwer"])
        for key in ("token_counts", "length_explained", "length_matched", "untrained"):
            if key in tables:
                show(key, tables[key], list(tables[key].columns))
        if "untrained_layers" in tables:
            layers = tables["untrained_layers"].pivot_table(index="layer", columns="model", values="n_selected")
            print("\nselected units per layer (trained vs untrained)")
            print(layers.T.to_string())


if __name__ == "__main__":
    main()
