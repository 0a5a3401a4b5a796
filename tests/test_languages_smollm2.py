"""Language units on SmolLM2: token counts of act(gate) on PUD sentences (the multilingual study's counting
pass) against a direct computation from the MLP inputs, and LAPE's 1% on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuroloc import MultilingualConfig, RunSettings, load_model
from neuroloc.stimuli.corpora import load_pud
from neuroloc.studies.languages import LanguageSelection

DATA = Path(__file__).parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.smollm2,
              pytest.mark.skipif(not (DATA / "ud" / "zh_pud-ud-test.conllu").is_file(), reason="no PUD treebanks")]


def test_counts_match_direct_gate_activations_and_lape_keeps_one_percent():
    lm = load_model("smollm2", dtype="float32")
    corpus = load_pud(DATA, ["en", "zh"])
    identify = corpus.subset({lang: corpus.ids[lang][:3] for lang in corpus.languages})
    languages = identify.languages
    localizer = MultilingualConfig().localizer(languages, RunSettings(batch_size=3, progress=False))
    stimuli = identify.stimulus_set("pud")
    localizer.fit_recorded(lm, stimuli, localizer.record(lm, stimuli))
    stats = localizer.stats_
    sites = lm.layout.sites("mlp_gate")
    inputs, handles = {}, []
    for layer, block in enumerate(lm.model.model.layers):
        handles.append(block.mlp.register_forward_pre_hook(lambda m, a, layer=layer: inputs.__setitem__(layer, a[0])))
    try:
        for lang in languages:
            positive, n = {}, 0
            for text in identify.texts[lang]:
                ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
                with torch.no_grad():
                    lm.model(input_ids=ids)
                    for layer in (0, 14, 29):
                        mlp = lm.model.model.layers[layer].mlp
                        acts = mlp.act_fn(mlp.gate_proj(inputs[layer]))[0, 1:]
                        positive[layer] = positive.get(layer, 0) + (acts > 0).sum(0)
                n += ids.shape[1] - 1
            assert stats.count(lang, "tokens") == n
            for layer in (0, 14, 29):
                # float noise may flip a unit sitting exactly at 0 between batched and single passes
                counted = stats.get("tokens", lang, sites[layer].name).positive
                assert (counted - positive[layer]).abs().sum() <= 2
    finally:
        for h in handles:
            h.remove()
    selection = LanguageSelection.from_localizer(localizer)
    assert int(selection.assignment.any(axis=0).sum()) == round(0.01 * 30 * 1536)
