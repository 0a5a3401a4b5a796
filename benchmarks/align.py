"""Brain-alignment benchmarks on SmolLM2.

`speed`: feature extraction (every residual layer, last-token pooling) in stimuli/s against a bare
forward pass over the same encoded batches, and ridge fitting time (leave-one-out over 7 penalties,
one training fold) for 10³ and 10⁵ targets — neuroloc's torch solver beside scikit-learn's RidgeCV and
himalaya's RidgeCV (5-fold inner search; only when installed).

`simulate`: the note's study. UD English EWT sentences grouped into passages by document, responses
of several simulated subjects driven by a hidden linear map of the language units' features (plus
noise at a chosen SNR), then `neuroloc.align` with random controls, all units, every layer, the
confounds and the inter-subject ceiling.

    python benchmarks/align.py speed [--stimuli 256] [--batch-size 32]
    python benchmarks/align.py simulate --units /tmp/lang [--sentences 300] [--snr 0.5] [--out runs/align-sim]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from neuroloc import load_model
from neuroloc.record.features import extract_features
from neuroloc.text.encoding import batches, encode, pad_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def passages(n_sentences: int, per_passage: int = 5, max_words: int = 30) -> tuple[list[str], list[str]]:
    """EWT dev sentences, `per_passage` consecutive sentences of one document per passage."""
    from neuroloc.stimuli.treebank import read_conllu

    corpus = read_conllu(DATA / "ud" / "en_ewt-ud-dev.conllu")
    texts, groups, current, doc = [], [], [], None
    for sentence in corpus:
        if sentence.doc_id != doc:
            current, doc = [], sentence.doc_id
        if not 3 <= len(sentence.words) <= max_words:
            continue
        current.append(sentence.text)
        if len(current) == per_passage:
            texts += current
            groups += [f"{doc}#{len(groups)}"] * per_passage
            current = []
        if len(texts) >= n_sentences:
            break
    return texts, groups


def speed(args) -> None:
    lm = load_model("smollm2")
    texts, _ = passages(args.stimuli)
    sites = lm.layout.sites("residual")
    extract_features(lm, texts[:32], sites, batch_size=args.batch_size, bos="prepend")  # warm up
    encoded = encode(lm.tokenizer, texts)
    prepared = [b.inputs(lm.device) for b in batches(encoded, args.batch_size, pad=pad_id(lm.tokenizer))]
    bare = float("inf")
    with torch.inference_mode():
        for _ in range(args.repeats):
            start = time.perf_counter()
            for batch in prepared:
                lm.model(**batch)
            bare = min(bare, time.perf_counter() - start)
    ours = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        extract_features(lm, texts, sites, batch_size=args.batch_size, bos="prepend")
        ours = min(ours, time.perf_counter() - start)
    print(f"feature extraction, {len(texts)} stimuli, {len(sites)} residual sites, batch {args.batch_size}:")
    print(f"  bare forward  {len(texts) / bare:8.1f} stimuli/s")
    print(f"  features      {len(texts) / ours:8.1f} stimuli/s   (features/bare ratio {bare / ours:.2f})")
    ridge_timings(args)


def ridge_timings(args) -> None:
    from sklearn.linear_model import RidgeCV

    from neuroloc.align.ridge import DEFAULT_ALPHAS, fit_predict

    rng = np.random.default_rng(0)
    n, p = args.train, args.features
    x = rng.normal(size=(n + 60, p))
    for targets in (1_000, 100_000):
        y = x @ rng.normal(size=(p, targets)) * 0.1 + rng.normal(size=(n + 60, targets))
        for dtype in (torch.float64, torch.float32):
            xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
            start = time.perf_counter()
            fit_predict(xt[:n], yt[:n], xt[n:], alpha_per_target=True)
            print(f"  ridge LOO (neuroloc, torch {str(dtype)[6:]}) {n}×{p} → {targets:>6} targets: "
                  f"{time.perf_counter() - start:7.2f} s")
        if targets <= args.sklearn_max:
            start = time.perf_counter()
            RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(x[:n], y[:n]).predict(x[n:])
            print(f"  ridge LOO (scikit-learn RidgeCV)       {n}×{p} → {targets:>6} targets: "
                  f"{time.perf_counter() - start:7.2f} s")
        try:
            from himalaya.backend import set_backend
            from himalaya.ridge import RidgeCV as HimalayaRidgeCV
        except ImportError:
            continue
        set_backend("torch", on_error="warn")
        start = time.perf_counter()
        model = HimalayaRidgeCV(alphas=np.asarray(DEFAULT_ALPHAS), cv=5)
        model.fit(x[:n].astype(np.float32), y[:n].astype(np.float32))
        model.predict(x[n:].astype(np.float32))
        print(f"  ridge 5-fold (himalaya RidgeCV, torch)  {n}×{p} → {targets:>6} targets: "
              f"{time.perf_counter() - start:7.2f} s")


def simulate(args) -> None:
    from neuroloc.align import oracle_r, simulate_recordings
    from neuroloc.localize.localizer import LOCALIZER_FILE, Localizer
    from neuroloc.pipelines.align import align
    from neuroloc.units import UnitSet

    units_dir = Path(args.units)
    units = Localizer.load(units_dir).units_ if (units_dir / LOCALIZER_FILE).is_file() else UnitSet.load(units_dir)
    lm = load_model("smollm2")
    texts, groups = passages(args.sentences)
    start = time.perf_counter()
    features = extract_features(lm, texts, units, passages=groups, batch_size=args.batch_size,
                                bos="prepend").units(units).numpy()
    print(f"{len(texts)} sentences in {len(set(groups))} passages; {len(units)} language units; "
          f"features in {time.perf_counter() - start:.1f} s")
    recordings = simulate_recordings(features, texts, groups, n_subjects=args.subjects, n_neuroids=args.neuroids,
                                     snr=args.snr, n_rois=2, seed=args.seed)
    start = time.perf_counter()
    result = align(lm, recordings, units, controls=args.controls, layers="all", seed=args.seed,
                   batch_size=args.batch_size, out=args.out)
    print(f"alignment in {time.perf_counter() - start:.1f} s; oracle r = {oracle_r(args.snr):.3f}; "
          f"ceiling {result.ceiling.value():.3f} "
          f"(95% {result.ceiling.table.low.iloc[0]:.3f}–{result.ceiling.table.high.iloc[0]:.3f})")
    summary = result.summary
    columns = ["features", "n_units", "score", "sd_folds", "normalized", "rank", "p"]
    print(summary[summary.kind != "random"][columns].round(4).to_string(index=False))
    random = summary[summary.kind == "random"].score
    print(f"random sets: {random.mean():.4f} ± {random.std(ddof=1):.4f} (min {random.min():.4f}, "
          f"max {random.max():.4f}, n={len(random)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fast = commands.add_parser("speed")
    fast.add_argument("--stimuli", type=int, default=256)
    fast.add_argument("--batch-size", type=int, default=32)
    fast.add_argument("--repeats", type=int, default=2)
    fast.add_argument("--train", type=int, default=540, help="training stimuli (Pereira: ~560 per fold)")
    fast.add_argument("--features", type=int, default=576, help="features (one SmolLM2 residual layer)")
    fast.add_argument("--sklearn-max", type=int, default=1_000, help="largest target count for scikit-learn")
    study = commands.add_parser("simulate")
    study.add_argument("--units", required=True, help="a `neuroloc localize` output folder")
    study.add_argument("--sentences", type=int, default=300)
    study.add_argument("--subjects", type=int, default=5)
    study.add_argument("--neuroids", type=int, default=40, help="per subject")
    study.add_argument("--snr", type=float, default=0.5)
    study.add_argument("--controls", type=int, default=20)
    study.add_argument("--batch-size", type=int, default=32)
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"speed": speed, "simulate": simulate}[args.command](args)


if __name__ == "__main__":
    main()
