"""Steering the output language: while the model continues a prompt in one language, enhance another
language's units and measure how much of the generated text is in that target language.

Enhancement sets a unit to its mean activation over the tokens where it is active in the target
language (`mode="mean"`), or multiplies it (`"scale:K"`). Matched random units (same count per site, each
set to *its own* target-language mean) are the control. The output language is identified offline with
`langid` (its model ships inside the wheel; nothing is downloaded), restricted to the study's languages.

Like the deactivation matrix, steering is a list of independent conditions (`steering_conditions`: each
source's intact continuations, then per (source, target) pair the target's units and random controls),
each generated on its own (`generate_condition`) and assembled into tables (`steering_tables`); `steer`
runs them all in order.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from ...errors import NeurolocError
from ...evaluate.controls import random_matched
from ...lesion import lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...settings import RunSettings
from ...text.encoding import batches, encode, pad_id
from ...units import LabeledUnits, UnitSet

__all__ = ["STEERING_COLUMNS", "Steering", "check_mode", "generate", "generate_condition", "language_identifier",
           "prompt_prefix", "steer", "steering_conditions", "steering_pairs", "steering_tables"]

STEERING_COLUMNS = ["source", "target", "condition", "seed", "n_units", "n_prompts", "share_target",
                    "share_source"]


@dataclass(frozen=True)
class Steering:
    """One generation condition: continue `source`'s prompts with `target`'s units enhanced ("target"), a
    random control drawn with `seed` ("random"), or nothing ("none": the intact continuations, shared by
    every pair with this source; `target` is then "")."""

    source: str
    target: str
    condition: str
    seed: int
    units: UnitSet | None

    @property
    def id(self) -> str:
        return f"{self.condition}:{self.source}:{self.target}:{self.seed}"


@functools.lru_cache(maxsize=1)
def _langid():
    """langid's model, read once per process (unpacking it takes seconds)."""
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError:
        raise NeurolocError("steering needs the offline language identifier: pip install langid "
                            "(or the extra 'neuroloc[languages]')") from None
    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def language_identifier(languages: Sequence[str]) -> Callable[[str], str]:
    """text → language code among `languages` (those langid knows), '' for empty text."""
    identifier = copy.copy(_langid())  # restricting the languages replaces the copy's arrays, not the model's
    known = [lang for lang in languages if lang in identifier.nb_classes]
    if len(known) < 2:
        raise NeurolocError(f"langid knows fewer than two of the languages {list(languages)}; steering cannot be "
                            "scored")
    identifier.set_languages(known)
    return lambda text: identifier.classify(text)[0] if text.strip() else ""


def prompt_prefix(text: str, fraction: float = 0.5) -> str:
    """The first `fraction` of a text, cut at a space when the text has spaces (else at a character)."""
    cut = max(1, int(len(text) * fraction))
    space = text.rfind(" ", 0, cut)
    return text[:space] if " " in text and space > 0 else text[:cut]


def check_mode(mode: str) -> str:
    """A steering mode: `mean` or `scale:K`."""
    if mode != "mean" and not mode.startswith("scale:"):
        raise NeurolocError(f"steering mode must be 'mean' or 'scale:K', got {mode!r}")
    return mode


def generate(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int, settings: RunSettings) -> list[str]:
    """Greedy continuations of `prompts` (the new text only), in order; left-padded batches encoded and
    sized by the run settings."""
    encoded = encode(lm.tokenizer, prompts, bos=settings.bos)
    pad = pad_id(lm.tokenizer)
    out: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for batch in batches(encoded, settings.batch_size, pad=pad, padding_side="left"):
            inputs = batch.inputs(lm.device, position_ids=False)
            ids = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                    eos_token_id=lm.tokenizer.eos_token_id)
            new = ids[:, inputs["input_ids"].shape[1]:]
            for row, i in enumerate(batch.example_ids):
                out[i] = lm.tokenizer.decode(new[row], skip_special_tokens=True)
    return out


def steering_pairs(languages: Sequence[str], units: LabeledUnits | Mapping[str, UnitSet],
                   pairs: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The (source, target) pairs steered: `pairs`, or every source with every other language that has units."""
    units = dict(units.items())
    return list(pairs) if pairs is not None else [(s, t) for s in languages for t in units if s != t and len(units[t])]


def steering_conditions(units: LabeledUnits | Mapping[str, UnitSet], pairs: Sequence[tuple[str, str]], *,
                        n_controls: int, seed: int) -> list[Steering]:
    """Each source's intact continuations, then per pair the target's units and `n_controls` random sets of
    the same per-site counts (seeds seed, seed + 1, ...)."""
    units = dict(units.items())
    conditions = [Steering(source, "", "none", -1, None) for source in dict.fromkeys(s for s, _ in pairs)]
    for source, target in pairs:
        conditions.append(Steering(source, target, "target", -1, units[target]))
        conditions += [Steering(source, target, "random", seed + i, random_matched(units[target], seed=seed + i))
                       for i in range(n_controls)]
    return conditions


def generate_condition(lm: LoadedModel, condition: Steering, prompts: Mapping[str, Sequence[str]], *, mode: str,
                       values: Mapping[str, Mapping[str, torch.Tensor]] | None, max_new_tokens: int,
                       settings: RunSettings) -> list[str]:
    """The continuations of `condition.source`'s prompts under the condition (`values[target][site name]`:
    per-unit values, full site width, for `mode="mean"`)."""
    texts = list(prompts[condition.source])
    if condition.units is None:
        return generate(lm, texts, max_new_tokens=max_new_tokens, settings=settings)
    if mode == "mean":
        enhanced = lesion(lm, condition.units, "value", values=values[condition.target])
    else:
        enhanced = lesion(lm, condition.units, mode)
    with enhanced:
        return generate(lm, texts, max_new_tokens=max_new_tokens, settings=settings)


def _shares(texts: Sequence[str], identified: Sequence[str], target: str, source: str) -> tuple[float, float]:
    return (sum(lab == target for lab in identified) / len(texts), sum(lab == source for lab in identified) / len(texts))


def steering_tables(conditions: Sequence[Steering], generated: Sequence[Sequence[str]],
                    prompts: Mapping[str, Sequence[str]], pairs: Sequence[tuple[str, str]],
                    identify: Callable[[str], str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, generations) from every condition's continuations (`generated[i]` of `conditions[i]`): per
    pair, the share of continuations identified as the target language (and as the source) with no
    intervention ("none"), with the target's units enhanced ("target") and with random units ("random")."""
    by_id = {c.id: (c, texts) for c, texts in zip(conditions, generated)}
    rows, generations = [], []

    def record(source: str, target: str, condition: str, draw: int, n_units: int, texts: Sequence[str]) -> None:
        identified = [identify(t) for t in texts]
        share_target, share_source = _shares(texts, identified, target, source)
        rows.append({"source": source, "target": target, "condition": condition, "seed": draw, "n_units": n_units,
                     "n_prompts": len(texts), "share_target": share_target, "share_source": share_source})
        generations.extend({"source": source, "target": target, "condition": condition, "seed": draw,
                            "prompt": p, "generated": g, "identified": i}
                           for p, g, i in zip(prompts[source], texts, identified))

    for source, target in pairs:
        record(source, target, "none", -1, 0, by_id[f"none:{source}::-1"][1])
        for condition, texts in (by_id[c.id] for c in conditions if (c.source, c.target) == (source, target)):
            record(source, target, condition.condition, condition.seed, len(condition.units), texts)
    return pd.DataFrame(rows, columns=STEERING_COLUMNS), pd.DataFrame(generations)


def steer(lm: LoadedModel, prompts: Mapping[str, Sequence[str]], units: LabeledUnits | Mapping[str, UnitSet], *,
          values: Mapping[str, Mapping[str, torch.Tensor]] | None = None, mode: str,
          pairs: Sequence[tuple[str, str]] | None = None, n_controls: int, seed: int, max_new_tokens: int,
          settings: RunSettings, identify: Callable[[str], str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (source, target) pair: share of continuations identified as the target language (and as the
    source) with no intervention ("none"), with the target's units enhanced ("target") and with matched
    random units ("random"). Returns (results, generations) tables.

    `values[target][site name]` holds per-unit replacement values (full site width) for `mode="mean"`.
    """
    check_mode(mode)
    if mode == "mean" and values is None:
        raise NeurolocError("steering mode 'mean' needs per-language unit values (mean activation when active)")
    pairs = steering_pairs(list(prompts), units, pairs)
    identify = identify or language_identifier(sorted(set(prompts) | set(dict(units.items()))))
    conditions = steering_conditions(units, pairs, n_controls=n_controls, seed=seed)
    generated = []
    with progress_bar("steering", len(conditions), settings.progress) as advance:
        for condition in conditions:
            generated.append(generate_condition(lm, condition, prompts, mode=mode, values=values,
                                                max_new_tokens=max_new_tokens, settings=settings))
            advance(1)
    return steering_tables(conditions, generated, prompts, pairs, identify)
