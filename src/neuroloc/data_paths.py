"""Where data is found: one search order, used by every command and loader.

1. an explicit path given for that data (a benchmark's `path=` option, `--stimuli-path`, a file argument);
2. the data root given with `--data`: a folder laid out like this project's `../shared/data`
   (`blimp/`, `syntaxgym/`, `fedorenko2010/`, `ud/`);
3. the folder named by the `NEUROLOC_DATA` environment variable;
4. `../shared/data` relative to the working directory (where the data sits beside a checkout);
5. data shipped in an installed package (brainscore-language: Fedorenko 2010, SyntaxGym) or a hub
   source — each loader's own last resort.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENVIRONMENT_VARIABLE", "data_roots", "find_data"]

ENVIRONMENT_VARIABLE = "NEUROLOC_DATA"
_BESIDE_CHECKOUT = Path("../shared/data")


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The data roots that exist, in search order (steps 2–4)."""
    candidates = [root, os.environ.get(ENVIRONMENT_VARIABLE), _BESIDE_CHECKOUT]
    roots: list[Path] = []
    for candidate in candidates:
        if candidate and Path(candidate).is_dir() and Path(candidate).resolve() not in [r.resolve() for r in roots]:
            roots.append(Path(candidate))
    return roots


def find_data(relative: str, root: str | os.PathLike | None = None) -> Path | None:
    """`relative` (e.g. "blimp", "ud/en_ewt-ud-dev.conllu") under the first data root that has it."""
    for base in data_roots(root):
        if (base / relative).exists():
            return base / relative
    return None
