"""Perplexity per language on held-out parallel text: what a lesion does to each language the model reads.

The texts are the multilingual study's held-out split: the corpus (by default the parallel UD PUD treebanks
under the data root) is split by `stimuli.corpora.split_corpus` over all its languages with the study's
`n_identify`, `n_heldout` and seed, so units found on a language's identification texts are tested on
sentences they were not chosen on. Each chosen language is scored by `evaluate.perplexity.evaluate_perplexity`
(pooled over tokens, under the BOS policy) as its own subset: rows (multilingual_perplexity, LANG,
perplexity | mean_logprob, value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from ..config import Config, Each, InstanceOf, Interval, param
from ..errors import MissingData, NeurolocError
from ..parse import parse_list
from ..stimuli.corpora import load_corpus, split_corpus
from .benchmark import Benchmark, BenchmarkOptions
from .perplexity import evaluate_perplexity

__all__ = ["NAME", "MultilingualPerplexityConfig", "benchmark", "evaluate_multilingual_perplexity", "heldout_texts"]

NAME = "multilingual_perplexity"


@dataclass(frozen=True)
class MultilingualPerplexityConfig(Config):
    """Which held-out texts are scored: the multilingual study's split (its defaults) of a corpus."""

    flags = False

    path: str | None = param(None, InstanceOf(str), None,
                             help="A corpus as `neuroloc multilingual --corpus` reads it (default: the PUD "
                                  "treebanks under the data root).")
    limit: int | None = param(None, Interval(int, 1, None), None, help="The first N held-out texts per language.")
    languages: tuple[str, ...] | None = param(None, Each(InstanceOf(str)), None, parse=parse_list,
                                              help="Languages scored, e.g. en,fr (default: every language).")
    n_identify: int = param(300, Interval(int, 1, None), help="The study's identification texts per language.")
    n_heldout: int = param(100, Interval(int, 1, None), help="The study's held-out texts per language.")
    seed: int = param(0, Interval(int, 0, None), help="The study's seed (the split's shuffle).")


def heldout_texts(options: BenchmarkOptions, config: MultilingualPerplexityConfig) -> tuple[dict[str, list[str]], str]:
    """(language → its first `options.limit` held-out texts, the corpus's source): the corpus split over all
    its languages as the multilingual study splits it, then the chosen languages."""
    ud = options.in_data_dir("ud") if options.path is None else None
    if options.path is None and (ud is None or not any(ud.glob("*_pud-ud-test.conllu"))):  # a study may skip it
        raise MissingData(f"{NAME}: no UD PUD treebanks (ud/ under the data root); give a data root with --data DIR "
                          f"or a corpus with '{NAME}:path=...'")
    corpus = load_corpus(options.path, None, data_root=options.data_dir)
    wanted = list(config.languages or corpus.languages)
    missing = [lang for lang in wanted if lang not in corpus.languages]
    if missing:
        raise NeurolocError(f"{NAME}: no texts in {', '.join(missing)} in {corpus.source or 'the corpus'} (it has "
                            f"{', '.join(corpus.languages)}); choose languages=... among those")
    _, heldout = split_corpus(corpus, config.n_identify, config.n_heldout, seed=config.seed)
    return {lang: heldout.texts[lang][:options.limit] for lang in wanted}, corpus.source


def evaluate_multilingual_perplexity(model, tokenizer, texts: Mapping[str, Sequence[str]], *, batch_size: int,
                                     bos: str) -> pd.DataFrame:
    """Rows (multilingual_perplexity, LANG, perplexity | mean_logprob, value), one pair per language of `texts`."""
    frames = [evaluate_perplexity(model, tokenizer, list(items), name=lang, batch_size=batch_size, bos=bos)
              for lang, items in texts.items()]
    return pd.concat(frames, ignore_index=True).assign(benchmark=NAME)


def benchmark(options: BenchmarkOptions, config: MultilingualPerplexityConfig | None = None) -> Benchmark:
    """The benchmark for the registry, its held-out texts read once; one subset per language."""
    config = config or MultilingualPerplexityConfig()
    texts, source = heldout_texts(options, config)
    described = (f"{source}: held-out split (n_identify={config.n_identify}, n_heldout={config.n_heldout}, "
                 f"seed={config.seed}), {', '.join(f'{k} {len(v)}' for k, v in texts.items())} texts")
    return Benchmark(NAME, described, lambda model, tokenizer: evaluate_multilingual_perplexity(
        model, tokenizer, texts, batch_size=options.batch_size, bos=options.bos), subsets=tuple(texts))
