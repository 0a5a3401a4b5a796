"""The benchmark registry: stable identifiers → builders that load a benchmark's data once, and the options
each benchmark declares.

Adding a benchmark is one new module in `neuroloc/evaluate/` with a `benchmark(options) -> Benchmark`
builder, plus one `register_benchmark` line below (or a call from user code). A benchmark declares its
options as a `Config` (default `DataOptions`: `path`, `limit`); `BenchmarkSpec` ("blimp:limit=30") names a
benchmark with its options, is checked against the declaration when built, and is how every consumer —
lesion studies, the task guard, the language-network study, the lm-eval bridge — asks for benchmarks, so
a new benchmark works from every command without touching the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import Config, Factory, InstanceOf, Interval, param
from ..errors import NeurolocError
from ..parse import parse_benchmark
from ..settings import RunSettings
from . import blimp, lm_eval, multilingual_perplexity, perplexity, reasoning, relations, syntaxgym, theory_of_mind
from .benchmark import Benchmark, BenchmarkOptions

__all__ = ["BENCHMARKS", "BenchmarkSpec", "DataOptions", "LmEvalOptions", "RegisteredBenchmark", "benchmark_specs",
           "build_benchmarks", "parse_benchmarks", "register_benchmark"]

Builder = Callable[[BenchmarkOptions], Benchmark]


@dataclass(frozen=True, kw_only=True)
class DataOptions(Config):
    """The options of a benchmark that reads a data set."""

    flags = False

    path: str | None = param(None, InstanceOf(str), None,
                             help="its data file or folder (default: found under the data root, see --data)")
    limit: int | None = param(None, Interval(int, 1, None), None, help="the first N items of each subset")


@dataclass(frozen=True, kw_only=True)
class LmEvalOptions(Config):
    """lm-evaluation-harness tasks (see `neuroloc.evaluate.lm_eval.task_configs`)."""

    flags = False

    tasks: str = param(..., InstanceOf(str), help="task names, YAML files, blimp=DIR, perplexity:LANG=FILE, "
                                                  "comma-separated")
    limit: int | None = param(None, Interval(int, 1, None), None, help="the first N documents of each task")


@dataclass(frozen=True)
class RegisteredBenchmark:
    """A registered benchmark: its builder, the options it declares, a description, and the deprecated
    command-line flags that still set its options (flag → option)."""

    name: str
    build: Builder
    options: type[Config] = DataOptions
    description: str = ""
    legacy_flags: Mapping[str, str] = field(default_factory=dict)


BENCHMARKS: dict[str, RegisteredBenchmark] = {}


def register_benchmark(name: str, builder: Builder, *, options: type[Config] = DataOptions, description: str = "",
                       legacy_flags: Mapping[str, str] | None = None) -> None:
    """Make a benchmark available to every command (`--benchmarks NAME[:option=value,...]`) under `name`."""
    BENCHMARKS[name] = RegisteredBenchmark(name, builder, options, description, dict(legacy_flags or {}))


register_benchmark("blimp", blimp.benchmark, description="BLiMP minimal pairs (Warstadt et al. 2020)",
                   legacy_flags={"--blimp": "path", "--limit": "limit", "--guard-pairs": "limit"})
register_benchmark("syntaxgym", syntaxgym.benchmark, description="SyntaxGym 2020 suites (Hu et al. 2020)",
                   legacy_flags={"--syntaxgym": "path", "--syntaxgym-limit": "limit"})
register_benchmark("perplexity", perplexity.benchmark, description="perplexity of held-out text (UD EWT dev)",
                   legacy_flags={"--perplexity-text": "path", "--perplexity-limit": "limit", "--guard-texts": "limit"})
register_benchmark("lm-eval", lambda options: lm_eval.lm_eval_benchmark(
    options.declared.tasks, batch_size=options.batch_size, limit=options.declared.limit), options=LmEvalOptions,
    description="lm-evaluation-harness tasks (needs neuroloc[lm-eval])", legacy_flags={"--lm-eval": "tasks", "--limit": "limit"})
register_benchmark("reasoning", lambda options: reasoning.benchmark(options, options.declared),
                   options=reasoning.ReasoningConfig,
                   description="multiple-demand reasoning: arithmetic, syllogisms, sequences (forced choice)")
register_benchmark("theory_of_mind", lambda options: theory_of_mind.benchmark(options, options.declared),
                   options=theory_of_mind.TheoryOfMindConfig,
                   description="false-belief stories with true-belief, reality and memory controls")
register_benchmark("multilingual_perplexity",
                   lambda options: multilingual_perplexity.benchmark(options, options.declared),
                   options=multilingual_perplexity.MultilingualPerplexityConfig,
                   description="perplexity per language on the multilingual study's held-out PUD texts")
register_benchmark("relations", lambda options: relations.benchmark(options, options.declared),
                   options=relations.RelationsConfig,
                   description="greedy exact match of held-out relation facts (the task study's test split)")


@dataclass(frozen=True)
class BenchmarkSpec(Config):
    """A benchmark by name with its options: `BenchmarkSpec("blimp", {"limit": 30})`, or parsed from
    `blimp:limit=30`. Its options are checked against the benchmark's declaration when it is made."""

    flags = False

    name: str = param(..., InstanceOf(str), help="a registered benchmark")
    options: dict = param(Factory(dict), InstanceOf(dict), help="its declared options")

    def check(self) -> None:
        if self.name not in BENCHMARKS:
            raise NeurolocError(f"unknown benchmark {self.name!r}; choose from {', '.join(BENCHMARKS)}")
        self.declared()

    def declared(self) -> Config:
        """The options as the benchmark declares them (a one-line error names a bad or unknown option)."""
        declaration = BENCHMARKS[self.name].options
        unknown = sorted(set(self.options) - {f.name for f in dataclasses.fields(declaration)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(declaration))
            raise NeurolocError(f"benchmark {self.name}: no option {', '.join(unknown)}; it takes {known}")
        try:
            return declaration(**self.options)
        except NeurolocError as error:
            raise NeurolocError(f"benchmark {self.name}: {error}") from None
        except TypeError:
            raise NeurolocError(f"benchmark {self.name}: missing option(s); it needs "
                                + ", ".join(f.name for f in dataclasses.fields(declaration)
                                            if f.default is dataclasses.MISSING
                                            and f.default_factory is dataclasses.MISSING)) from None

    def build(self, settings: RunSettings, data_root: str | Path | None) -> Benchmark:
        """The benchmark with its data loaded (once), scoring under `settings`."""
        declared = self.declared()
        return BENCHMARKS[self.name].build(BenchmarkOptions(
            path=getattr(declared, "path", None), data_dir=Path(data_root) if data_root else None,
            limit=getattr(declared, "limit", None), batch_size=settings.batch_size, bos=settings.bos,
            declared=declared))

    def __str__(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{options}" if options else self.name


def parse_benchmarks(text: str) -> tuple[BenchmarkSpec, ...]:
    """`blimp,syntaxgym` or `blimp:limit=30;syntaxgym:limit=3;perplexity` (';' between benchmarks with
    options); an empty text is no benchmark."""
    if not text.strip():
        return ()
    parts = text.split(";") if ";" in text or ":" in text else text.split(",")
    return tuple(BenchmarkSpec(*parse_benchmark(part)) for part in parts if part.strip())


def benchmark_specs(value: Any) -> tuple[BenchmarkSpec, ...]:
    """Specs from what a config or manifest holds: specs, names, `name:options` strings or dicts."""
    if isinstance(value, (BenchmarkSpec, str, Mapping)):
        value = [value]
    specs = []
    for item in value:
        if isinstance(item, BenchmarkSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.extend(parse_benchmarks(item))
        elif isinstance(item, Mapping):
            specs.append(BenchmarkSpec.from_dict(item, where="benchmarks"))
        else:
            raise NeurolocError(f"a benchmark is a name, 'name:option=value' or a mapping, got {item!r}")
    return tuple(specs)


def build_benchmarks(names: Sequence[str], *, settings: RunSettings, data_dir: str | Path | None = None,
                     blimp: str | None = None, syntaxgym: str | None = None, perplexity: str | None = None,
                     limit: int | None = None, syntaxgym_limit: int | None = None,
                     perplexity_limit: int | None = None, paths: Mapping[str, str | Path] | None = None,
                     limits: Mapping[str, int | None] | None = None) -> list[Benchmark]:
    """Deprecated (use `BenchmarkSpec(...).build(settings, data_root)`): the named benchmarks with
    explicit paths and limits, scoring under `settings`."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise NeurolocError(f"unknown benchmark {unknown or list(names)}; choose from {', '.join(BENCHMARKS)}")
    all_paths = {"blimp": blimp, "syntaxgym": syntaxgym, "perplexity": perplexity, **(paths or {})}
    all_limits = {"blimp": limit, "syntaxgym": syntaxgym_limit, "perplexity": perplexity_limit, **(limits or {})}
    specs = [BenchmarkSpec(name, {k: v for k, v in (("path", None if all_paths.get(name) is None
                                                     else str(all_paths[name])), ("limit", all_limits.get(name)))
                                  if v is not None}) for name in names]
    return [spec.build(settings, data_dir) for spec in specs]
