"""Language units on SmolLM2: token counts of act(gate) on PUD sentences against a direct computation
from the MLP inputs, and LAPE's 1% on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuroloc import load_model
from neuroloc.stimuli.corpora import load_pud
from neuroloc.studies.languages import activation_probability, count_language, lape

DATA = Path(__file__).parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.smollm2,
              pytest.mark.skipif(not (DATA / "ud" / "zh_pud-ud-test.conllu").is_file(), reason="no PUD treebanks")]


def test_counts_match_direct_gate_activations_and_lape_keeps_one_percent():
    lm = load_model("smollm2", dtype="float32")
    corpus = load_pud(DATA, ["en", "zh"])
    texts = {lang: corpus.texts[lang][:3] for lang in corpus.languages}
    sites = lm.layout.sites("mlp_gate")
    counts = {lang: count_language(lm, t, sites, batch_size=3) for lang, t in texts.items()}
    inputs, handles = {}, []
    for layer, block in enumerate(lm.model.model.layers):
        handles.append(block.mlp.register_forward_pre_hook(lambda m, a, layer=layer: inputs.__setitem__(layer, a[0])))
    try:
        for lang, items in texts.items():
            positive, n = {}, 0
            for text in items:
                ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
                with torch.no_grad():
                    lm.model(input_ids=ids)
                    for layer in (0, 14, 29):
                        mlp = lm.model.model.layers[layer].mlp
                        acts = mlp.act_fn(mlp.gate_proj(inputs[layer]))[0, 1:]
                        positive[layer] = positive.get(layer, 0) + (acts > 0).sum(0)
                n += ids.shape[1] - 1
            assert counts[lang].n == n
            for layer in (0, 14, 29):
                # float noise may flip a unit sitting exactly at 0 between batched and single passes
                assert (counts[lang].positive[sites[layer]] - positive[layer]).abs().sum() <= 2
    finally:
        for h in handles:
            h.remove()
    languages = list(texts)
    table = activation_probability(
        torch.stack([torch.cat([counts[lang].positive[s] for s in sites]) for lang in languages]).numpy(),
        [counts[lang].n for lang in languages])
    selection = lape(table, languages)
    assert int(selection.assignment.any(axis=0).sum()) == round(0.01 * 30 * 1536)
