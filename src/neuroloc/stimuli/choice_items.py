"""Forced-choice items (context, question, choices, answer): the input of the behavioural benchmarks.

One item is a short context (a story, premises; may be empty), a question about it, two or more
choices and the answer among them, with a `condition` (item type: false_belief, syllogism, …), an
optional `difficulty` (a level such as "1" or "second_order") and optional worked `examples` (solved
items shown before it: few-shot prompting, which lets a small model show what it can do). The
generators (`reasoning_items`, `false_belief`) and `load_choice_items` (a lab's own file) both produce
a `ChoiceSet`, so a benchmark scores generated and user items the same way.

`render_prompt` is the one place an item becomes the prompt its choices are scored after:
"{context}\\nQuestion: {question}\\nAnswer:" (and an "Options:" line when the choices are listed),
after its examples rendered the same way with their answers, each followed by a blank line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from neuroloc.errors import NeurolocError
from neuroloc.io import file_sha256
from neuroloc.stimuli.custom import cell, read_records, require_columns
from neuroloc.stimuli.prompts import choice_list

__all__ = ["ChoiceItem", "ChoiceSet", "balanced_levels", "last_mentioned", "load_choice_items", "render_prompt",
           "varied_examples"]


@dataclass(frozen=True)
class ChoiceItem:
    """One forced-choice question; `answer` is one of `choices` (all distinct, at least two)."""

    context: str
    question: str
    choices: tuple[str, ...]
    answer: str
    condition: str
    difficulty: str | None = None
    examples: tuple["ChoiceItem", ...] = ()

    def __post_init__(self) -> None:
        if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
            raise NeurolocError(f"item {self.question[:50]!r}: choices {list(self.choices)} must be at least two "
                                "distinct strings")
        if self.answer not in self.choices:
            raise NeurolocError(f"item {self.question[:50]!r}: the answer {self.answer!r} is not among the choices "
                                f"{list(self.choices)}")
        if not self.question.strip() or any(not c.strip() for c in self.choices):
            raise NeurolocError(f"item {self.question[:50]!r}: empty question or choice; give every one visible text")

    @property
    def answer_index(self) -> int:
        return self.choices.index(self.answer)

    @property
    def chance(self) -> float:
        """The accuracy of a guess among the choices."""
        return 1.0 / len(self.choices)


@dataclass(frozen=True)
class ChoiceSet:
    """Items in a fixed order, where they came from (`source`) and how they were made (`metadata`:
    generator, seed, templates, sizes per cell; a file's SHA-256)."""

    name: str
    items: tuple[ChoiceItem, ...]
    source: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.items:
            raise NeurolocError(f"{self.source}: no items")

    def __len__(self) -> int:
        return len(self.items)

    def sizes(self) -> dict[str, int]:
        """Items per cell, keyed "condition" or "condition/difficulty", in first-seen order."""
        out: dict[str, int] = {}
        for item in self.items:
            key = item.condition if item.difficulty is None else f"{item.condition}/{item.difficulty}"
            out[key] = out.get(key, 0) + 1
        return out

    def limit(self, per_cell: int | None) -> "ChoiceSet":
        """The first `per_cell` items of every (condition, difficulty) cell (all when None)."""
        if per_cell is None:
            return self
        if per_cell < 1:
            raise NeurolocError(f"limit must be a positive number of items per cell, got {per_cell}")
        seen: dict[tuple[str, str | None], int] = {}
        kept = []
        for item in self.items:
            key = (item.condition, item.difficulty)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= per_cell:
                kept.append(item)
        return ChoiceSet(self.name, tuple(kept), self.source, {**self.metadata, "limit": per_cell})

    def content_hash(self) -> str:
        """SHA-256 of the items themselves (what was scored, whatever made them)."""
        def fields(i: ChoiceItem) -> list:
            return [i.context, i.question, list(i.choices), i.answer, i.condition, i.difficulty,
                    [fields(e) for e in i.examples]]

        payload = json.dumps([fields(i) for i in self.items], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        """One JSON line for a manifest: source, metadata, sizes per cell and the items' hash."""
        return json.dumps({"source": self.source, **self.metadata, "sizes": self.sizes(),
                           "items_sha256": self.content_hash()}, ensure_ascii=False, sort_keys=True)


def render_prompt(item: ChoiceItem, *, list_choices: bool) -> str:
    """The text each choice is scored after: the item's examples, each with its answer and a blank line,
    then the item; `list_choices` adds the choices, in order, as an Options line."""
    lines = [item.context.strip()] if item.context.strip() else []
    lines.append(f"Question: {item.question.strip()}")
    if list_choices:
        lines.append("Options: " + "; ".join(item.choices))
    lines.append("Answer:")
    solved = [render_prompt(e, list_choices=list_choices) + " " + e.answer for e in item.examples]
    return "\n\n".join(solved + ["\n".join(lines)])


def last_mentioned(context: str, choices: Sequence[str]) -> int | None:
    """The index of the choice whose last mention in `context` comes last (None when none is mentioned).

    A choice is found as whole words, case-insensitively, with or without a leading article
    ("the basket" is found in "to the basket" and in "a basket")."""
    best, where = None, -1
    for index, choice in enumerate(choices):
        bare = re.sub(r"^(the|a|an)\s+", "", choice.strip(), flags=re.IGNORECASE)
        pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, bare.split())) + r"(?!\w)"
        ends = [m.end() for m in re.finditer(pattern, context, flags=re.IGNORECASE)]
        if ends and ends[-1] > where:
            best, where = index, ends[-1]
    return best


def balanced_levels(rng, n: int, levels: int) -> list[int]:
    """`n` values in range(levels), each as often as possible (counts differ by at most one): shuffled
    runs through every level, the last run cut short (so with fewer values than levels, a random subset)."""
    values: list[int] = []
    while len(values) < n:
        run = list(range(levels))
        rng.shuffle(run)
        values += run
    return values[:n]


def varied_examples(pool: Sequence[ChoiceItem], k: int) -> tuple[ChoiceItem, ...]:
    """`k` items of `pool` whose answers and answer positions repeat as little as possible (each pick:
    the first item whose answer, then position, has been picked least often), so worked examples do
    not teach "always yes" or "always the first option"."""
    remaining, chosen = list(pool), []
    for _ in range(min(k, len(remaining))):
        pick = min(remaining, key=lambda i: (sum(c.answer == i.answer for c in chosen),
                                              sum(c.answer_index == i.answer_index for c in chosen)))
        chosen.append(pick)
        remaining.remove(pick)
    return tuple(chosen)


# ------------------------------------------------------------------------------------------- files
REQUIRED = ["question", "choices", "answer"]


def load_choice_items(path: str | Path, *, name: str | None = None) -> ChoiceSet:
    """A lab's own items from a .jsonl, .csv or .tsv file with columns `question`, `choices` (a JSON
    list, or `|`-separated in CSV/TSV), `answer` (one of the choices) and optional `context`,
    `condition` (default: the file's stem) and `difficulty`."""
    path = Path(path)
    columns, records = read_records(path)
    require_columns(path, columns, REQUIRED, "; a choice item file needs question, choices and answer "
                                             "(and optionally context, condition, difficulty)")
    items = []
    for line, row in records:
        where = f"{path}: line {line}"
        choices = _parse_choices(row.get("choices"), where)
        answer = cell(path, line, row, "answer")
        if answer not in choices:
            raise NeurolocError(f"{where}: the answer {answer!r} is not one of the choices {list(choices)}; "
                                "copy it exactly from the choices column")
        try:
            items.append(ChoiceItem(
                context=_optional(path, line, row, "context") or "",
                question=cell(path, line, row, "question"),
                choices=choices, answer=answer,
                condition=(_optional(path, line, row, "condition") or path.stem).strip(),
                difficulty=_optional(path, line, row, "difficulty")))
        except NeurolocError as error:
            raise NeurolocError(f"{where}: {error}") from None
    return ChoiceSet(name or path.stem, tuple(items), str(path),
                     {"sha256": {path.name: file_sha256(path)}})


def _optional(path: Path, line: int, row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return cell(path, line, row, column).strip()


def _parse_choices(value: Any, where: str) -> tuple[str, ...]:
    value = choice_list(value, where)
    if isinstance(value, list):
        value = [v.strip() if isinstance(v, str) else v for v in value]
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        raise NeurolocError(f"{where}: choices must be a list of at least two strings (JSON list or a|b|c), "
                            f"got {value!r}")
    choices = tuple(str(v) for v in value)
    if len(set(choices)) != len(choices) or any(not c.strip() for c in choices):
        raise NeurolocError(f"{where}: choices {list(choices)} must be distinct and non-empty")
    return choices
