"""Labelled prompt–answer data: the input of task-neuron studies (relations, knowledge, culture, skills).

A file (JSONL or CSV) has one item per line/row: `prompt`, `answer` (a continuation of one or more
tokens), optional `choices` (multiple choice: a JSON list, or `|`-separated in CSV; it must contain the
answer), `label` (relation, culture, skill, …) and optional `split` (`identification`/`train` or
`test`/`heldout`). Items without a split are assigned one by a stable hash of (label, prompt, answer),
so the same item always lands on the same side, whatever else the file holds.

`encode_continuations` is the one place prompts and answers become token ids for scoring and
attribution: prompt and continuation are encoded jointly (as lm-evaluation-harness does) and split
where the prompt's own tokens end, so a continuation is scored exactly as the model would read it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import NeurolocError
from ..text.encoding import encode

__all__ = ["IDENTIFICATION", "TEST", "EncodedContinuation", "PromptSet", "encode_continuations", "join_answer",
           "load_prompts", "stable_split"]

IDENTIFICATION, TEST = "identification", "test"
_SPLIT_NAMES = {"identification": IDENTIFICATION, "train": IDENTIFICATION, "localize": IDENTIFICATION,
                "test": TEST, "heldout": TEST, "held-out": TEST, "eval": TEST}


def stable_split(keys: Sequence[str], test_fraction: float = 0.5) -> list[str]:
    """`identification` or `test` per key from the SHA-1 of the key: fixed across runs and machines,
    and an item's side never depends on which other items are present."""
    if not 0.0 < test_fraction < 1.0:
        raise NeurolocError(f"test_fraction must be in (0, 1), got {test_fraction}")
    out = []
    for key in keys:
        value = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
        out.append(TEST if value < test_fraction else IDENTIFICATION)
    return out


@dataclass
class PromptSet:
    """Prompt–answer items with labels and an identification/test split (one list entry per item)."""

    prompts: list[str]
    answers: list[str]
    labels: list[str]
    splits: list[str]
    choices: list[tuple[str, ...] | None] = field(default_factory=list)
    name: str = "prompts"

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if not self.choices:
            self.choices = [None] * n
        for column in ("answers", "labels", "splits", "choices"):
            if len(getattr(self, column)) != n:
                raise NeurolocError(f"{self.name}: {column} has {len(getattr(self, column))} entries for {n} prompts")
        for i, (prompt, answer, options, split) in enumerate(zip(self.prompts, self.answers, self.choices,
                                                                 self.splits)):
            if not prompt.strip():
                raise NeurolocError(f"{self.name}: item {i + 1} has an empty prompt")
            if not answer.strip():
                raise NeurolocError(f"{self.name}: item {i + 1} ({prompt[:40]!r}) has an empty answer")
            if options is not None and answer not in options:
                raise NeurolocError(f"{self.name}: item {i + 1} ({prompt[:40]!r}): the choices {list(options)} do not "
                                    f"contain the answer {answer!r}")
            if split not in (IDENTIFICATION, TEST):
                raise NeurolocError(f"{self.name}: item {i + 1} has split {split!r}; use identification or test")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def label_names(self) -> list[str]:
        """Labels in order of first appearance."""
        return list(dict.fromkeys(self.labels))

    def indices(self, label: str | None = None, split: str | None = None) -> list[int]:
        return [i for i in range(len(self)) if (label is None or self.labels[i] == label)
                and (split is None or self.splits[i] == split)]

    def subset(self, indices: Iterable[int], name: str | None = None) -> "PromptSet":
        idx = list(indices)
        return PromptSet([self.prompts[i] for i in idx], [self.answers[i] for i in idx],
                         [self.labels[i] for i in idx], [self.splits[i] for i in idx],
                         [self.choices[i] for i in idx], name or self.name)

    def split(self, which: str) -> "PromptSet":
        return self.subset(self.indices(split=which), f"{self.name}:{which}")

    def limit(self, per_label: int | None) -> "PromptSet":
        """The first `per_label` items of every label (all when None)."""
        if per_label is None:
            return self
        keep = [i for label in self.label_names for i in self.indices(label)[:per_label]]
        return self.subset(sorted(keep))

    def check_labels(self, min_prompts: int = 2, split: str | None = None) -> None:
        """Every label needs `min_prompts` items (in `split` when given) to be scored and tested."""
        for label in self.label_names:
            n = len(self.indices(label, split))
            if n < min_prompts:
                where = f" in the {split} split" if split else ""
                raise NeurolocError(f"{self.name}: label {label!r} has {n} prompts{where}; it needs at least "
                                    f"{min_prompts} (add prompts or drop the label)")

    def content_hash(self) -> str:
        payload = json.dumps([self.prompts, self.answers, self.labels, self.splits,
                              [list(c) if c else None for c in self.choices]], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------ loading
def choice_list(value: Any, where: str) -> Any:
    """A choices cell as a list: a JSON list (`["a", "b"]`) or `a|b|c` (parts as written); other values as
    they are, for the caller to check."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return text.split("|")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise NeurolocError(f"{where}: choices {text[:60]!r} are not a JSON list ({err.msg})") from None


def _choices(value, where: str) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    value = choice_list(value, where)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) or len(value) < 2:
        raise NeurolocError(f"{where}: choices must be a list of at least two strings, got {value!r}")
    return tuple(value)


def _records(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise NeurolocError(f"{path}:{n}: not a JSON object ({err.msg})") from None
                if not isinstance(rows[-1], dict):
                    raise NeurolocError(f"{path}:{n}: each line must be a JSON object with prompt and answer")
        return rows
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    raise NeurolocError(f"{path}: unknown prompt file type {suffix!r}; use .jsonl, .csv or .tsv")


def load_prompts(path: str | Path, *, label: str | None = None, test_fraction: float = 0.5,
                 name: str | None = None) -> PromptSet:
    """Read a prompt–answer file. Rows without a `label` get `label` (default: the file's stem); rows
    without a `split` are split by `stable_split` with `test_fraction`."""
    path = Path(path)
    if not path.is_file():
        raise NeurolocError(f"prompt file {path} does not exist")
    rows = _records(path)
    if not rows:
        raise NeurolocError(f"{path}: no items")
    prompts, answers, labels, splits, choices = [], [], [], [], []
    for n, row in enumerate(rows, start=1):
        where = f"{path}: item {n}"
        for column in ("prompt", "answer"):
            if not isinstance(row.get(column), str):
                raise NeurolocError(f"{where} has no {column!r} text (columns: {sorted(row)})")
        prompts.append(row["prompt"])
        answers.append(row["answer"])
        labels.append(str(row.get("label") or label or path.stem))
        choices.append(_choices(row.get("choices"), where))
        split = row.get("split")
        if split in (None, ""):
            splits.append(None)
        elif str(split).lower() in _SPLIT_NAMES:
            splits.append(_SPLIT_NAMES[str(split).lower()])
        else:
            raise NeurolocError(f"{where}: unknown split {split!r}; use identification (or train) and test")
    missing = [i for i, s in enumerate(splits) if s is None]
    hashed = stable_split([f"{labels[i]}\x1f{prompts[i]}\x1f{answers[i]}" for i in missing], test_fraction)
    for i, s in zip(missing, hashed):
        splits[i] = s
    items = PromptSet(prompts, answers, labels, splits, choices, str(path))  # errors name the file
    items.name = name or path.stem
    return items


# ----------------------------------------------------------------------------------------- encoding
def join_answer(prompt: str, answer: str) -> tuple[str, str]:
    """(context, continuation): a prompt's trailing whitespace moves to the continuation, and a single
    space separates them when neither side has one ("The capital of France is" + "Paris")."""
    context = prompt.rstrip()
    gap = prompt[len(context):]
    if not gap and not answer[:1].isspace():
        gap = " "
    return context, gap + answer


@dataclass(frozen=True)
class EncodedContinuation:
    """Token ids of BOS (when prepended) + prompt + continuation; tokens `start:` are the continuation."""

    ids: tuple[int, ...]
    start: int

    @property
    def n_answer(self) -> int:
        return len(self.ids) - self.start


def encode_continuations(tokenizer, prompts: Sequence[str], continuations: Sequence[str], *,
                         bos: str, max_length: int | None = None) -> list[EncodedContinuation]:
    """Encode (prompt, continuation) pairs jointly; the continuation's tokens are those after the
    prompt's own. `bos` is the BOS policy of `neuroloc.text.encoding` (the one every consumer shares).
    An answer that adds no token of its own (empty, or swallowed by the prompt's last token) is an error."""
    pairs = [join_answer(p, a) for p, a in zip(prompts, continuations)]
    whole = encode(tokenizer, [c + a for c, a in pairs], bos=bos).input_ids
    context = encode(tokenizer, [c for c, _ in pairs], bos=bos)
    out = []
    for i, (ids, ctx, special) in enumerate(zip(whole, context.input_ids, context.special)):
        while ctx and special[len(ctx) - 1] and len(ctx) > 1:  # a trailing special token (EOS) is no context
            ctx, special = ctx[:-1], special[:-1]
        n = len(ctx)
        if list(ids[:n]) != list(ctx):  # the prompt's last token merges with the answer: split at the last agreement
            n = next(j for j in range(min(len(ids), n)) if ids[j] != ctx[j])
        if len(ids) <= n or not pairs[i][1].strip():
            raise NeurolocError(f"the answer {continuations[i]!r} of prompt {prompts[i][:50]!r} tokenizes to nothing "
                                f"after the prompt; give it visible text")
        if n == 0:
            raise NeurolocError(f"prompt {prompts[i][:50]!r} has no tokens to condition on; use bos='prepend'")
        encoded = EncodedContinuation(tuple(ids), n)
        if max_length is not None and len(encoded.ids) > max_length:
            raise NeurolocError(f"prompt {i} with its answer is {len(encoded.ids)} tokens long; the model takes at "
                                f"most {max_length}")
        out.append(encoded)
    return out
