"""User stimulus files (CSV, TSV, JSONL): one text and one condition per row.

The readers here also serve the built-in loaders, so every file the package reads reports problems
the same way: file, line and column, and what to do about it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from neuroloc.errors import NeurolocError
from neuroloc.io import file_sha256
from neuroloc.stimuli.base import StimulusSet

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}

Record = tuple[int, dict[str, Any]]


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise NeurolocError(f"{path}: no such file")


def read_text(path: Path) -> str:
    """The file's text as UTF-8 (a BOM is dropped); bad bytes are reported by line."""
    _require_file(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise NeurolocError(
            f"{path}: line {line}, byte {column}: not valid UTF-8 ({data[err.start:err.end]!r}); "
            "re-save the file as UTF-8"
        ) from None


def read_records(path: str | Path) -> tuple[list[str], list[Record]]:
    """Columns found and (line number, row) pairs of a .csv, .tsv or .jsonl file; blank lines skipped."""
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise NeurolocError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(FORMATS)}"
        )
    text = read_text(path)
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, FORMATS[suffix])


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[list[str], list[Record]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records: list[Record] = []
    previous_end = 0
    try:
        for fields in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) > len(header):
                raise NeurolocError(
                    f"{path}: line {line}: {len(fields)} fields but the header (line 1) has "
                    f"{len(header)}; quote texts that contain the delimiter {delimiter!r}"
                )
            records.append((line, dict(zip(header, fields))))
    except csv.Error as err:
        raise NeurolocError(f"{path}: line {reader.line_num}: {err}") from None
    if header is None:
        raise NeurolocError(f"{path}: the file is empty; the first line must name the columns")
    return header, records


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[Record]]:
    columns: dict[str, None] = {}
    records: list[Record] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise NeurolocError(
                f"{path}: line {line}, column {err.colno}: not valid JSON ({err.msg})"
            ) from None
        if not isinstance(row, dict):
            raise NeurolocError(
                f"{path}: line {line}: expected a JSON object like {{\"text\": ..., \"condition\": ...}}, "
                f"got {type(row).__name__}"
            )
        columns.update(dict.fromkeys(row))
        records.append((line, row))
    if not records:
        raise NeurolocError(f"{path}: the file has no rows")
    return list(columns), records


def require_columns(path: Path, columns: list[str], required: list[str], how: str = "") -> None:
    """Raise, listing the columns found, when any of `required` is missing."""
    missing = [c for c in required if c not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise NeurolocError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (columns found: {found}){how}"
        )


def cell(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    """A non-empty string value of `column` in one row; numbers become strings."""
    value = row.get(column)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is not None and not isinstance(value, str):
        raise NeurolocError(
            f"{path}: line {line}, column {column!r}: expected text, got {type(value).__name__}"
        )
    if value is None or not value.strip():
        raise NeurolocError(f"{path}: line {line}, column {column!r}: empty value; fill it in or delete the row")
    return value


def load_contrast_file(
    path: str | Path,
    *,
    text_column: str = "text",
    condition_column: str = "condition",
    contrast: tuple[str, str] | None = None,
    name: str | None = None,
    group_column: str | None = None,
) -> StimulusSet:
    """A StimulusSet from a user's file; an optional `group` column (or the required `group_column`) ties
    rows together in splits (items, passages, stories: folds never split a group).

    Without `contrast`, two conditions make the contrast (first seen, second seen); three or more load
    without one and are compared one-vs-rest (or by any `Design`).
    """
    path = Path(path)
    columns, records = read_records(path)
    hint = "; name yours with --text-column / --condition-column (text_column= / condition_column= in Python)"
    require_columns(path, columns, [text_column, condition_column], hint)
    if group_column is not None:
        require_columns(path, columns, [group_column], "; name the group column with --fold-column")
    group = group_column or "group"
    has_group = group in columns
    texts, conditions, groups, first_line, seen = [], [], [], {}, {}
    for line, row in records:
        texts.append(cell(path, line, row, text_column))
        condition = cell(path, line, row, condition_column).strip()
        earlier = seen.setdefault(texts[-1].strip(), (line, condition))
        if earlier[1] != condition:  # one text cannot be evidence for two conditions
            raise NeurolocError(f"{path}: line {line}: the text of line {earlier[0]} ({texts[-1][:40]!r}) appears "
                                f"again under condition {condition!r} (it was {earlier[1]!r}); remove the duplicate")
        conditions.append(condition)
        first_line.setdefault(condition, line)
        if has_group:
            groups.append(cell(path, line, row, group))
    contrast = _choose_contrast(path, condition_column, list(first_line), contrast)
    for label in contrast or list(first_line):
        count = conditions.count(label)
        if count == 0:
            raise NeurolocError(
                f"{path}: contrast condition {label!r} has no items in column {condition_column!r} "
                f"(conditions found: {', '.join(first_line)})"
            )
        if count < 2:
            raise NeurolocError(
                f"{path}: line {first_line[label]}: condition {label!r} has only 1 item; "
                "a comparison needs at least 2 per condition"
            )
    return StimulusSet(
        name=name or path.stem,
        texts=tuple(texts),
        conditions=tuple(conditions),
        contrast=contrast,
        groups=tuple(groups) if has_group else None,
        source=str(path),
        metadata={
            "sha256": {path.name: file_sha256(path)},
            "text_column": text_column,
            "condition_column": condition_column,
            **({"group_column": group} if has_group else {}),
        },
    )


def _choose_contrast(
    path: Path, column: str, found: list[str], contrast: tuple[str, str] | None
) -> tuple[str, str] | None:
    if contrast is not None:
        if len(contrast) != 2 or contrast[0] == contrast[1]:
            raise NeurolocError(f"contrast must be two different conditions (target, control), got {contrast!r}")
        return (contrast[0], contrast[1])
    if len(found) == 2:
        return (found[0], found[1])
    if len(found) < 2:
        raise NeurolocError(
            f"{path}: column {column!r} holds only condition {found[0]!r}; a contrast needs two conditions"
        )
    return None
