"""Interventions, recording and scoring on a tiny model dispatched over several devices with accelerate.

What this proves, honestly:
- `offload` (runs everywhere): the embedding and layer 1 are offloaded to disk, so their parameters
  sit on the `meta` device between calls and `lm.device` (the first parameter's device) is `meta`,
  while every activation is computed on the CPU. Masks, values and inputs that followed `lm.device`
  would land on `meta` and fail; moved to the hooked tensor's device, results equal the undispatched
  model's. It does not exercise two devices that both compute.
- `cuda` (only where a GPU is present): layer 0 runs on cuda:0 and layer 1 on the CPU, so hooked
  tensors really live on two devices within one forward pass.
"""

import copy

import pytest
import torch

from neuroloc import Localizer, Site, StimulusSet, UnitSet, lesion, token_logprobs
from neuroloc.models.hooks import record
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "she looked for the keys", "a dog",
         "pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy"]


def _placements():
    yield pytest.param({"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
                        "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}, id="offload")
    yield pytest.param({"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu",
                        "model.norm": "cpu", "model.rotary_emb": 0, "lm_head": "cpu"}, id="cuda",
                       marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))


@pytest.fixture(scope="module", params=list(_placements()))
def pair(request, tmp_path_factory):
    """(the plain model, the same weights dispatched by `device_map`)."""
    from accelerate import dispatch_model

    plain = wrap_model(tiny_model("llama"), tiny_tokenizer())
    model = dispatch_model(copy.deepcopy(plain.model), device_map=request.param, main_device="cpu",
                           offload_dir=str(tmp_path_factory.mktemp("offload")))
    return plain, wrap_model(model, tiny_tokenizer())


def test_the_split_is_real(pair):
    _, split = pair
    devices = {p.device.type for p in split.model.parameters()}
    assert len(devices) == 2, devices


def test_lesions_on_a_split_model_match_the_plain_model(pair):
    plain, split = pair
    units = UnitSet.from_names(["layers.0.residual[3]", "layers.0.mlp[7]", "layers.1.attn[2]",
                                "layers.1.mlp_gate[5]"], plain.layout)
    means = {"layers.0.residual": torch.arange(32.0), "layers.0.mlp": torch.ones(48),
             "layers.1.attn": torch.full((32,), 0.5), "layers.1.mlp_gate": torch.zeros(48)}
    for mode in ("zero", "mean", "scale:2"):
        results = []
        for lm in (plain, split):
            with lesion(lm, units, mode, means=means):
                results.append(token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=4, bos="prepend"))
        for a, b in zip(*results):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4), mode
    enc = plain.tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    sites = [Site(0, "mlp"), Site(1, "residual")]
    got = []
    for lm in (plain, split):
        with torch.no_grad(), lesion(lm, units, "zero"), record(lm.layout, sites, stop_early=False) as values:
            lm.model(**enc)
        got.append({k: v.cpu() for k, v in values.items()})
    assert torch.all(got[1]["layers.0.mlp"][..., 7] == 0)
    for name in got[0]:
        torch.testing.assert_close(got[0][name], got[1][name], atol=1e-5, rtol=1e-5)


def test_recording_on_a_split_model_matches_the_plain_model(pair):
    plain, split = pair
    stimuli = StimulusSet("toy", tuple(TEXTS), tuple("SSSNNN"), ("S", "N"))
    fits = [Localizer(["residual", "mlp"], percent=10, batch_size=4).fit(lm, stimuli) for lm in (plain, split)]
    torch.testing.assert_close(torch.as_tensor(fits[0].t_), torch.as_tensor(fits[1].t_), atol=1e-4, rtol=1e-4)
    assert fits[0].units_ == fits[1].units_
