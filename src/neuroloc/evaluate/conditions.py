"""Evaluate benchmarks under many conditions of one model, computing once what a condition cannot change.

A lesion study evaluates every benchmark under every condition (intact, target lesions of several sizes,
their controls). A `Condition` is a name and the context that applies it (e.g. a `neuroloc.lesion`
block; None for the model as it is). `evaluate_conditions` reads the footprint each condition declares
(`models.footprint`: entering it installs hooks, no forward pass), opens one trunk cache at the layers
the conditions leave intact (`evaluate.trunk_cache`), and runs the conditions from the one that leaves
the most layers intact to the one that leaves the fewest, so that the first computes the residual
streams the later ones start from. The scorer shares prefixes by itself (`evaluate.scoring`). Results
come back in the order given, equal to evaluating each condition alone (within float noise).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import pandas as pd

from ..models.footprint import HookState, hook_state
from ..models.loading import LoadedModel
from .benchmark import Benchmark
from .scoring import prefix_sharing
from .trunk_cache import trunk_cache

__all__ = ["Condition", "condition_states", "evaluate_conditions", "run_benchmarks", "trunk_levels"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """A named state of the model: `apply()` returns the context that puts the model in it (a lesion),
    None leaves the model as it is."""

    name: str
    apply: Callable[[], ContextManager] | None = None

    def enter(self) -> ContextManager:
        return self.apply() if self.apply is not None else contextlib.nullcontext()


def run_benchmarks(lm: LoadedModel, benchmarks: Sequence[Benchmark]) -> pd.DataFrame:
    """Every benchmark on the model as it is now (active lesions included), as one results frame."""
    return pd.concat([b.run(lm.model, lm.tokenizer) for b in benchmarks], ignore_index=True)


def condition_states(lm: LoadedModel, conditions: Sequence[Condition]) -> list[HookState]:
    """The hooks each condition puts on the model (entered and left again; nothing runs)."""
    states = []
    for condition in conditions:
        with condition.enter():
            states.append(hook_state(lm.model))
    return states


def trunk_levels(intact_layers: Sequence[int]) -> list[int]:
    """Levels worth storing: each condition's count of intact layers that some other condition also
    leaves intact (a level only one condition reaches would be stored and never read)."""
    return sorted({level for level in intact_layers if level > 0 and sum(r >= level for r in intact_layers) >= 2})


def evaluate_conditions(lm: LoadedModel, conditions: Sequence[Condition], benchmarks: Sequence[Benchmark], *,
                        cache_bytes: int, reuse: bool = True, progress: Callable[[int], None] | None = None,
                        finished: Callable[[int, pd.DataFrame], None] | None = None) -> list[pd.DataFrame]:
    """One results frame (`run_benchmarks`) per condition, in the order given.

    With `reuse`, residual streams below the conditions' lowest edited layers are stored (at most
    `cache_bytes`; beyond it layers are recomputed and the log says so) and shared prefixes are packed;
    without it every condition runs every text through the whole model, as a plain loop would.
    `progress(1)` is called after each condition, and `finished(i, frame)` with its position and results (to
    save finished work as it comes)."""
    n_layers = lm.layout.n_layers
    intact = [state.intact_layers(n_layers) for state in condition_states(lm, conditions)]
    order = sorted(range(len(conditions)), key=lambda i: -intact[i])  # most intact layers first, stable
    levels = trunk_levels(intact) if reuse else []
    frames: list[pd.DataFrame | None] = [None] * len(conditions)
    with contextlib.ExitStack() as stack:
        stack.enter_context(prefix_sharing(reuse))
        cache = stack.enter_context(trunk_cache(lm, levels=levels, max_bytes=cache_bytes)) if levels else None
        for i in order:
            with conditions[i].enter():
                frames[i] = run_benchmarks(lm, benchmarks)
            if finished is not None:
                finished(i, frames[i])
            if progress is not None:
                progress(1)
        if cache is not None:
            log.info("trunk cache: levels %s, %.1f MiB, %d passes resumed (%d layers skipped), %d run whole%s",
                     levels, cache.bytes / 2**20, cache.stats["resumed"], cache.stats["layers_skipped"],
                     cache.stats["whole"], f"; off: {cache.disabled}" if cache.disabled else "")
    return frames
