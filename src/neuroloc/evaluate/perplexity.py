"""Perplexity over a set of texts: how much a lesion degrades language modelling in general.

Each text is scored on its own after a BOS token, every token counted. Perplexity is pooled over
tokens, exp(total NLL / total tokens), not averaged over texts, so long and short texts weigh by
their length; it therefore depends on the tokenizer and is comparable only within one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import conllu
import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from .benchmark import Benchmark, BenchmarkOptions, existing_path
from .scoring import token_logprobs


def load_texts(path: str | Path, *, limit: int | None = None) -> list[str]:
    """The first `limit` texts of a .txt file (one per non-empty line) or a .conllu file (`# text =`)."""
    path = Path(path)
    if not path.is_file():
        raise NeurolocError(f"text file {path} does not exist; pass a .txt (one text per line) or .conllu file")
    if limit is not None and limit < 1:
        raise NeurolocError(f"limit must be a positive number of texts, got {limit}")
    texts: list[str] = []
    with open(path, encoding="utf-8") as handle:
        if path.suffix == ".txt":
            texts = [line.strip() for line in handle if line.strip()][:limit]
        elif path.suffix == ".conllu":
            for sentence in conllu.parse_incr(handle):
                if limit is not None and len(texts) >= limit:
                    break
                if "text" not in sentence.metadata:
                    raise NeurolocError(
                        f"{path}: sentence {sentence.metadata.get('sent_id', len(texts) + 1)} has no '# text =' "
                        "line; add one per sentence (as Universal Dependencies treebanks do)"
                    )
                texts.append(sentence.metadata["text"])
        else:
            raise NeurolocError(f"{path}: unknown text format {path.suffix!r}; use .txt (one text per line) or .conllu")
    return texts


def evaluate_perplexity(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str] | str | Path,
    *,
    name: str | None = None,
    batch_size: int,
    bos: str,
) -> pd.DataFrame:
    """Rows `perplexity` and `mean_logprob` (nats per token) for `texts` (a list or a file for `load_texts`).

    `name` labels the subset (default: the file's stem, or "texts").
    """
    if isinstance(texts, (str, Path)):
        name = name or Path(texts).stem
        texts = load_texts(texts)
    scores = token_logprobs(model, tokenizer, texts, batch_size=batch_size, bos=bos)
    n_tokens = sum(len(score) for score in scores)
    if n_tokens == 0:
        raise NeurolocError("no tokens to score: the texts are empty")
    mean_logprob = float(np.sum([score.total for score in scores]) / n_tokens)
    subset = name or "texts"
    return pd.DataFrame(
        [("perplexity", subset, "perplexity", float(np.exp(-mean_logprob))),
         ("perplexity", subset, "mean_logprob", mean_logprob)],
        columns=["benchmark", "subset", "metric", "value"],
    )


def benchmark(options: BenchmarkOptions) -> Benchmark:
    """Perplexity for the registry: texts of `options.path`, else `data_dir/ud/en_ewt-ud-dev.conllu`,
    read once; `options.limit` texts."""
    source = existing_path(options.path or options.in_data_dir("ud/en_ewt-ud-dev.conllu"), "perplexity (a .txt or .conllu file: --perplexity-text)")
    texts = load_texts(source, limit=options.limit)
    return Benchmark("perplexity", str(source), lambda model, tokenizer: evaluate_perplexity(
        model, tokenizer, texts, name=source.stem, batch_size=options.batch_size, bos=options.bos))
