"""The benchmark registry: stable identifiers → builders that load a benchmark's data once.

Adding a benchmark is one new module in `neuroloc/evaluate/` with a `benchmark(options) -> Benchmark`
function, plus one line in `BENCHMARKS` below (or `register_benchmark(name, builder)` from user code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import NeurolocError
from . import blimp, perplexity, reasoning, syntaxgym, theory_of_mind
from .benchmark import Benchmark, BenchmarkOptions

__all__ = ["BENCHMARKS", "build_benchmarks", "register_benchmark"]

Builder = Callable[[BenchmarkOptions], Benchmark]

BENCHMARKS: dict[str, Builder] = {
    "blimp": blimp.benchmark,
    "syntaxgym": syntaxgym.benchmark,
    "perplexity": perplexity.benchmark,
    "reasoning": reasoning.benchmark,
    "theory_of_mind": theory_of_mind.benchmark,
}


def register_benchmark(name: str, builder: Builder) -> None:
    """Make a benchmark available to `build_benchmarks` and `--benchmarks` under `name`."""
    BENCHMARKS[name] = builder


def build_benchmarks(names: Sequence[str], *, data_dir: str | Path | None = None, blimp: str | None = None,
                     syntaxgym: str | None = None, perplexity: str | None = None, limit: int | None = None,
                     syntaxgym_limit: int | None = None, perplexity_limit: int | None = None,
                     batch_size: int = 32, paths: Mapping[str, str | Path] | None = None,
                     limits: Mapping[str, int | None] | None = None, bos: str = "prepend") -> list[Benchmark]:
    """Build the named benchmarks, each loading its data now (once). Data: explicit paths first
    (`blimp=`, `syntaxgym=`, `perplexity=`, or `paths[name]` for any benchmark), then `data_dir`, then
    packaged or hub sources. `limit` is BLiMP's pairs per phenomenon; `limits[name]` sets any. Every
    text is scored under the BOS policy `bos` (use the localizer's)."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise NeurolocError(f"unknown benchmark {unknown or list(names)}; choose from {', '.join(BENCHMARKS)}")
    all_paths = {"blimp": blimp, "syntaxgym": syntaxgym, "perplexity": perplexity, **(paths or {})}
    all_limits = {"blimp": limit, "syntaxgym": syntaxgym_limit, "perplexity": perplexity_limit, **(limits or {})}
    root = Path(data_dir) if data_dir else None
    return [BENCHMARKS[name](BenchmarkOptions(path=all_paths.get(name), data_dir=root, limit=all_limits.get(name),
                                              batch_size=batch_size, bos=bos))
            for name in names]
