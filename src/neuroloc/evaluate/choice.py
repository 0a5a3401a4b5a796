"""Forced choice and exact match on choice items (`stimuli.choice_items`), and their accuracy table.

Every choice of an item is scored as a continuation of the item's prompt (`render_prompt`) in one
batched teacher-forced pass (`answers.score_continuations`, prompt and choice encoded jointly by
`stimuli.prompts.encode_continuations`):

* `correct` (forced choice): the answer has the highest total log-probability ln p(choice | prompt)
  among the choices (ties go to the first choice listed) — measurable above chance even for a small
  model that would never generate the answer;
* `exact` (exact match): every token of the answer is the argmax given the prompt and the answer's
  tokens before it, i.e. greedy generation of that many tokens produces the answer.

`summarize_choices` turns the per-item table into benchmark rows: for every condition, every
condition × difficulty, and overall (and overall × difficulty), the metrics `accuracy` (forced
choice), `exact_match`, `chance` (the forced-choice accuracy of guessing: the mean of 1 / number of
choices) and `n_items`, so a report can test a subset against chance (`evaluate.chance.above_chance`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from ..models.loading import LoadedModel
from ..stimuli.choice_items import ChoiceItem, ChoiceSet, last_mentioned, render_prompt
from ..stimuli.prompts import encode_continuations
from .answers import score_continuations
from .benchmark import RESULT_COLUMNS

__all__ = ["CHOICE_COLUMNS", "OVERALL", "choice_logprobs", "score_choices", "subset_rows", "subsets",
           "summarize_choices", "tally_choices"]

CHOICE_COLUMNS = ["item", "condition", "difficulty", "n_choices", "chance", "answer", "chosen", "correct", "exact",
                  "last_mentioned", "chose_last_mentioned"]
OVERALL = "overall"


def choice_logprobs(lm: LoadedModel, items: Sequence[ChoiceItem], *, list_choices: bool, bos: str,
                    batch_size: int, progress: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Per item: ln p(choice | prompt) of each of its choices, and whether greedy decoding of the
    answer's length produces the answer."""
    prompts, continuations, owner = [], [], []
    for index, item in enumerate(items):
        prompt = render_prompt(item, list_choices=list_choices)
        for choice in item.choices:
            prompts.append(prompt)
            continuations.append(choice)
            owner.append(index)
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    encoded = encode_continuations(lm.tokenizer, prompts, continuations, bos=bos,
                                   max_length=limit if isinstance(limit, int) else None)
    logprob, exact = score_continuations(lm, encoded, batch_size=batch_size, progress=progress,
                                         description="scoring choices")
    starts = np.cumsum([0] + [len(item.choices) for item in items])
    per_item = [logprob[starts[i]:starts[i + 1]] for i in range(len(items))]
    answer_exact = np.array([bool(exact[starts[i] + item.answer_index]) for i, item in enumerate(items)], dtype=bool)
    return per_item, answer_exact


def tally_choices(items: Sequence[ChoiceItem], scores: Sequence[Sequence[float]],
                  exact: Sequence[bool] | None = None) -> pd.DataFrame:
    """One row per item (`CHOICE_COLUMNS`) from a score per choice (the highest is chosen; ties go to
    the first) — log-probabilities from `choice_logprobs`, or any scorer's (an oracle's, in tests).
    `last_mentioned` is the index of the choice mentioned last in the context (−1: none is)."""
    if len(scores) != len(items) or (exact is not None and len(exact) != len(items)):
        raise ValueError(f"{len(items)} items but {len(scores)} score lists"
                         + ("" if exact is None else f" and {len(exact)} exact flags"))
    rows = []
    for index, (item, values) in enumerate(zip(items, scores)):
        if len(values) != len(item.choices):
            raise ValueError(f"item {index}: {len(values)} scores for {len(item.choices)} choices")
        chosen = int(np.argmax(values))
        last = last_mentioned(item.context, item.choices)
        last = -1 if last is None else last
        rows.append((index, item.condition, item.difficulty, len(item.choices), item.chance, item.answer_index,
                     chosen, chosen == item.answer_index, bool(exact[index]) if exact is not None else False,
                     last, chosen == last))
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS)


def score_choices(lm: LoadedModel, items: ChoiceSet | Sequence[ChoiceItem], *, list_choices: bool, bos: str,
                  batch_size: int, progress: bool) -> pd.DataFrame:
    """Score every item with the model (`choice_logprobs`) and tally it (`tally_choices`)."""
    items = list(items.items if isinstance(items, ChoiceSet) else items)
    logprobs, exact = choice_logprobs(lm, items, list_choices=list_choices, bos=bos, batch_size=batch_size,
                                      progress=progress)
    return tally_choices(items, logprobs, exact)


def subset_rows(benchmark: str, subset: str, scores: pd.DataFrame) -> list[tuple[str, str, str, float]]:
    """The rows of one subset: forced-choice accuracy, exact-match rate, chance level and item count."""
    return [(benchmark, subset, "accuracy", float(scores["correct"].mean())),
            (benchmark, subset, "exact_match", float(scores["exact"].mean())),
            (benchmark, subset, "chance", float(scores["chance"].mean())),
            (benchmark, subset, "n_items", float(len(scores)))]


def subsets(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The per-item rows of every subset, by name: each condition and condition/difficulty, then
    `overall` and overall/difficulty (difficulties in first-seen order; items without one are only in
    their condition and `overall`)."""
    if OVERALL in set(scores["condition"]):
        raise NeurolocError(f"an item's condition is {OVERALL!r}, the name of the whole set's subset; rename it")
    out: dict[str, pd.DataFrame] = {}
    for condition, frame in scores.groupby("condition", sort=False):
        out[str(condition)] = frame
        for difficulty, part in frame.groupby("difficulty", sort=False):
            out[f"{condition}/{difficulty}"] = part
    out[OVERALL] = scores
    for difficulty, part in scores.groupby("difficulty", sort=False):
        out[f"{OVERALL}/{difficulty}"] = part
    return out


def summarize_choices(benchmark: str, scores: pd.DataFrame) -> pd.DataFrame:
    """Benchmark rows (benchmark, subset, metric, value) for every subset of `subsets`."""
    rows = [row for subset, frame in subsets(scores).items() for row in subset_rows(benchmark, subset, frame)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
