"""One entry point for stimuli: a registered stimulus set by name, or a user's file by path.

Stimulus sets live in a registry with stable identifiers (`STIMULI`): a loader (path, seed) →
StimulusSet. Adding one is a new module in `neuroloc/stimuli/` with its loader plus one line in
`STIMULI` (or `register_stimuli(name, loader)` from user code).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from neuroloc.data_paths import find_data
from neuroloc.errors import NeurolocError
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.custom import load_contrast_file
from neuroloc.stimuli.language import load_language_localizer
from neuroloc.stimuli.md import make_md_localizer
from neuroloc.stimuli.tom import load_tom_localizer

__all__ = ["BUILTINS", "DATA_FOLDERS", "STIMULI", "get_stimuli", "parse_contrast", "register_stimuli"]

Loader = Callable[[str | None, int], StimulusSet]


def _md(path: str | None, seed: int) -> StimulusSet:
    if path is not None:
        raise NeurolocError("path: the md stimuli are generated from a seed and read no file; drop path")
    return make_md_localizer(seed=seed)


STIMULI: dict[str, Loader] = {
    "language": lambda path, seed: load_language_localizer(path),
    "md": _md,
    "tom": lambda path, seed: load_tom_localizer(path),
}
BUILTINS = tuple(STIMULI)  # the built-in identifiers
# Where a registered set's data sits under a data root (`neuroloc.data_paths`), when it reads any.
DATA_FOLDERS: dict[str, str] = {"language": "fedorenko2010"}


def register_stimuli(name: str, loader: Loader, *, data_folder: str | None = None) -> None:
    """Make a stimulus set available to `get_stimuli` and `--localizer` under `name`; `loader(path,
    seed)` gets the data path (the user's, else `data_folder` under the first data root that has it, else
    None) and the seed."""
    STIMULI[name] = loader
    if data_folder:
        DATA_FOLDERS[name] = data_folder


def get_stimuli(
    spec: str,
    *,
    seed: int = 0,
    contrast: tuple[str, str] | None = None,
    path: str | None = None,
    data_root: str | None = None,
    text_column: str = "text",
    condition_column: str = "condition",
    group_column: str | None = None,
) -> StimulusSet:
    """A registered set ("language" | "md" | "tom" | ...; data from `path`, else its folder under a data
    root, else the loader's own source), or a CSV/TSV/JSONL file (with these column names).

    `seed` only affects generated sets ("md"); `contrast` picks (target, control) in a file, or
    reorders/chooses the conditions of a registered set. `group_column` names a file's group column
    (required then; default: an optional `group` column).
    """
    if spec in STIMULI:
        if path is None and spec in DATA_FOLDERS:
            found = find_data(DATA_FOLDERS[spec], data_root)
            path = str(found) if found is not None else None
        stimuli = STIMULI[spec](path, seed)
    elif Path(spec).is_file():
        return load_contrast_file(spec, contrast=contrast, text_column=text_column,
                                  condition_column=condition_column, group_column=group_column)
    else:
        raise NeurolocError(
            f"stimuli {spec!r}: not a registered stimulus set ({', '.join(STIMULI)}) and no such file"
        )
    return stimuli if contrast is None else _with_contrast(stimuli, contrast)


def _with_contrast(stimuli: StimulusSet, contrast: tuple[str, str]) -> StimulusSet:
    present = list(dict.fromkeys(stimuli.conditions))
    if len(contrast) != 2 or contrast[0] == contrast[1] or not set(contrast) <= set(present):
        raise NeurolocError(
            f"contrast {contrast!r}: the {stimuli.name} stimuli have conditions {', '.join(present)}; "
            "choose two different ones as (target, control)"
        )
    return dataclasses.replace(stimuli, contrast=(contrast[0], contrast[1]))


def parse_contrast(text: str) -> tuple[str, str]:
    """'target:control' (as given on the command line) -> (target, control)."""
    target, sep, control = text.partition(":")
    target, control = target.strip(), control.strip()
    if not sep or not target or not control or ":" in control or target == control:
        raise NeurolocError(
            f"contrast {text!r}: expected TARGET:CONTROL with two different condition names, "
            "e.g. sentences:nonwords"
        )
    return target, control
