"""Does the model know the answer? Exact match, multiple choice and log p(answer | prompt), batched.

For every item, the prompt followed by its answer (and by each of its choices, when it has some) is
scored in one teacher-forced forward pass (`stimuli.prompts.encode_continuations`: BOS first, prompt
and continuation encoded jointly):

* `logprob`: ln p(answer | prompt), summed over every answer token (`n_tokens` of them);
* `exact`: greedy decoding would produce the answer — every answer token is the argmax given the
  prompt and the answer tokens before it (this equals generating `n_tokens` tokens greedily);
* `correct`: for multiple-choice items, whether the answer has the highest total log-probability among
  the choices (ties go to the first choice listed); else `exact`.

Sequences go through the one scorer (`evaluate.scoring.score_sequences`): length-sorted, right-padded
with an attention mask and position ids over real tokens, so padding and batch size never change an
answer; a prompt shared by several continuations runs once when the hooks allow it. The model may carry
hooks (interventions).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..text.encoding import pad_id
from ..stimuli.prompts import EncodedContinuation, PromptSet, encode_continuations
from .scoring import score_sequences

__all__ = ["ANSWER_COLUMNS", "answer_accuracy", "score_answers", "score_continuations"]

ANSWER_COLUMNS = ["item", "label", "split", "logprob", "n_tokens", "exact", "correct", "choice"]


def score_continuations(lm: LoadedModel, encoded: Sequence[EncodedContinuation], *, batch_size: int,
                        progress: bool = False, description: str = "scoring answers"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(logprob, exact) per encoded sequence: Σ ln p over its continuation tokens, and whether each of
    them is the argmax of its position's logits. The scorer runs a prompt shared by several
    continuations once (`evaluate.scoring.score_sequences`)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurolocError(f"batch_size must be an int >= 1, got {batch_size!r}")
    logprob = np.zeros(len(encoded))
    exact = np.zeros(len(encoded), dtype=bool)
    with progress_bar(description, len(encoded), progress) as advance:
        scores = score_sequences(lm.model, [e.ids for e in encoded], batch_size=batch_size, pad=pad_id(lm.tokenizer),
                                 argmax=True, progress=advance)
    for i, (e, score) in enumerate(zip(encoded, scores)):
        logprob[i] = float(score.logprobs[e.start - 1:].sum())
        exact[i] = bool(score.argmax[e.start - 1:].all())
    return logprob, exact


def score_answers(lm: LoadedModel, items: PromptSet, *, batch_size: int, bos: str,
                  progress: bool = False) -> pd.DataFrame:
    """One row per item (`ANSWER_COLUMNS`): log p(answer | prompt), its token count, greedy exact
    match, correctness (the best choice for multiple-choice items, else exact match) and the index of
    the chosen choice (−1 without choices)."""
    prompts, continuations, owner = [], [], []
    for i, (prompt, answer, choices) in enumerate(zip(items.prompts, items.answers, items.choices)):
        prompts.append(prompt)
        continuations.append(answer)
        owner.append((i, -1))
        for c, choice in enumerate(choices or ()):
            prompts.append(prompt)
            continuations.append(choice)
            owner.append((i, c))
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    encoded = encode_continuations(lm.tokenizer, prompts, continuations, bos=bos,
                                   max_length=limit if isinstance(limit, int) else None)
    logprob, exact = score_continuations(lm, encoded, batch_size=batch_size, progress=progress)
    n_tokens = [e.n_answer for e in encoded]
    rows, by_item = [], {}
    for j, (i, c) in enumerate(owner):
        by_item.setdefault(i, {})[c] = j
    for i in range(len(items)):
        own = by_item[i][-1]
        choices = items.choices[i]
        if choices:
            scores = [logprob[by_item[i][c]] for c in range(len(choices))]
            choice = int(np.argmax(scores))
            correct = choices[choice] == items.answers[i]
        else:
            choice, correct = -1, bool(exact[own])
        rows.append((i, items.labels[i], items.splits[i], float(logprob[own]), n_tokens[own], bool(exact[own]),
                     bool(correct), choice))
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


def answer_accuracy(scores: pd.DataFrame) -> pd.DataFrame:
    """Per label: items, accuracy (mean `correct`), exact-match rate and mean log p(answer | prompt)."""
    grouped = scores.groupby("label", sort=False)
    return pd.DataFrame({"n_items": grouped.size(), "accuracy": grouped["correct"].mean(),
                         "exact": grouped["exact"].mean(), "mean_logprob": grouped["logprob"].mean()}).reset_index()
