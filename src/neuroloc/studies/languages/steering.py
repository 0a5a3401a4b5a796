"""Steering the output language: while the model continues a prompt in one language, enhance another
language's units and measure how much of the generated text is in that target language.

Enhancement sets a unit to its mean activation over the tokens where it is active in the target
language (`mode="mean"`), or multiplies it (`"scale:K"`). Matched random units (same count per site, each
set to *its own* target-language mean) are the control. The output language is identified offline with
`langid` (its model ships inside the wheel; nothing is downloaded), restricted to the study's languages.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from ...errors import NeurolocError
from ...evaluate.controls import random_matched
from ...lesion import lesion
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...text.encoding import batches, encode, pad_id
from ...units import LabeledUnits, UnitSet

__all__ = ["STEERING_COLUMNS", "generate", "language_identifier", "prompt_prefix", "steer"]

STEERING_COLUMNS = ["source", "target", "condition", "seed", "n_units", "n_prompts", "share_target",
                    "share_source"]


def language_identifier(languages: Sequence[str]) -> Callable[[str], str]:
    """text → language code among `languages` (those langid knows), '' for empty text."""
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError:
        raise NeurolocError("steering needs the offline language identifier: pip install langid "
                            "(or the extra 'neuroloc[languages]')") from None
    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
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


def generate(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 24, batch_size: int = 16,
             bos: str = "prepend") -> list[str]:
    """Greedy continuations of `prompts` (the new text only), in order; left-padded batches."""
    encoded = encode(lm.tokenizer, prompts, bos=bos)
    pad = pad_id(lm.tokenizer)
    out: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for batch in batches(encoded, batch_size, pad=pad, padding_side="left"):
            inputs = batch.inputs(lm.device, position_ids=False)
            ids = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                    eos_token_id=lm.tokenizer.eos_token_id)
            new = ids[:, inputs["input_ids"].shape[1]:]
            for row, i in enumerate(batch.example_ids):
                out[i] = lm.tokenizer.decode(new[row], skip_special_tokens=True)
    return out


def _shares(texts: Sequence[str], identify: Callable[[str], str], target: str, source: str) -> tuple[float, float]:
    labels = [identify(t) for t in texts]
    return sum(lab == target for lab in labels) / len(labels), sum(lab == source for lab in labels) / len(labels)


def steer(lm: LoadedModel, prompts: Mapping[str, Sequence[str]], units: LabeledUnits | Mapping[str, UnitSet], *,
          values: Mapping[str, Mapping[str, torch.Tensor]] | None = None, mode: str = "mean",
          pairs: Sequence[tuple[str, str]] | None = None, n_controls: int = 1, seed: int = 0,
          max_new_tokens: int = 24, batch_size: int = 16, identify: Callable[[str], str] | None = None,
          progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (source, target) pair: share of continuations identified as the target language (and as the
    source) with no intervention ("none"), with the target's units enhanced ("target") and with matched
    random units ("random"). Returns (results, generations) tables.

    `values[target][site name]` holds per-unit replacement values (full site width) for `mode="mean"`.
    """
    units = dict(units.items())
    languages = list(prompts)
    pairs = list(pairs) if pairs is not None else [(s, t) for s in languages for t in units if s != t and len(units[t])]
    if mode != "mean" and not mode.startswith("scale:"):
        raise NeurolocError(f"steering mode must be 'mean' or 'scale:K', got {mode!r}")
    if mode == "mean" and values is None:
        raise NeurolocError("steering mode 'mean' needs per-language unit values (mean activation when active)")
    identify = identify or language_identifier(sorted(set(languages) | set(units)))
    rows, generations = [], []

    def record(source: str, target: str, condition: str, draw: int, n_units: int, texts: list[str]) -> None:
        share_target, share_source = _shares(texts, identify, target, source)
        rows.append({"source": source, "target": target, "condition": condition, "seed": draw, "n_units": n_units,
                     "n_prompts": len(texts), "share_target": share_target, "share_source": share_source})
        generations.extend({"source": source, "target": target, "condition": condition, "seed": draw,
                            "prompt": p, "generated": g, "identified": identify(g)}
                           for p, g in zip(prompts[source], texts))

    runs = len({s for s, _ in pairs}) + len(pairs) * (1 + n_controls)
    with progress_bar("steering", runs, progress) as advance:
        intact = {}
        for source in dict.fromkeys(s for s, _ in pairs):
            intact[source] = generate(lm, prompts[source], max_new_tokens=max_new_tokens, batch_size=batch_size)
            advance(1)
        for source, target in pairs:
            record(source, target, "none", -1, 0, intact[source])
            sets = [("target", -1, units[target])]
            sets += [("random", seed + i, random_matched(units[target], seed=seed + i)) for i in range(n_controls)]
            for condition, draw, unit_set in sets:
                if mode == "mean":
                    context = lesion(lm, unit_set, "value", values=values[target])
                else:
                    context = lesion(lm, unit_set, mode)
                with context:
                    texts = generate(lm, prompts[source], max_new_tokens=max_new_tokens, batch_size=batch_size)
                record(source, target, condition, draw, len(unit_set), texts)
                advance(1)
    return pd.DataFrame(rows, columns=STEERING_COLUMNS), pd.DataFrame(generations)
