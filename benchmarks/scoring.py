"""Scoring throughput: neuroloc's batched scorer against a plain batch-1 transformers loop, same texts.

Both compute log p of every token of each text after a BOS token (what BLiMP, SyntaxGym and perplexity
need). The plain loop is what a typical research script does: one text per forward pass, a full
log_softmax over the vocabulary. neuroloc sorts texts by length, pads little, batches, and computes
logit − logsumexp on real positions only. Prints texts/s and tokens/s of both, the speed-up, and the
largest difference of the per-text totals (they must agree).

    python benchmarks/scoring.py [--model smollm2] [--blimp ../shared/data/blimp] [--device cpu|cuda]
                                 [--dtype float32] [--limit 10] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from neuroloc import load_blimp, load_model, token_logprobs

BLIMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "blimp"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(model, tokenizer, texts) -> list[float]:
    """The baseline: one text per forward, log_softmax over the vocabulary, sum over the text's tokens."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = model.get_input_embeddings().weight.device
    totals = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[bos] + tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            totals.append(float(logprobs.gather(-1, ids[0, 1:, None]).sum()))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--blimp", type=Path, default=BLIMP, help="BLiMP JSONL folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--limit", type=int, default=10, help="BLiMP pairs per phenomenon")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    pairs = load_blimp(args.blimp, limit=args.limit)
    texts = [s for items in pairs.values() for pair in items for s in pair]
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    n_tokens = sum(len(ids) for ids in lm.tokenizer(texts, add_special_tokens=False)["input_ids"])
    print(f"{args.model} ({lm.identity['dtype']}) on {args.device}, torch threads {torch.get_num_threads()}: "
          f"{len(texts)} BLiMP sentences, {n_tokens} tokens")
    plain_loop(lm.model, lm.tokenizer, texts[:8])  # warm-up
    token_logprobs(lm.model, lm.tokenizer, texts[:8], batch_size=args.batch_size, bos="prepend")
    sync(args.device)
    start, cpu = time.perf_counter(), time.process_time()
    baseline = plain_loop(lm.model, lm.tokenizer, texts)
    sync(args.device)
    plain_s, plain_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    ours = [s.total for s in token_logprobs(lm.model, lm.tokenizer, texts, batch_size=args.batch_size, bos="prepend")]
    sync(args.device)
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(baseline))))
    print(f"plain batch-1 loop: {plain_s:.2f} s = {len(texts) / plain_s:,.1f} texts/s, {n_tokens / plain_s:,.0f} tokens/s")
    print(f"neuroloc token_logprobs (batch {args.batch_size}): {ours_s:.2f} s = {len(texts) / ours_s:,.1f} texts/s, "
          f"{n_tokens / ours_s:,.0f} tokens/s")
    print(f"speed-up: {plain_s / ours_s:.2f}x wall-clock, {plain_cpu / ours_cpu:.2f}x in CPU time of this process "
          f"({plain_cpu:.2f} s vs {ours_cpu:.2f} s: on a shared CPU the fairer figure); largest |difference| "
          f"of text log-probabilities: {diff:.2e} nats")


if __name__ == "__main__":
    main()
