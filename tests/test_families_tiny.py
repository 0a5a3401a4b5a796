"""Families whose layers hold their tokens in another order or width, whose outputs are named tuples, whose
router is a small network, and those neuroloc must refuse: each checked against the model's own modules.

XLNet's layers output (tokens, batch, hidden) and Gemma 3n's (AltUp streams, batch, tokens, hidden); Qwen4-Exp's
output is wider than its config's hidden size (hyper-connection streams side by side). Reformer's layers
return a named tuple. ZAYA scores its experts with the last, smallest matrix of a router MLP. MusicGen's
input embedding is a list (one per audio codebook). A model that runs a layer more than once per pass (Dory)
or cannot run on token ids alone (Gemma 4's assistant, which reads its main model's key/value cache) is
refused at load with the reason.
"""

from __future__ import annotations

import functools

import pytest
import torch

from neuroloc import NeurolocError, UnitSet, lesion, wrap_model
from neuroloc.models.hooks import hooks, input_device, record, run_forward
from neuroloc.text.encoding import batches, encode, pad_id
from scripts.tiny_families import build
from tests.tiny import tiny_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "a dog", "She didn't know that the keys were in the drawer"]


@functools.lru_cache(maxsize=None)
def _lm(family: str):
    return wrap_model(build(family, len(tiny_tokenizer())), tiny_tokenizer(), name=family)


def _padded(lm, side: str = "left") -> dict:
    batch = next(batches(encode(lm.tokenizer, TEXTS, bos="prepend"), 3, pad=pad_id(lm.tokenizer), padding_side=side))
    return {**batch.inputs("cpu", position_ids=False), "use_cache": False}


def _layer_output(lm, layer: int, inputs: dict) -> torch.Tensor:
    seen = []
    handle = lm.layout.layers[layer].register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            lm.model(**inputs)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("family, to_batch_first", [
    ("xlnet", lambda out: out.transpose(0, 1)),  # (tokens, batch, hidden)
    ("gemma3n_text", lambda out: out.permute(1, 2, 0, 3).flatten(2)),  # (streams, batch, tokens, hidden)
    ("qwen4_exp_text", lambda out: out),  # (batch, tokens, streams × hidden)
])
def test_a_layers_tokens_are_read_in_its_own_order_and_width(family, to_batch_first):
    """The residual of a padded batch is the layer's own output as (batch, tokens, units), streams side by
    side; its width is that output's; a zero lesion of units reads 0 there and changes the logits."""
    lm = _lm(family)
    inputs = _padded(lm)
    expected = to_batch_first(_layer_output(lm, 0, inputs))
    assert lm.layout.width(lm.layout.sites("residual")[0]) == expected.shape[-1]
    assert expected.shape[-1] != lm.layout.hidden_size or family == "xlnet"
    with torch.no_grad(), record(lm.layout, lm.layout.sites("residual", [0]), stop_early=False) as got:
        base = run_forward(lm.model, **inputs).logits
    torch.testing.assert_close(got["layers.0.residual"], expected, rtol=0, atol=0)
    last = expected.shape[-1] - 1
    units = UnitSet.from_names([f"layers.0.residual[{i}]" for i in (0, 3, last)], lm.layout)
    with torch.no_grad(), lesion(lm, units, "zero"), \
            record(lm.layout, lm.layout.sites("residual", [0]), stop_early=False) as edited:
        lesioned = run_forward(lm.model, **inputs).logits
    assert torch.all(edited["layers.0.residual"][..., [0, 3, last]] == 0)
    assert edited["layers.0.residual"][..., 1].abs().sum() > 0
    assert not torch.allclose(base, lesioned)


def test_a_layer_that_returns_a_named_tuple_is_edited_in_place():
    """Reformer's layers return a named tuple: a zero lesion of the residual replaces its hidden state."""
    lm = _lm("reformer")
    inputs = _padded(lm, "right")
    with torch.no_grad():
        base = run_forward(lm.model, **inputs).logits
    units = UnitSet.from_names(["layers.0.residual[0]", "layers.0.residual[7]"], lm.layout)
    with torch.no_grad(), lesion(lm, units, "zero"), \
            record(lm.layout, lm.layout.sites("residual", [0]), stop_early=False) as edited:
        lesioned = run_forward(lm.model, **inputs).logits
    assert torch.all(edited["layers.0.residual"][..., [0, 7]] == 0)
    assert not torch.allclose(base, lesioned)


def test_a_router_network_is_read_at_its_expert_scores():
    """ZAYA's router is an MLP (down projection to 256, two layers, an output projection to experts + 1):
    the `router` site is the softmax of the output projection's expert columns, by hand, and unrouting an
    expert sends it no token."""
    lm = _lm("zaya")
    layer = next(i for i in range(lm.layout.n_layers) if lm.layout.has(i, "router"))
    n = lm.layout.parts(layer).moe.n_experts
    router = lm.layout.layers[layer].get_submodule(lm.layout.parts(layer).moe.router)
    scores = []
    handle = router.router_mlp.out_proj.register_forward_hook(lambda _m, _a, out: scores.append(out))
    inputs = _padded(lm)
    site = lm.layout.sites("router", [layer])[0]
    try:
        with torch.no_grad(), record(lm.layout, [site], stop_early=False) as got:
            run_forward(lm.model, **inputs)
    finally:
        handle.remove()
    assert scores[0].shape[-1] == n + 1
    expected = torch.softmax(scores[0].reshape(-1, n + 1)[:, :n], -1)
    torch.testing.assert_close(got[site.name].reshape(-1, n), expected)
    favourite = int(expected.mean(0).argmax())
    units = UnitSet({site: torch.nn.functional.one_hot(torch.tensor(favourite), n).bool()})
    expert = type(site)(layer, "expert", favourite)
    with torch.no_grad(), lesion(lm, units, "unroute"), record(lm.layout, [site, expert], stop_early=False) as cut:
        run_forward(lm.model, **inputs)
    assert torch.all(cut[site.name][..., favourite] == 0)
    assert torch.all(cut[expert.name] == 0)


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm", "eager"])
def test_an_expert_counts_only_the_tokens_it_adds_to_the_output(implementation):
    """LongCat-Flash's zero-computation experts pass a token on unchanged: the model points such a routing slot
    at a real expert's index with weight 0, so that expert computes on the token (a token may even name it
    twice) but adds nothing to the output. Its neurons cover the slots of nonzero weight only, each token once:
    the routed mask and the routed rows are exactly those tokens, with act(gate)·up from its weights by hand."""
    model = build("longcat_flash", len(tiny_tokenizer()))
    model.set_experts_implementation(implementation)
    lm = wrap_model(model, tiny_tokenizer(), name=f"longcat_flash-{implementation}")
    layer = next(i for i in range(lm.layout.n_layers) if lm.layout.has(i, "expert"))
    experts = lm.layout.layers[layer].get_submodule(lm.layout.parts(layer).moe.experts)
    sites = lm.layout.sites("expert", [layer])
    calls, dense, rows = [], {}, {}

    def rows_of(site):
        def observer(_value):
            raise AssertionError("the routed rows are handed over directly")
        observer.routed_rows = lambda r, t: rows.__setitem__(site, (r.clone(), t.clone()))
        return observer

    inputs = _padded(lm, "right")
    handle = experts.register_forward_hook(lambda _m, args, _out: calls.append(args))
    try:
        with torch.no_grad():
            with hooks(lm.layout, observe={s: (lambda v, c, s=s: dense.__setitem__(s, (v.clone(), c.routed)))
                                           for s in sites}):
                run_forward(lm.model, **inputs)
            with hooks(lm.layout, observe={s: rows_of(s) for s in sites}):
                run_forward(lm.model, **inputs)
    finally:
        handle.remove()
    x, index, weights = calls[0]
    live = weights != 0
    assert not live.all()  # the probe routes some tokens to zero-computation experts
    for site in sites:
        e = site.expert
        routed = ((index == e) & live).any(-1)
        tokens = routed.nonzero().flatten()
        gate, up = torch.nn.functional.linear(x[tokens], experts.gate_up_proj[e]).chunk(2, dim=-1)
        expected = experts.act_fn(gate) * up
        value, mask = dense[site]
        assert torch.equal(mask.reshape(-1), routed), site.name
        torch.testing.assert_close(value.reshape(-1, value.shape[-1])[tokens], expected)
        got, at = rows[site]
        order = torch.argsort(at)
        assert torch.equal(at[order], tokens), site.name
        torch.testing.assert_close(got[order], expected)


def test_a_block_held_in_parallel_lists_has_its_residual_stream_and_says_why_nothing_else():
    """XLM keeps block i's attention, norms and FFN in four parallel lists: the layers are the list that ends
    each block (layer_norm2), whose output on a padded batch is the stream the model itself reports after
    block i (`output_hidden_states`) at the real tokens; a zero lesion there changes the logits; every other
    site is absent, naming the lists."""
    lm = _lm("xlm")
    assert lm.layout.layers_path == "transformer.layer_norm2"
    inputs = _padded(lm)
    real = inputs["attention_mask"].bool()
    with torch.no_grad(), record(lm.layout, lm.layout.sites("residual"), stop_early=False) as got:
        output = run_forward(lm.model, **inputs, output_hidden_states=True)
    for i in range(lm.layout.n_layers):
        torch.testing.assert_close(got[f"layers.{i}.residual"][real], output.hidden_states[i + 1][real], rtol=0, atol=0)
    units = UnitSet.from_names(["layers.0.residual[0]", "layers.0.residual[5]"], lm.layout)
    with torch.no_grad(), lesion(lm, units, "zero"):
        lesioned = run_forward(lm.model, **inputs).logits
    assert not torch.allclose(output.logits[real], lesioned[real])
    for kind in ("mlp", "attn", "mlp_gate", "expert", "ssm"):
        assert "holds each block's parts in parallel lists (transformer.attentions, transformer.layer_norm1, " \
               "transformer.ffns, transformer.layer_norm2)" in lm.layout.reason(0, kind)


def test_of_several_stacks_that_run_once_the_one_feeding_the_lm_head_is_the_layer_list():
    """BLT runs an entropy patcher, a byte encoder, a patch-level global transformer and a byte decoder, each a
    list of transformer layers run once: the layers are the decoder's, the stack that finishes last — its last
    layer's output, through the decoder's norm and the LM head, is the model's logits — with their own sites
    (the composite config has no hidden size: the decoder's own config gives it)."""
    lm = _lm("blt")
    assert lm.layout.layers_path == "model.local_decoder.layers"
    assert {"residual", "mlp", "mlp_gate", "attn"} <= set(lm.layout.available_kinds())
    ids = torch.tensor([encode(lm.tokenizer, TEXTS[:1], bos="prepend").input_ids[0]])
    last = lm.layout.sites("residual", [lm.layout.n_layers - 1])
    with torch.no_grad(), record(lm.layout, last, stop_early=False) as got:
        logits = run_forward(lm.model, input_ids=ids, use_cache=False).logits
        again = lm.model.lm_head(lm.model.model.local_decoder.norm(got[last[0].name]))
    torch.testing.assert_close(again, logits)


def test_the_input_device_of_a_list_of_embeddings_is_its_parameters():
    model = build("musicgen", len(tiny_tokenizer()))
    assert isinstance(model.get_input_embeddings(), torch.nn.ModuleList)
    assert input_device(model) == torch.device("cpu")


@pytest.mark.parametrize("family, reason", [
    ("dory", r"applies some of its layers more than once per forward pass \(of model\.layers, layer 1 ran 2 times"),
    ("gemma4_assistant", r"does not run on token ids alone: a text-only forward pass raised ValueError: "
                         r"inputs_embeds and shared_kv_states cannot be None"),
    ("musicgen", r"does not run on token ids alone: a text-only forward pass raised RuntimeError"),
])
def test_a_model_neuroloc_cannot_record_is_refused_at_load_with_the_reason(family, reason):
    with pytest.raises(NeurolocError, match=reason):
        wrap_model(build(family, len(tiny_tokenizer())), tiny_tokenizer(), name=family)


def test_a_tiny_model_keeps_one_layer_of_each_kind_with_its_per_layer_values():
    """The kept layers are the first of each kind — everything the config says of a layer alone — plus the
    layers they reuse; per-layer lists, index lists, per-layer dicts and trailing counts follow, renumbered."""
    from scripts.tiny_families import kept_layers, shrunk

    defaults = {"num_hidden_layers": 8, "layer_types": ["s", "s", "f", "s", "s", "f", "s", "f"],
                "kv_source_layers": [0, 1, 2, 3, 4, 2, 3, 2], "index_layers": [3, 6],
                "per_layer_config": {"02": {"num_attention_heads": 64}, "05": {"num_attention_heads": 64}},
                "num_kv_shared_layers": 3, "sparsity": [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]}
    # kinds: 0 (s), 2 (f, per-layer dict), 3 (s, indexed), 4 (s, sparsity 0), 5 (f, reuses 2, shared),
    # 6 (s, reuses 3, indexed, shared), 7 (f, reuses 2, shared, no dict): 1 is like 0
    assert kept_layers(defaults, 8) == [0, 2, 3, 4, 5, 6, 7]
    got = shrunk(defaults, 100)
    assert got["num_hidden_layers"] == 7
    assert got["layer_types"] == ["s", "f", "s", "s", "f", "s", "f"]
    assert got["kv_source_layers"] == [0, 1, 2, 3, 1, 2, 1]
    assert got["index_layers"] == [2, 5]
    assert got["per_layer_config"] == {"01": {"num_attention_heads": 4}, "04": {"num_attention_heads": 4}}
    assert got["num_kv_shared_layers"] == 3
    assert got["sparsity"] == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_a_layer_a_text_only_pass_skips_has_no_site_and_says_why():
    """Mllama's cross-attention layers do not run without image features: they have no site of any kind
    (so no recording waits for a layer that never runs), with the reason; the other layers record as usual."""
    lm = _lm("mllama")
    idle = [i for i, layer in enumerate(lm.layout.layers) if "CrossAttention" in type(layer).__name__]
    assert idle
    seen = []
    handles = [lm.layout.layers[i].register_forward_hook(lambda *_: seen.append(1)) for i in idle]
    try:
        with torch.no_grad(), record(lm.layout, lm.layout.sites("residual"), stop_early=False) as got:
            run_forward(lm.model, **_padded(lm))
    finally:
        for handle in handles:
            handle.remove()
    assert not seen
    assert sorted(int(name.split(".")[1]) for name in got) == [i for i in range(lm.layout.n_layers) if i not in idle]
    for kind in ("residual", "mlp", "attn"):
        assert "does not run on a text-only forward pass" in lm.layout.reason(idle[0], kind)
    with pytest.raises(NeurolocError, match="does not run on a text-only forward pass"):
        lm.layout.sites("residual", [idle[0]])
