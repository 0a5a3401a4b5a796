"""Theory-of-mind localizer after Dodell-Feder et al. (2011): false-belief vs. false-photograph stories.

In both conditions a representation (a character's belief; a photo, map, drawing or sign) goes out
of date when the world changes; only the belief stories require thinking about a mind. The packaged
stories are an original set written for neuroloc with the same design (the original stimuli are
not shipped); `path` reads the original files for those who have them.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from neuroloc.errors import NeurolocError
from neuroloc.io import file_sha256
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.custom import cell, read_records, read_text, require_columns

ANSWER_PROMPT = "True or false?"
CONDITIONS = {"belief": "belief", "b": "belief", "photo": "photo", "p": "photo"}
SAXE_FILE = re.compile(r"(\d+)([bp])_(story|question)\.txt", re.IGNORECASE)


def load_tom_localizer(path: str | Path | None = None, *, include_question: bool = True) -> StimulusSet:
    """Belief vs. photo stories; each text is the story, then its true/false question and a fixed prompt.

    `path` may be a directory in the Saxe lab layout (`1b_story.txt`, `1b_question.txt`, `1p_...`)
    or a .csv/.tsv/.jsonl file with columns story, question and condition (belief/photo or b/p).
    """
    if path is None:
        with resources.as_file(resources.files("neuroloc.stimuli") / "data" / "tom_stories.jsonl") as packaged:
            items, digests = _read_table(packaged, include_question), {packaged.name: file_sha256(packaged)}
        source = "neuroloc:stimuli/data/tom_stories.jsonl"
    else:
        source = str(path)
        path = Path(path)
        if path.is_dir():
            items, digests = _read_saxe_dir(path, include_question)
        else:
            items, digests = _read_table(path, include_question), {path.name: file_sha256(path)}
    for condition in ("belief", "photo"):
        count = sum(item["condition"] == condition for item in items)
        if count < 2:
            raise NeurolocError(f"{source}: {count} {condition} stories found; the localizer needs at least 2")
    return StimulusSet(
        name="tom",
        texts=tuple(_text(item, include_question) for item in items),
        conditions=tuple(item["condition"] for item in items),
        contrast=("belief", "photo"),
        source=source,
        metadata={
            "sha256": digests,
            "include_question": include_question,
            "answer_prompt": ANSWER_PROMPT,
            "ids": [item["id"] for item in items],
            "answers": [item.get("answer") for item in items],
        },
    )


def _text(item: dict, include_question: bool) -> str:
    """Story, question, then one fixed answer prompt: the same for every item, so it cues nothing."""
    if not include_question:
        return item["story"]
    return f"{item['story']} {item['question']} {ANSWER_PROMPT}"


def _squash(text: str) -> str:
    """One line, single spaces: the original files wrap lines and end with newlines."""
    return " ".join(text.split())


def _read_table(path: Path, include_question: bool) -> list[dict]:
    columns, records = read_records(path)
    required = ["story", "condition"] + (["question"] if include_question else [])
    require_columns(path, columns, required)
    items = []
    for line, row in records:
        label = cell(path, line, row, "condition").strip().lower()
        if label not in CONDITIONS:
            raise NeurolocError(
                f"{path}: line {line}, column 'condition': expected belief or photo (or b/p), got {label!r}"
            )
        items.append(
            {
                "id": str(row.get("id") or line),
                "condition": CONDITIONS[label],
                "story": _squash(cell(path, line, row, "story")),
                "question": _squash(cell(path, line, row, "question")) if include_question else None,
                "answer": _answer(path, line, row.get("answer")),
            }
        )
    return items


def _answer(path: Path, line: int, value: object) -> bool | None:
    """The optional answer column: true/false (or a JSON boolean)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in ("true", "false"):
        raise NeurolocError(f"{path}: line {line}, column 'answer': expected true or false, got {value!r}")
    return text == "true"


def _read_saxe_dir(root: Path, include_question: bool) -> tuple[list[dict], dict[str, str]]:
    """Stories from `<n><b|p>_story.txt` (+ `_question.txt`) files, by number, belief before photo."""
    parts: dict[tuple[int, str], dict[str, Path]] = {}
    for file in root.iterdir():
        match = SAXE_FILE.fullmatch(file.name)
        if match:
            number, kind, part = match.groups()
            parts.setdefault((int(number), kind.lower()), {})[part.lower()] = file
    if not parts:
        raise NeurolocError(
            f"{root}: no story files found; expected names like 1b_story.txt and 1b_question.txt "
            "(b = belief, p = photo), or pass a .csv/.jsonl file with columns story, question, condition"
        )
    items, digests = [], {}
    for (number, kind), files in sorted(parts.items()):
        texts = {}
        for part in ["story", "question"] if include_question else ["story"]:
            if part not in files:
                raise NeurolocError(
                    f"{root}: {number}{kind}_{part}.txt is missing; every story needs a story and a "
                    "question file (or pass include_question=False)"
                )
            texts[part] = _squash(read_text(files[part]))
            if not texts[part]:
                raise NeurolocError(f"{files[part]}: the file is empty")
            digests[files[part].name] = file_sha256(files[part])
        items.append({"id": f"{number}{kind}", "condition": CONDITIONS[kind], **texts})
    return items, digests
