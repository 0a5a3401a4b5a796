"""One entry point for stimuli: a built-in localizer by name, or a user's file by path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.custom import load_contrast_file
from neuroloc.stimuli.language import load_language_localizer
from neuroloc.stimuli.md import make_md_localizer
from neuroloc.stimuli.tom import load_tom_localizer

BUILTINS = ("language", "md", "tom")


def get_stimuli(
    spec: str,
    *,
    seed: int = 0,
    contrast: tuple[str, str] | None = None,
    path: str | None = None,
) -> StimulusSet:
    """Built-in "language" | "md" | "tom" (data from `path` where given), or a CSV/TSV/JSONL file.

    `seed` only affects the generated "md" set; `contrast` picks (target, control) in a file, or
    reorders/chooses the conditions of a built-in set.
    """
    if spec == "language":
        stimuli = load_language_localizer(path)
    elif spec == "tom":
        stimuli = load_tom_localizer(path)
    elif spec == "md":
        if path is not None:
            raise NeurolocError("path: the md stimuli are generated from a seed and read no file; drop path")
        stimuli = make_md_localizer(seed=seed)
    elif Path(spec).is_file():
        return load_contrast_file(spec, contrast=contrast)
    else:
        raise NeurolocError(
            f"stimuli {spec!r}: not a built-in localizer ({', '.join(BUILTINS)}) and no such file"
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
