"""BLiMP (Warstadt et al., 2020): minimal pairs scored by whole-sentence log-probability.

A pair is correct when log p(good) > log p(bad), each sentence scored in full after a BOS token
(lm-evaluation-harness' convention). The overall score is the mean of the per-phenomenon accuracies
(a macro average over phenomena, as in Warstadt et al. and AlKhamissi et al. 2025), not over pairs.
"""

from __future__ import annotations

import importlib.util

import json
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import MissingData, NeurolocError
from .benchmark import Benchmark, BenchmarkOptions, existing_path
from .scoring import token_logprobs

HF_DATASET = "nyu-mll/blimp"


class MinimalPair(NamedTuple):
    good: str
    bad: str


def load_blimp(
    source: str | Path,
    *,
    limit: int | None = None,
    phenomena: Sequence[str] | None = None,
) -> dict[str, list[MinimalPair]]:
    """Minimal pairs per phenomenon (UID), sorted by UID, each list in file order.

    `source` is a directory of BLiMP JSONL files (fields `sentence_good`, `sentence_bad`, `UID`) or
    "hf" for the Hugging Face dataset `nyu-mll/blimp` (needs `datasets`). `limit` keeps the first N
    pairs of each phenomenon; `phenomena` keeps only those UIDs.
    """
    if limit is not None and limit < 1:
        raise NeurolocError(f"limit must be a positive number of pairs per phenomenon, got {limit}")
    if str(source) == "hf":
        return _load_hf(limit, phenomena)
    pairs = _load_dir(Path(source), limit)
    if phenomena is not None:
        unknown = sorted(set(phenomena) - set(pairs))
        if unknown:
            raise NeurolocError(
                f"unknown BLiMP phenomena {unknown} in {source}; available: {', '.join(sorted(pairs))}"
            )
        pairs = {uid: pairs[uid] for uid in phenomena}
    return dict(sorted(pairs.items()))


def evaluate_blimp(
    model: torch.nn.Module,
    tokenizer,
    source: str | Path | Mapping[str, Sequence[MinimalPair]],
    *,
    limit: int | None = None,
    phenomena: Sequence[str] | None = None,
    batch_size: int,
    bos: str,
) -> pd.DataFrame:
    """Accuracy per phenomenon and overall (mean over phenomena): columns benchmark, subset, metric, value.

    `source` is what `load_blimp` takes, or pairs already loaded (then `limit`/`phenomena` are ignored).
    """
    pairs = source if isinstance(source, Mapping) else load_blimp(source, limit=limit, phenomena=phenomena)
    texts = [sentence for items in pairs.values() for pair in items for sentence in pair]
    totals = np.array([score.total for score in token_logprobs(model, tokenizer, texts, batch_size=batch_size,
                                                                      bos=bos)])
    correct = totals[0::2] > totals[1::2]
    rows = []
    start = 0
    for uid, items in pairs.items():
        rows.append(("blimp", uid, "accuracy", float(correct[start:start + len(items)].mean())))
        start += len(items)
    rows.append(("blimp", "overall", "accuracy", float(np.mean([row[3] for row in rows]))))
    return pd.DataFrame(rows, columns=["benchmark", "subset", "metric", "value"])


def benchmark(options: BenchmarkOptions) -> Benchmark:
    """BLiMP for the registry: pairs from `options.path`, else `data_dir/blimp`, else the hub ("hf"),
    loaded once; `options.limit` pairs per phenomenon."""
    source = str(options.path or options.in_data_dir("blimp") or "hf")
    if source != "hf":
        existing_path(source, "blimp")
    elif importlib.util.find_spec("datasets") is None:
        raise MissingData("blimp: no local BLiMP folder found and the `datasets` extra is not installed; give "
                          "--benchmarks 'blimp:path=DIR' or a data root with --data DIR, or pip install "
                          "'neuroloc[datasets]' for the hub copy")
    pairs = load_blimp(source, limit=options.limit)
    return Benchmark("blimp", source, lambda model, tokenizer: evaluate_blimp(
        model, tokenizer, pairs, batch_size=options.batch_size, bos=options.bos))


def _load_dir(directory: Path, limit: int | None) -> dict[str, list[MinimalPair]]:
    if not directory.is_dir():
        raise NeurolocError(
            f"BLiMP source {directory} is not a directory; pass a folder of BLiMP .jsonl files "
            "(github.com/alexwarstadt/blimp, data/) or 'hf' to download nyu-mll/blimp"
        )
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise NeurolocError(f"no .jsonl files in {directory}; expected one BLiMP JSONL file per phenomenon")
    pairs: dict[str, list[MinimalPair]] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    pair = MinimalPair(record["sentence_good"], record["sentence_bad"])
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise NeurolocError(
                        f"{path}:{line_number} is not a BLiMP record ({err}); each line must be a JSON "
                        "object with 'sentence_good' and 'sentence_bad'"
                    ) from err
                items = pairs.setdefault(record.get("UID", path.stem), [])
                if limit is None or len(items) < limit:
                    items.append(pair)
    return pairs


def _load_hf(limit: int | None, phenomena: Sequence[str] | None) -> dict[str, list[MinimalPair]]:
    try:
        import datasets
    except ImportError as err:
        raise NeurolocError(
            "reading BLiMP from the Hugging Face hub needs the `datasets` package: "
            "pip install 'neuroloc[datasets]', or pass a directory of BLiMP JSONL files"
        ) from err
    names = list(phenomena) if phenomena is not None else datasets.get_dataset_config_names(HF_DATASET)
    split = "train" if limit is None else f"train[:{limit}]"
    pairs = {}
    for name in sorted(names):
        data = datasets.load_dataset(HF_DATASET, name, split=split)
        pairs[name] = [MinimalPair(g, b) for g, b in zip(data["sentence_good"], data["sentence_bad"])]
    return pairs
