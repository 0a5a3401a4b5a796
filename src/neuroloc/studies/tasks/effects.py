"""Causal tests of task units: the class × class effect matrix, dose–response and the general-ability guard.

Every intervention (suppress ×0, enhance ×K, set to a value, … — any mode of `neuroloc.lesion`) is
applied to one label's units and every label's held-out items are scored (accuracy and mean
ln p(answer | prompt)); the same is done with random units of the same count per layer and site
(`random_matched`, several seeds) for every row, so a change can be told apart from what any units of
that size and place would do. Changes are against the intact model.

The guard asks whether an intervention hurts the model in general: any registered benchmarks (perplexity on
held-out text, BLiMP, ...; built through `evaluate.registry`) under each intervention, target and random.

Every answer is scored under the run settings given (`settings`: BOS policy and batch size), the same as
the intact model's, so a change never compares two encodings.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch

from ...evaluate.answers import answer_accuracy, score_answers
from ...evaluate.benchmark import Benchmark
from ...evaluate.controls import random_matched
from ...lesion import Intervention, lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...settings import RunSettings
from ...stimuli.prompts import PromptSet
from ...units import UnitSet

__all__ = ["EFFECT_COLUMNS", "GUARD_COLUMNS", "dose_response", "effect_matrix", "general_guard", "intervention_sets"]

EFFECT_COLUMNS = ["intervened", "evaluated", "mode", "condition", "seed", "n_units", "accuracy", "mean_logprob",
                  "delta_accuracy", "delta_logprob"]
GUARD_COLUMNS = ["intervened", "mode", "condition", "seed", "n_units", "benchmark", "subset", "metric", "value"]
Values = Mapping[str, Mapping[str, torch.Tensor]]  # label → site name → value per unit (mode "value")


def intervention_sets(units: Mapping[str, UnitSet], n_random: int, seed: int
                      ) -> list[tuple[str, str, int, UnitSet]]:
    """(label, condition, seed, units): each label's own units ("target", seed −1) and `n_random`
    random sets matched to them ("random", seeds seed, seed + 1, …)."""
    out = []
    for label, own in units.items():
        out.append((label, "target", -1, own))
        out += [(label, "random", seed + s, random_matched(own, seed=seed + s)) for s in range(n_random)]
    return out


def _apply(lm: LoadedModel, units: UnitSet, mode: str, values: Mapping[str, torch.Tensor] | None):
    kind = Intervention.parse(mode).method
    return lesion(lm, units, mode, **({kind.data: values} if kind.data and values is not None else {}))


def _per_label(lm: LoadedModel, items: PromptSet, settings: RunSettings) -> pd.DataFrame:
    scored = score_answers(lm, items, batch_size=settings.batch_size, bos=settings.bos, progress=False)
    return answer_accuracy(scored).set_index("label")


def effect_matrix(lm: LoadedModel, units: Mapping[str, UnitSet], items: PromptSet, *, modes: Sequence[str],
                  n_random: int, seed: int, settings: RunSettings, values: Values | None = None,
                  intact: pd.DataFrame | None = None, progress: bool = False) -> pd.DataFrame:
    """Long table (`EFFECT_COLUMNS`): one row per intervened label × evaluated label × mode × condition.
    `values[label]` gives the per-unit values of mode `value` (per site name, over every unit of the
    site, so random units get theirs too). `intact` is `answer_accuracy` of the unmodified model (scored
    under the same `settings`)."""
    base = intact.set_index("label") if intact is not None else _per_label(lm, items, settings)
    sets = intervention_sets(units, n_random, seed)
    rows = []
    with progress_bar("effect matrix", len(sets) * len(modes), progress) as advance:
        for mode in modes:
            for label, condition, s, chosen in sets:
                with _apply(lm, chosen, mode, None if values is None else values.get(label)):
                    scored = _per_label(lm, items, settings)
                for evaluated, row in scored.iterrows():
                    rows.append((label, evaluated, mode, condition, s, len(chosen), row["accuracy"],
                                 row["mean_logprob"], row["accuracy"] - base.loc[evaluated, "accuracy"],
                                 row["mean_logprob"] - base.loc[evaluated, "mean_logprob"]))
                advance(1)
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def dose_response(lm: LoadedModel, sizes: Mapping[int, Mapping[str, UnitSet]], items: PromptSet, *, mode: str,
                  n_random: int, seed: int, settings: RunSettings, values: Values | None = None,
                  intact: pd.DataFrame | None = None, progress: bool = False) -> pd.DataFrame:
    """The effect matrix at several sizes: for each k of `sizes`, each label's units of that size (labels
    with none are left out) and matched random units; `EFFECT_COLUMNS` plus `k`."""
    frames = []
    base = intact if intact is not None else _per_label(lm, items, settings).reset_index()
    for k, by_label in sizes.items():
        units = {label: chosen for label, chosen in by_label.items() if len(chosen)}
        frame = effect_matrix(lm, units, items, modes=[mode], n_random=n_random, seed=seed, settings=settings,
                              values=values, intact=base, progress=progress)
        frames.append(frame.assign(k=k))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EFFECT_COLUMNS + ["k"])


def general_guard(lm: LoadedModel, units: Mapping[str, UnitSet], benchmarks: Sequence[Benchmark], *,
                  modes: Sequence[str], n_random: int, seed: int, values: Values | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """Every benchmark (built with the run settings: `BenchmarkSpec(...).build(settings, data_root)`) intact
    and under every intervention (`GUARD_COLUMNS`; the intact rows have intervened "none")."""
    def measure() -> pd.DataFrame:
        return pd.concat([b.run(lm.model, lm.tokenizer) for b in benchmarks], ignore_index=True)

    if not benchmarks:
        return pd.DataFrame(columns=GUARD_COLUMNS)
    frames = [measure().assign(intervened="none", mode="none", condition="intact", seed=-1, n_units=0)]
    sets = intervention_sets(units, n_random, seed)
    with progress_bar("general-ability guard", len(sets) * len(modes), progress) as advance:
        for mode in modes:
            for label, condition, s, chosen in sets:
                with _apply(lm, chosen, mode, None if values is None else values.get(label)):
                    frames.append(measure().assign(intervened=label, mode=mode, condition=condition, seed=s,
                                                   n_units=len(chosen)))
                advance(1)
    return pd.concat(frames, ignore_index=True)[GUARD_COLUMNS]
