"""What a benchmark is: a name, where its data came from, and a run over (model, tokenizer).

A benchmark loads its data once, when it is built, and evaluates the loaded items on every call,
so a lesion study with dozens of conditions reads its files once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import NeurolocError

__all__ = ["RESULT_COLUMNS", "Benchmark", "BenchmarkOptions", "existing_path"]

RESULT_COLUMNS = ["benchmark", "subset", "metric", "value"]


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation: (model, tokenizer) → rows of benchmark, subset, metric, value.
    `declares_batches`: its forward passes declare their batch (`models.hooks.batch_context`: the
    attention mask), which interventions at chosen token positions need."""

    name: str
    source: str
    run: Callable[[object, object], pd.DataFrame]
    declares_batches: bool = True


@dataclass(frozen=True)
class BenchmarkOptions:
    """How to build one benchmark: an explicit data `path`, else a `data_dir` laid out like
    ../shared/data (blimp/, syntaxgym/, ud/), else the benchmark's packaged or hub source; `limit`
    items per subset (pairs per phenomenon, items per suite, texts); texts per scoring `batch_size`; the
    `bos` policy every text is scored under (`neuroloc.text.encoding`)."""

    path: str | Path | None = None
    data_dir: Path | None = None
    limit: int | None = None
    batch_size: int = 32
    bos: str = "prepend"

    def in_data_dir(self, relative: str) -> Path | None:
        """`data_dir / relative` when it exists."""
        if self.data_dir is None:
            return None
        candidate = Path(self.data_dir) / relative
        return candidate if candidate.exists() else None


def existing_path(path: str | Path | None, what: str) -> Path:
    """`path` as a Path, or an error naming the benchmark and how to give its data."""
    if path is None or not Path(path).exists():
        raise NeurolocError(f"{what}: data path {path} does not exist; pass it explicitly or --data DIR")
    return Path(path)
