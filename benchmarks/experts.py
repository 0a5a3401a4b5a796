"""Speed and memory of recording expert neurons on a tiny mixture-of-experts model.

A random Qwen3-MoE (transformers' fused experts; hidden 256, 4 layers, 8 experts of 128 neurons, top-2)
runs the same length-sorted batches three ways: a bare forward pass (with the LM head), the bare body
(stopped after the last layer, as a recording is), and `collect` of every `expert` site (per-expert
moments and token statistics over the routed tokens). It prints tokens/s and the recording's cost as a
multiple of the bare forward pass (target ≤ 1.3×), both in wall time and in this process's CPU time
(the steadier figure on a shared machine; one torch thread by default), and the peak RSS of recording
the texts once and ten times over, each in a fresh process (memory must not grow with the stimuli).

    python benchmarks/experts.py [--n-texts 64] [--batch-size 16] [--repeats 5] [--hidden 256] [--threads 1]
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
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuroloc import StimulusSet, wrap_model  # noqa: E402
from neuroloc.models.hooks import hooks, run_forward  # noqa: E402
from neuroloc.record.collect import collect  # noqa: E402
from neuroloc.record.recorder import Recorder  # noqa: E402
from neuroloc.text.encoding import batches, encode, pad_id  # noqa: E402
from tests.tiny import tiny_tokenizer  # noqa: E402

WORDS = ("the quick brown fox jumps over lazy dog she didn't know that keys were in drawer so looked elsewhere "
         "sentences and non-word strings language localizer contrasts them what is").split()


def texts(n: int) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 24, (n,), generator=generator).tolist()
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=generator)) for k in lengths]


def model(hidden: int):
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model("qwen3_moe", vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=4,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                                  intermediate_size=2 * hidden, moe_intermediate_size=hidden // 2, num_experts=8,
                                  num_experts_per_tok=2, norm_topk_prob=True, pad_token_id=0, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    return wrap_model(AutoModelForCausalLM.from_config(config).float().eval(), tokenizer, name="tiny-qwen3-moe")


def best_times(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Per function, the best (wall, CPU) seconds over `repeats` rounds, the functions interleaved."""
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = model(args.hidden)
    items = texts(args.n_texts)
    stimuli = StimulusSet(name="bench", texts=items, conditions=["A", "B"] * (len(items) // 2) + ["A"] * (len(items) % 2))
    sites = lm.layout.sites("expert")
    recorder = Recorder(lm, sites, pooling="mean", batch_size=args.batch_size, bos="prepend")
    if args.rss_child:
        store = collect(recorder, stimuli)
        for _ in range(args.rss_child - 1):
            store.merge(collect(recorder, stimuli))
        size = sum(v.numel() * v.element_size() for v in store.state_dict().values())
        print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "store_bytes": size, "n": store.get("tokens", "A", sites[0].name).n}))
        return
    encoded = encode(lm.tokenizer, items, bos="prepend")
    inputs = [b.inputs("cpu") for b in batches(encoded, args.batch_size, pad=pad_id(lm.tokenizer))]
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

    def recording() -> None:
        collect(recorder, stimuli)

    print(f"model: random qwen3_moe, hidden {args.hidden}, 4 layers, 8 experts × {args.hidden // 2} neurons, top-2 "
          f"({len(sites)} expert sites); {len(items)} texts, {tokens} tokens, batch size {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    bare()  # warm-up
    recording()
    times = best_times({"bare forward (with LM head)": bare, "bare body (stopped after the last layer)": body,
                        "recording every expert site (moments + token statistics)": recording}, args.repeats)
    for name, (wall, cpu) in times.items():
        print(f"{name}: {tokens / wall:,.0f} tokens/s wall, {tokens / cpu:,.0f} tokens/CPU-s")
    (bare_wall, bare_cpu), (body_wall, body_cpu), (rec_wall, rec_cpu) = times.values()
    print(f"recording/bare forward cost: {rec_wall / bare_wall:.2f}x wall, {rec_cpu / bare_cpu:.2f}x CPU "
          f"(target <= 1.3x)")
    print(f"recording/bare body cost: {rec_wall / body_wall:.2f}x wall, {rec_cpu / body_cpu:.2f}x CPU")
    runs = {}
    for repeats in (1, 10):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(repeats), "--n-texts", str(args.n_texts),
                              "--batch-size", str(args.batch_size), "--hidden", str(args.hidden),
                              "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        runs[repeats] = json.loads(out.strip().splitlines()[-1])
    print(f"statistics: {runs[1]['store_bytes']:,} bytes after the texts once, {runs[10]['store_bytes']:,} after ten "
          f"times ({runs[1]['n']} and {runs[10]['n']} routed tokens counted at {sites[0].name})")
    print(f"peak RSS: once {runs[1]['peak_rss_mib']:,.0f} MiB, ten times {runs[10]['peak_rss_mib']:,.0f} MiB "
          f"(growth {100 * (runs[10]['peak_rss_mib'] - runs[1]['peak_rss_mib']) / runs[1]['peak_rss_mib']:.1f}%)")


if __name__ == "__main__":
    main()
