"""Layer-list discovery on models with more than one candidate stack, and every experts implementation of
transformers' fused experts read and edited alike.

A multimodal causal LM (GIT, Phi-4-multimodal) holds its text decoder's layers beside vision (and audio)
encoder layers of the same count: the text layers are the ones that run on a text-only pass. A model
that applies its layers recurrently (HRM: an L and an H stack, each run several times per pass) has no
layer list whose layers run once, and is refused with that reason.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from neuroloc import NeurolocError, UnitSet, lesion, wrap_model
from neuroloc.models.hooks import record, run_forward
from neuroloc.models.moe import down_order, experts_reader
from neuroloc.text.encoding import batches, encode, pad_id
from scripts.tiny_families import build
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "a dog", "She didn't know that the keys were in the drawer"]


@pytest.mark.parametrize("family, layers, other", [("git", "git.encoder.layer", "git.image_encoder"),
                                                   ("phi4_multimodal", "model.layers", "model.embed_tokens_extend")])
def test_a_multimodal_models_layers_are_its_text_decoders(family, layers, other):
    model = build(family, len(tiny_tokenizer()))
    lm = wrap_model(model, tiny_tokenizer(), name=family)
    assert lm.layout.layers_path == layers
    assert [id(m) for m in lm.layout.layers] == [id(m) for m in model.get_submodule(layers)]
    inputs = next(batches(encode(lm.tokenizer, TEXTS, bos="prepend"), 3, pad=pad_id(lm.tokenizer))).inputs("cpu")
    seen = []
    handle = lm.layout.layers[-1].register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad(), record(lm.layout, lm.layout.sites("residual"), stop_early=False) as got:
            run_forward(lm.model, **inputs)
    finally:
        handle.remove()
    last = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
    assert torch.equal(got[f"layers.{lm.layout.n_layers - 1}.residual"], last)
    assert got["layers.0.residual"].shape[:2] == inputs["input_ids"].shape


def test_a_model_that_runs_its_layers_recurrently_is_refused_with_the_reason():
    model = build("hrm_text", len(tiny_tokenizer()))
    with pytest.raises(NeurolocError, match=r"applies its layers recurrently: .*model\.L_module\.layers ran \d+ "
                                            r"times.*model\.H_module\.layers ran \d+ times"):
        wrap_model(model, tiny_tokenizer(), name="hrm_text")


# -- fused experts under every experts implementation ------------------------------------------------------
def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@functools.lru_cache(maxsize=None)
def _moe(implementation: str):
    model = tiny_model("qwen3_moe")
    model.set_experts_implementation(implementation)
    return wrap_model(model, tiny_tokenizer(), name=f"qwen3_moe-{implementation}")


def _inputs(lm) -> dict:
    return next(batches(encode(lm.tokenizer, TEXTS, bos="prepend"), 3, pad=pad_id(lm.tokenizer),
                        padding_side="left")).inputs("cpu")


@pytest.mark.parametrize("implementation, order", [("grouped_mm", "sorted"), ("batched_mm", "flat"), ("eager", None)])
def test_fused_experts_are_read_where_the_model_hands_them_to_the_down_projection(implementation, order):
    """grouped_mm sorts its (token, expert) rows, batched_mm keeps them in token order: both are read as
    the input of the model's own down projection; eager loops over experts, so neuroloc recomputes the
    hidden layer after the module ran. The neurons equal silu(x W_gate)·x W_up by hand on the routed
    tokens, and a zero lesion gives the mixture computed by hand, under every implementation."""
    lm = _moe(implementation)
    experts = lm.layout.layers[0].get_submodule(lm.layout.parts(0).moe.experts)
    block = lm.layout.layers[0].get_submodule(lm.layout.parts(0).moe.block)
    assert down_order(experts_reader(lm.layout, 0), lm.layout.hidden_size) == order
    inputs = _inputs(lm)
    seen = {}
    handles = [experts.register_forward_pre_hook(lambda m, a: seen.__setitem__("args", a)),
               block.register_forward_hook(lambda m, a, out: seen.__setitem__("out", _hidden(out)))]
    try:
        with torch.no_grad(), record(lm.layout, lm.layout.sites("expert", [0]), stop_early=False) as got:
            run_forward(lm.model, **inputs)
        plain = seen["out"].clone()
        units = UnitSet.from_names(["layers.0.expert[1][0]", "layers.0.expert[1][3]"], lm.layout)
        with torch.no_grad(), lesion(lm, units, "zero"):
            run_forward(lm.model, **inputs)
        lesioned = seen["out"].reshape(-1, seen["out"].shape[-1])
    finally:
        for handle in handles:
            handle.remove()
    x, index, weights = seen["args"]
    expected = torch.zeros_like(lesioned)
    for e in range(experts.num_experts):
        routed = (index == e).any(-1)
        gate, up = (x[routed] @ experts.gate_up_proj[e].T).chunk(2, dim=-1)
        neurons = F.silu(gate) * up
        value = got[f"layers.0.expert[{e}]"].reshape(x.shape[0], -1)
        torch.testing.assert_close(value[routed], neurons, atol=1e-6, rtol=1e-4)
        assert torch.all(value[~routed] == 0)
        if e == 1:
            neurons[:, [0, 3]] = 0
        expected[routed] += (neurons @ experts.down_proj[e].T) * (weights * (index == e)).sum(-1)[routed][:, None]
    torch.testing.assert_close(lesioned, expected, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(lesioned, plain.reshape(lesioned.shape))


# -- layers carrying several streams or more positions than the text -----------------------------------
@pytest.mark.parametrize("family, streams", [("hy_v4", 4), ("prophetnet", 1), ("cpmant", 1)])
def test_a_layers_units_are_what_it_outputs_per_text_token(family, streams):
    """hy_v4 carries 4 hyper-connection streams per token (all of them are its units, side by side);
    ProphetNet appends its predict streams after the main stream and CPM-Ant prepends prompt positions:
    the residual is the text's positions, as the model's own `output_hidden_states` reports them. A zero
    lesion of some of those units reads 0 there and changes the output."""
    lm = wrap_model(build(family, len(tiny_tokenizer())), tiny_tokenizer(), name=family)
    hidden = lm.layout.hidden_size
    assert lm.layout.width(lm.layout.sites("residual")[0]) == streams * hidden
    ids = torch.tensor([encode(lm.tokenizer, TEXTS[:1], bos="prepend").input_ids[0]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    with torch.no_grad(), record(lm.layout, lm.layout.sites("residual", [0]), stop_early=False) as got:
        output = run_forward(lm.model, **inputs, output_hidden_states=True)
    reported = output.hidden_states[1]  # the model's own hidden state after layer 0
    torch.testing.assert_close(got["layers.0.residual"], reported.reshape(1, ids.shape[1], -1))
    units = UnitSet.from_names([f"layers.0.residual[{i}]" for i in (0, 5, streams * hidden - 1)], lm.layout)
    with torch.no_grad(), lesion(lm, units, "zero"), \
            record(lm.layout, lm.layout.sites("residual", [0]), stop_early=False) as edited:
        lesioned = run_forward(lm.model, **inputs)
    assert torch.all(edited["layers.0.residual"][..., [0, 5, streams * hidden - 1]] == 0)
    assert not torch.allclose(lesioned.logits, output.logits)
    if family == "prophetnet":  # its attention output projection runs once per stream: no head per token
        assert "runs 2 times per forward pass (once per stream)" in lm.layout.availability()["attn"]["unavailable"]
