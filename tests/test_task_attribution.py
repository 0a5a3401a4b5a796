"""Attribution of ln p(answer | prompt) to units: gradient × activation against finite differences,
integrated-gradients completeness, position reductions, and invariance to batching and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroloc.errors import NeurolocError
from neuroloc.localize.attribution import iter_answer_attributions
from neuroloc.models.hooks import hooks
from neuroloc.models.layout import Site
from neuroloc.models.loading import wrap_model
from neuroloc.stimuli.prompts import encode_continuations
from tests.tiny import tiny_model, tiny_tokenizer

PROMPTS = ["The quick brown fox", "She didn't know that the keys", "1 + 2 =", "The lazy"]
ANSWERS = ["jumps over", "were", "3", "dog."]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama").double(), tiny_tokenizer())


@pytest.fixture(scope="module")
def encoded(lm):
    return encode_continuations(lm.tokenizer, PROMPTS, ANSWERS, bos="prepend")


def _f(lm, e, site, position=None, unit=None, step=0.0) -> tuple[float, torch.Tensor]:
    """Plain forward of one unpadded sequence: Σ ln p(answer tokens), with the site's unit at
    `position` nudged by `step`; also the site's activations (positions, width)."""
    store = {}

    def edit(x):
        store["a"] = x.reshape(len(e.ids), -1)[:, :].detach().clone()
        if position is None:
            return x
        out = x.clone().reshape(len(e.ids), -1)
        out[position, unit] += step
        return out.reshape(x.shape)

    with torch.no_grad(), hooks(lm.layout, edit={site: edit}):
        logp = lm.model(torch.tensor([e.ids])).logits[0].double().log_softmax(-1)
    f = sum(float(logp[p - 1, e.ids[p]]) for p in range(e.start, len(e.ids)))
    return f, store["a"]


def _all(lm, encoded, **kwargs):
    settings = {"batch_size": 16, "items_per_group": 16, "skip_first": True}  # explicit: the engine has no defaults
    batches = list(iter_answer_attributions(lm, encoded, **{**settings, **kwargs}))
    order = np.argsort(np.concatenate([b.items for b in batches]))
    scores = torch.cat([b.scores for b in batches]).double()[order]
    return batches, scores, np.concatenate([b.logprob for b in batches])[order]


@pytest.mark.parametrize("reduce", ["max", "sum"])
def test_gradxact_against_finite_differences(reduce) -> None:
    """On GPT-2 (its eager attention stays in float64, so central differences are exact to ~1e-9)."""
    lm = wrap_model(tiny_model("gpt2").double(), tiny_tokenizer())
    encoded = encode_continuations(lm.tokenizer, PROMPTS, ANSWERS, bos="prepend")
    sites = lm.layout.sites("mlp")
    width = lm.layout.width("mlp")
    _, scores, f = _all(lm, encoded, method="gradxact", reduce=reduce, batch_size=3, items_per_group=3)
    eps = 1e-5
    for i in (0, 1):
        e = encoded[i]
        assert f[i] == pytest.approx(_f(lm, e, sites[0])[0], rel=1e-9)
        positions = range(1, len(e.ids) - 1)  # after BOS, up to the last token predicting an answer token
        for j, site in enumerate(sites):
            _, act = _f(lm, e, site)
            for unit in torch.argsort(act[1:].abs().amax(0), descending=True)[:3].tolist():
                per = [(_f(lm, e, site, p, unit, eps)[0] - _f(lm, e, site, p, unit, -eps)[0]) / (2 * eps)
                       * float(act[p, unit]) for p in positions]
                expected = max(per) if reduce == "max" else sum(per)
                assert float(scores[i, j * width + unit]) == pytest.approx(expected, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("rule", ["midpoint", "trapezoid"])
def test_ig_completeness(lm, encoded, rule) -> None:
    batches, _, _ = _all(lm, encoded, method="ig", steps=32, rule=rule, reduce="sum", batch_size=40)
    totals = np.concatenate([b.site_totals for b in batches])
    deltas = np.concatenate([b.site_deltas for b in batches])
    assert np.abs(totals - deltas).sum() < 0.05 * np.abs(deltas).sum()
    # f(baseline): a plain forward with the site zeroed at every position
    site = lm.layout.sites("mlp")[1]
    order = np.concatenate([b.items for b in batches])
    e = encoded[int(order[0])]
    with torch.no_grad(), hooks(lm.layout, edit={site: lambda x: torch.zeros_like(x)}):
        logp = lm.model(torch.tensor([e.ids])).logits[0].double().log_softmax(-1)
    f_base = sum(float(logp[p - 1, e.ids[p]]) for p in range(e.start, len(e.ids)))
    f_x = _f(lm, e, site)[0]
    assert deltas[0, 1] == pytest.approx(f_x - f_base, rel=1e-6)


def test_attention_heads_and_batching_do_not_change_results(lm, encoded) -> None:
    sites = [Site(0, "attn"), Site(1, "mlp")]
    runs = [_all(lm, encoded, method=m, sites=sites, steps=4, batch_size=bs, items_per_group=g)
            for m in ("gradxact",) for bs, g in ((1, 1), (5, 3), (64, 64))]
    for _, scores, f in runs[1:]:
        assert torch.allclose(scores, runs[0][1], rtol=1e-5, atol=1e-9) and np.allclose(f, runs[0][2], rtol=1e-9)
    assert runs[0][1].shape == (len(encoded), lm.layout.n_heads + lm.layout.width("mlp"))
    ig, _, _ = _all(lm, encoded, method="ig", sites=sites, steps=32, reduce="sum")
    totals = np.concatenate([b.site_totals for b in ig])
    deltas = np.concatenate([b.site_deltas for b in ig])
    assert np.abs(totals - deltas).sum() < 0.05 * np.abs(deltas).sum()


def test_errors(lm, encoded) -> None:
    settings = {"batch_size": 16, "items_per_group": 16, "skip_first": True}
    with pytest.raises(NeurolocError, match="position reduction"):
        list(iter_answer_attributions(lm, encoded, **settings, reduce="mean"))
    with pytest.raises(NeurolocError, match="unknown attribution method"):
        list(iter_answer_attributions(lm, encoded, **settings, method="lrp"))
    with pytest.raises(NeurolocError, match="items_per_group"):
        list(iter_answer_attributions(lm, encoded, **{**settings, "items_per_group": 0}))
