"""Speed and memory of the activation-probability pass (LAPE's counting) on SmolLM2.

Prints tokens/s of a bare forward pass (the whole model, and the body only, stopped after the last
layer like the counting pass) and of the multilingual study's counting pass (`MultilingualConfig.localizer`:
the Recorder's token statistics of all 30 `mlp_gate` sites into a StatsStore labelled by language), on
the same batches of PUD sentences (several languages), their ratio (target ≥ 0.9), and the peak-RSS growth
between counting the texts once and ten times over (each in a fresh process; target < 10%).

    python benchmarks/languages.py [--n-texts 48] [--batch-size 16] [--dtype float32] [--repeats 2]
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

from neuroloc import MultilingualConfig, RunSettings, StimulusSet, load_model
from neuroloc.models.hooks import hooks, run_forward
from neuroloc.stimuli.corpora import load_pud
from neuroloc.text.encoding import batches, encode, pad_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGUAGES = ("en", "de", "zh", "ru", "hi", "id")


def texts(n: int) -> StimulusSet:
    """`n` PUD sentences, as many per language as fit, labelled by language."""
    corpus = load_pud(DATA, LANGUAGES)
    per = -(-n // len(LANGUAGES))
    pairs = [(t, lang) for lang in LANGUAGES for t in corpus.texts[lang][:per]][:n]
    return StimulusSet("pud", tuple(t for t, _ in pairs), tuple(lang for _, lang in pairs))


def count(lm, stimuli: StimulusSet, batch_size: int, store=None):
    """The study's counting pass."""
    localizer = MultilingualConfig().localizer(sorted(set(stimuli.conditions)),
                                               RunSettings(batch_size=batch_size, progress=False))
    return localizer.record(lm, stimuli, store)


def prepared(lm, items, batch_size):
    encoded = encode(lm.tokenizer, items, bos="prepend")
    return [b.inputs(lm.device) for b in batches(encoded, batch_size, pad=pad_id(lm.tokenizer))]


def best_rate(fn, tokens: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-texts", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    lm = load_model("smollm2", dtype=args.dtype)
    stimuli = texts(args.n_texts)
    if args.rss_child:
        store = count(lm, stimuli, args.batch_size)
        for _ in range(args.rss_child - 1):
            count(lm, stimuli, args.batch_size, store)
        n = sum(store.count(label, "tokens") for label in store.labels("tokens"))
        print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": n}))
        return
    inputs = prepared(lm, stimuli.texts, args.batch_size)
    tokens = sum(int(b["attention_mask"].sum()) for b in inputs)
    last = lm.layout.n_layers - 1

    def bare() -> None:
        with torch.inference_mode():
            for batch in inputs:
                lm.model(**batch)

    def body() -> None:
        with torch.inference_mode(), hooks(lm.layout, stop_after_layer=last):
            for batch in inputs:
                run_forward(lm.model, **batch)

    def counting() -> None:
        count(lm, stimuli, args.batch_size)

    print(f"model smollm2 ({args.dtype}), {len(stimuli)} PUD sentences in {', '.join(LANGUAGES)}, {tokens} tokens, "
          f"batch size {args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.repeats}")
    bare()  # warm-up
    rates = {"bare forward (with LM head)": best_rate(bare, tokens, args.repeats),
             "bare body (stopped after the last layer)": best_rate(body, tokens, args.repeats),
             "counting act(gate) > 0 on 30 mlp_gate sites": best_rate(counting, tokens, args.repeats)}
    for name, rate in rates.items():
        print(f"{name}: {rate:,.0f} tokens/s")
    values = list(rates.values())
    print(f"counting/bare forward ratio: {values[2] / values[0]:.2f}")
    print(f"counting/bare body ratio: {values[2] / values[1]:.2f}")
    peaks = {}
    for times in (1, 10):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(times), "--n-texts", str(args.n_texts),
                              "--batch-size", str(args.batch_size), "--dtype", args.dtype],
                             check=True, capture_output=True, text=True).stdout
        peaks[times] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
    print(f"peak RSS: once {peaks[1]:,.0f} MiB, ten times {peaks[10]:,.0f} MiB")
    print(f"rss growth 10x: {100 * (peaks[10] - peaks[1]) / peaks[1]:.1f}%")


if __name__ == "__main__":
    main()
