"""Relation accuracy: does the model still complete the facts of each relation (capital, currency, ...)?

The items are the task study's held-out (test) split: the built-in relation set (`stimuli.relations`, split by
a hash of each fact, so an item's side never depends on the others) or a lab's prompt–answer file (`path`), the
first `limit` test items of each relation. Each item is scored by the task study's scorer
(`evaluate.answers.score_answers`: the prompt and answer in one teacher-forced pass) as greedy exact match —
every answer token is the argmax given the prompt and the answer before it. Rows per relation: `accuracy`
(the exact-match rate), `n_items`, `chance` 0 (open generation: a guesser never names the answer, so a relation
the intact model never completes is at chance, its cells meaningless) and `mean_logprob` (ln p(answer | prompt)).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..config import Config, Each, InstanceOf, Interval, param
from ..errors import MissingData, NeurolocError
from ..models.loading import LoadedModel, wrap_model
from ..parse import parse_list
from ..stimuli.prompts import TEST, PromptSet, load_prompts
from .answers import score_answers
from .benchmark import RESULT_COLUMNS, Benchmark, BenchmarkOptions, existing_path

__all__ = ["NAME", "RelationsConfig", "benchmark", "evaluate_relations", "relation_items"]

NAME = "relations"


@dataclass(frozen=True)
class RelationsConfig(Config):
    """Which held-out facts are scored."""

    flags = False

    path: str | None = param(None, InstanceOf(str), None,
                             help="A prompt–answer file (prompt, answer, label; optional split) instead of the "
                                  "built-in relation set.")
    limit: int | None = param(None, Interval(int, 1, None), None, help="The first N test items of each relation.")
    relations: tuple[str, ...] | None = param(None, Each(InstanceOf(str)), None, parse=parse_list,
                                              help="Relations (labels) scored, e.g. capital,currency (default: all).")


def relation_items(options: BenchmarkOptions, config: RelationsConfig) -> PromptSet:
    """The test items of the chosen relations, the first `options.limit` of each (as the task study's
    `--max-test` limits them)."""
    if options.path is not None:
        items = load_prompts(existing_path(options.path, NAME))
    else:
        from ..stimuli.relations import load_relations

        try:
            items = load_relations().prompts
        except NeurolocError as error:  # the optional packages are missing: a study may skip the benchmark
            raise MissingData(f"{NAME}: {error}") from None
    test = items.split(TEST)
    wanted = list(config.relations or test.label_names)
    missing = [label for label in wanted if label not in test.label_names]
    if missing:
        raise NeurolocError(f"{NAME}: no test items of {', '.join(missing)} in {items.name} (it has "
                            f"{', '.join(test.label_names)}); choose relations=... among those")
    chosen = test.subset([i for i, label in enumerate(test.labels) if label in wanted], name=f"{items.name}:test")
    return chosen.limit(options.limit)


def evaluate_relations(lm: LoadedModel, items: PromptSet, *, batch_size: int, bos: str) -> pd.DataFrame:
    """Rows (relations, RELATION, accuracy | n_items | chance | mean_logprob, value), relations in item order."""
    scores = score_answers(lm, items, batch_size=batch_size, bos=bos)
    rows = []
    for label, group in scores.groupby("label", sort=False):
        rows += [(NAME, label, "accuracy", float(group["exact"].mean())), (NAME, label, "n_items", float(len(group))),
                 (NAME, label, "chance", 0.0), (NAME, label, "mean_logprob", float(group["logprob"].mean()))]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def benchmark(options: BenchmarkOptions, config: RelationsConfig | None = None) -> Benchmark:
    """The benchmark for the registry, its items read once; one subset per relation."""
    config = config or RelationsConfig()
    items = relation_items(options, config)
    described = f"{items.name}: {len(items)} test items ({items.content_hash()[:12]})"
    return Benchmark(NAME, described, lambda model, tokenizer: evaluate_relations(
        wrap_model(model, tokenizer), items, batch_size=options.batch_size, bos=options.bos),
        subsets=tuple(items.label_names))
