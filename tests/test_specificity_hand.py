"""The specificity numbers of the POS lesion check against a hand computation on a tiny model: plain
single-sentence forward passes, lesions done with bare PyTorch hooks, words found from character offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroloc import UnitSet
from neuroloc.evaluate.controls import random_matched
from neuroloc.models.loading import wrap_model
from neuroloc.studies.pos.specificity import specificity
from tests.test_pos_pipeline import own_tokenizer, tagged_corpus
from tests.tiny import tiny_model


def _first_tokens(text: str, spans, offsets) -> list[int | None]:
    """Per word, the index of its first token — None when one of its tokens also covers another word.
    A token covers the characters from its first non-space character to its end."""
    covers = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        covers.append((start, end))
    owners = [[w for w, (ws, we) in enumerate(spans) if s < we and ws < e] for s, e in covers]
    out = []
    for w in range(len(spans)):
        mine = [j for j, o in enumerate(owners) if w in o]
        out.append(None if not mine or any(len(owners[j]) > 1 for j in mine) else mine[0])
    return out


def _word_logprobs(lm, corpus, units: UnitSet | None) -> dict[str, list[float]]:
    """ln p(first token of each word | BOS, preceding tokens), per UPOS class, one sentence at a time,
    with `units` (mlp sites) zeroed by bare pre-hooks on the down projections."""
    handles = []
    for site, mask in (units.masks.items() if units is not None else []):
        if mask.any():
            def zero(_module, args, mask=mask):
                return (args[0].masked_fill(mask, 0),)
            handles.append(lm.layout.mlp_modules[site.layer].register_forward_pre_hook(zero))
    by_class: dict[str, list[float]] = {}
    try:
        for sentence in corpus:
            text = sentence.text
            encoded = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = torch.tensor([[lm.tokenizer.bos_token_id] + encoded["input_ids"]])
            with torch.no_grad():
                logprobs = lm.model(input_ids=ids).logits[0].double().log_softmax(-1)
            for first, tag in zip(_first_tokens(text, sentence.spans, encoded["offset_mapping"]), sentence.upos):
                if first is not None:  # token `first` sits at position first + 1, after the BOS
                    by_class.setdefault(tag, []).append(float(logprobs[first, ids[0, first + 1]]))
    finally:
        for handle in handles:
            handle.remove()
    return by_class


def test_specificity_equals_a_hand_computation():
    lm = wrap_model(tiny_model("llama", seed=1), own_tokenizer())
    corpus = tagged_corpus(n_docs=1, per_doc=3, seed=2)
    key = {"NOUN": UnitSet.from_names(["layers.0.mlp[3]", "layers.0.mlp[17]", "layers.1.mlp[8]", "layers.1.mlp[30]"],
                                      lm.layout),
           "VERB": UnitSet.from_names(["layers.0.mlp[5]", "layers.1.mlp[2]", "layers.1.mlp[40]"], lm.layout)}
    result = specificity(lm, corpus, key, evaluated=["NOUN", "VERB", "DET"], n_random=3, seed=4, batch_size=2,
                         bos="prepend")

    intact = {c: np.mean(v) for c, v in _word_logprobs(lm, corpus, None).items()}
    counts = {c: len(v) for c, v in _word_logprobs(lm, corpus, None).items()}
    long = result.long.set_index(["lesioned_class", "condition", "seed", "evaluated_class"])
    for lesioned, units in key.items():
        conditions = [("target", 4, units)] + [("random", 4 + i, random_matched(units, 4 + i)) for i in range(3)]
        drops = {}
        for condition, seed, chosen in conditions:
            damaged = _word_logprobs(lm, corpus, chosen)
            for evaluated in ("NOUN", "VERB", "DET"):
                row = long.loc[(lesioned, condition, seed, evaluated)]
                mean = np.mean(damaged[evaluated])
                assert row.n_words == counts[evaluated] == len(damaged[evaluated])
                assert row.mean_logprob == pytest.approx(mean, abs=1e-5)
                assert row.intact_logprob == pytest.approx(intact[evaluated], abs=1e-5)
                assert row["drop"] == pytest.approx(intact[evaluated] - mean, abs=1e-5)
                drops.setdefault(evaluated, []).append(intact[evaluated] - mean)
        summary = result.summary.set_index(["lesioned_class", "evaluated_class"])
        for evaluated, values in drops.items():
            row = summary.loc[(lesioned, evaluated)]
            controls = np.array(values[1:])
            assert row.drop_target == pytest.approx(values[0], abs=1e-5)
            assert row.control_mean == pytest.approx(controls.mean(), abs=1e-5)
            assert row.control_sd == pytest.approx(controls.std(ddof=1), abs=1e-5)
            assert row.effect_sd == pytest.approx((values[0] - controls.mean()) / controls.std(ddof=1), rel=1e-3)
            assert row.n_units == len(key[lesioned]) and row.n_controls == 3
    assert abs(result.summary.drop_target).max() > 1e-4  # the lesions do something
