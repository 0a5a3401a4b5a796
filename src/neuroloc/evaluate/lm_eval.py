"""The lm-evaluation-harness bridge: any harness task on a (possibly lesioned) model, offline.

The hooked model is wrapped in lm-eval's `HFLM(pretrained=model, tokenizer=tokenizer)`; hooks that
lesion units stay on the model, so the harness sees intact, lesioned and control models alike. Task
specifications (`task_configs`) are lm-eval task names, YAML files, or neuroloc's shipped offline
templates filled with local paths:

- `blimp=DIR`: one task per BLiMP JSONL file (`lm_eval_tasks/neuroloc_blimp.yaml`), scored exactly
  like neuroloc's own BLiMP benchmark, reported as benchmark `lm-eval:blimp` (subsets = phenomena and
  `overall`, the macro average over phenomena);
- `perplexity:LANG=FILE`: word/byte perplexity and bits per byte of a JSONL ("text") or .txt file
  (`lm_eval_tasks/neuroloc_perplexity.yaml`).

`lm_eval_benchmark(specs)` makes a `Benchmark`, so `neuroloc lesion --lm-eval ...` puts harness tasks
in the same lesion study, controls and summary tables as BLiMP, SyntaxGym and perplexity.
Needs the optional extra: `pip install 'neuroloc[lm-eval]'`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from ..errors import NeurolocError
from .benchmark import RESULT_COLUMNS, Benchmark

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
BLIMP_PREFIX = "neuroloc_blimp_"
PERPLEXITY_PREFIX = "neuroloc_perplexity_"
TaskSpec = str | dict[str, Any]


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise NeurolocError("the lm-evaluation-harness bridge needs lm-eval: pip install 'neuroloc[lm-eval]'") from None


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """The harness keeps its results for LOCAL_RANK 0 only; under torchrun each neuroloc rank evaluates
    its own lesion conditions whole, so every rank runs the harness as the only process."""
    before = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["LOCAL_RANK"]
        else:
            os.environ["LOCAL_RANK"] = before


@functools.lru_cache(maxsize=None)
def _template(name: str) -> dict[str, Any]:
    _require_lm_eval()  # PyYAML comes with it
    import yaml

    return yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text())


def _with_data(template: str, task: str, path: Path) -> dict[str, Any]:
    config = copy.deepcopy(_template(template))
    config["task"] = task
    config["dataset_kwargs"] = {"data_files": {"train": str(path)}}
    if path.suffix == ".txt":
        config["dataset_path"] = "text"
    return config


def blimp_tasks(directory: str | Path, phenomena: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One harness task per BLiMP phenomenon file (`<UID>.jsonl`) in `directory`."""
    files = sorted(Path(directory).glob("*.jsonl"))
    if phenomena is not None:
        files = [f for f in files if f.stem in set(phenomena)]
    if not files:
        raise NeurolocError(f"no BLiMP JSONL files in {directory} (expected <UID>.jsonl with sentence_good/"
                            "sentence_bad, e.g. ../shared/data/blimp)")
    return [_with_data("neuroloc_blimp", f"{BLIMP_PREFIX}{f.stem}", f) for f in files]


def perplexity_tasks(paths: Mapping[str, str | Path]) -> list[dict[str, Any]]:
    """One perplexity task per language: {"de": "de.jsonl", ...} (JSONL "text" fields or .txt lines)."""
    missing = [str(p) for p in paths.values() if not Path(p).is_file()]
    if missing:
        raise NeurolocError(f"perplexity text files not found: {', '.join(missing)}")
    return [_with_data("neuroloc_perplexity", f"{PERPLEXITY_PREFIX}{lang}", Path(p)) for lang, p in paths.items()]


def task_configs(specs: str | Sequence[str]) -> list[TaskSpec]:
    """Parse task specifications (a comma-separated string or a list): harness task names (e.g.
    `hellaswag`, needs the hub), YAML files, `blimp=DIR`, `perplexity:LANG=FILE`."""
    import yaml

    items = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    if not items:
        raise NeurolocError("--lm-eval names no task; give task names, YAML files, blimp=DIR or perplexity:LANG=FILE")
    tasks: list[TaskSpec] = []
    for item in items:
        if item.startswith("blimp="):
            tasks.extend(blimp_tasks(item.split("=", 1)[1]))
        elif item.startswith("perplexity:") and "=" in item:
            lang, path = item.removeprefix("perplexity:").split("=", 1)
            tasks.extend(perplexity_tasks({lang: path}))
        elif item.endswith((".yaml", ".yml")):
            if not Path(item).is_file():
                raise NeurolocError(f"lm-eval task file {item} does not exist")
            tasks.append(yaml.safe_load(Path(item).read_text()))
        else:
            tasks.append(item)
    return tasks


def _rows(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Harness results as benchmark rows: BLiMP tasks form one benchmark `lm-eval:blimp` (subsets =
    phenomena, plus `overall` = the macro average, neuroloc's BLiMP score); every other task is its own
    benchmark `lm-eval:<task>` with subset `overall` (so lesion tables and figures treat them alike)."""
    rows = []
    for task, metrics in results.items():
        blimp = task.startswith(BLIMP_PREFIX)
        for key, value in metrics.items():
            metric = key.partition(",")[0]
            if metric in ("alias", "sample_len", "samples") or metric.endswith("_stderr") \
                    or not isinstance(value, (int, float)):
                continue
            rows.append(("lm-eval:blimp", task.removeprefix(BLIMP_PREFIX), metric, float(value)) if blimp
                        else (f"lm-eval:{task}", "overall", metric, float(value)))
    accuracies = [r[3] for r in rows if r[0] == "lm-eval:blimp" and r[2] == "acc"]
    if accuracies:
        rows.append(("lm-eval:blimp", "overall", "acc", sum(accuracies) / len(accuracies)))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def evaluate_lm_eval(model, tokenizer, tasks: Sequence[TaskSpec], *, batch_size: int,
                     limit: int | None = None) -> pd.DataFrame:
    """Run harness `tasks` on `model` as it is (hooks included): rows benchmark (`lm-eval:<task>`,
    `lm-eval:blimp`), subset, metric, value. `limit` keeps the first N documents of each task."""
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, backend="causal")
    with _one_process():
        output = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, bootstrap_iters=0, log_samples=False,
                                 verbosity="ERROR")
    if output is None:
        raise NeurolocError("lm-eval returned no results (a non-zero rank of a distributed harness run?)")
    return _rows(output["results"])


def lm_eval_benchmark(specs: str | Sequence[str], *, batch_size: int, limit: int | None = None) -> Benchmark:
    """A `Benchmark` that runs harness tasks (parsed once, now) on every model it is given."""
    _require_lm_eval()
    tasks = task_configs(specs)
    names = [t if isinstance(t, str) else t["task"] for t in tasks]
    return Benchmark(name="lm-eval", source=", ".join(names),
                     run=lambda model, tokenizer: evaluate_lm_eval(model, tokenizer, tasks, batch_size=batch_size,
                                                                   limit=limit),
                     declares_batches=False)  # the harness calls the model without an attention mask
