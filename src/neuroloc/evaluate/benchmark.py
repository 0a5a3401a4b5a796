"""What a benchmark is: a name, where its data came from, and a run over (model, tokenizer).

A benchmark loads its data once, when it is built, and evaluates the loaded items on every call,
so a lesion study with dozens of conditions reads its files once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..data_paths import find_data
from ..errors import MissingData

__all__ = ["RESULT_COLUMNS", "Benchmark", "BenchmarkOptions", "existing_path"]

RESULT_COLUMNS = ["benchmark", "subset", "metric", "value"]


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation: (model, tokenizer) → rows of benchmark, subset, metric, value.
    `declares_batches`: its forward passes declare their batch (`models.hooks.batch_context`: the
    attention mask), which interventions at chosen token positions need. `subsets`: the subsets its rows
    will report, when known before it runs (the per-language and per-relation benchmarks), so a study can
    check a subset it needs before any model work."""

    name: str
    source: str
    run: Callable[[object, object], pd.DataFrame]
    declares_batches: bool = True
    subsets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BenchmarkOptions:
    """How to build one benchmark: an explicit data `path`, else a `data_dir` laid out like
    ../shared/data (blimp/, syntaxgym/, ud/), else the benchmark's packaged or hub source; `limit`
    items per subset (pairs per phenomenon, items per suite, texts); texts per scoring `batch_size`; the
    `bos` policy every text is scored under (`neuroloc.text.encoding`); `declared`: the options as the
    benchmark declares them (`neuroloc.evaluate.registry`), for builders that take more than path and limit."""

    path: str | Path | None
    data_dir: Path | None
    limit: int | None
    batch_size: int
    bos: str
    declared: Any = None

    def in_data_dir(self, relative: str) -> Path | None:
        """`relative` under the first data root that has it (`data_dir`, then `neuroloc.data_paths`' order)."""
        return find_data(relative, self.data_dir)


def existing_path(path: str | Path | None, what: str) -> Path:
    """`path` as a Path, or an error naming the benchmark and how to give its data."""
    if path is None:
        raise MissingData(f"{what}: no data found; give its path (e.g. --benchmarks '{what.split()[0]}:path=...') "
                          "or a data root with --data DIR")
    if not Path(path).exists():
        raise MissingData(f"{what}: data path {path} does not exist; give its path or a data root with --data DIR")
    return Path(path)
