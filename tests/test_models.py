"""Site discovery, hooks and interventions on a tiny random model of every family."""

import pytest
import torch
from torch import nn

from neuroloc import NeurolocError, Site, UnitSet, lesion, register_family
from neuroloc.models.hooks import StopForward, hooks, record, run_forward
from neuroloc.models.layout import FAMILIES, ModelLayout
from neuroloc.models.loading import wrap_model
from tests.tiny import FAMILIES as TINY_FAMILIES, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def lm(request):
    return wrap_model(tiny_model(request.param), tiny_tokenizer(), name=request.param)


def _batch(lm):
    enc = lm.tokenizer(["the quick brown fox jumps", "a dog"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_layout_widths_match_config(lm):
    layout = lm.layout
    assert layout.n_layers == 2
    assert layout.width("residual") == 32
    assert layout.width("mlp") == 48
    assert layout.width("attn") == 4 and layout.head_dim == 8


def test_noop_intervention_is_bit_identical(lm):
    batch = _batch(lm)
    with torch.no_grad():
        reference = lm.model(**batch).logits
        every = UnitSet.empty(lm.layout, ["residual", "mlp", "attn"])
        every = UnitSet({s: ~m for s, m in every.masks.items()})
        with lesion(lm, every, "scale:1"):
            scaled = lm.model(**batch).logits
        with hooks(lm.layout, edit={s: (lambda x: x) for s in lm.layout.sites(["residual", "mlp", "attn"])}):
            identity = lm.model(**batch).logits
    assert torch.equal(reference, scaled)
    assert torch.equal(reference, identity)


def test_site_values_match_independent_computation(lm):
    """Residual = the layer's output in output_hidden_states; mlp = the down projection's input,
    whose projection reproduces the MLP output."""
    batch = _batch(lm)
    with torch.no_grad():
        hidden = lm.model(**batch, output_hidden_states=True).hidden_states
        with record(lm.layout, lm.layout.sites(["residual", "mlp", "attn"]), stop_early=False) as got:
            lm.model(**batch)
    torch.testing.assert_close(got["layers.0.residual"], hidden[1])
    down = lm.layout.mlp_modules[0]
    assert got["layers.0.mlp"].shape[-1] == lm.layout.width("mlp")
    assert got["layers.1.attn"].shape[-1] == lm.layout.n_heads * lm.layout.head_dim
    with torch.no_grad():
        projected = down(got["layers.0.mlp"])
    assert projected.shape[-1] == lm.layout.width("residual")


def _mlp_reference(layer, family: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(post-activation neurons, gate activation) computed by hand from the MLP's input `x` with the
    layer's own weights and activation."""
    if family == "opt":
        act = layer.activation_fn(layer.fc1(x))
        return act, act
    mlp = layer.mlp
    if family == "gpt2":
        act = mlp.act(mlp.c_fc(x))
        return act, act
    if family == "gpt_neox":
        act = mlp.act(mlp.dense_h_to_4h(x))
        return act, act
    if family == "phi3":
        gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
        return up * mlp.activation_fn(gate), mlp.activation_fn(gate)
    gate = mlp.act_fn(mlp.gate_proj(x))
    return gate * mlp.up_proj(x), gate


def test_mlp_and_attn_sites_equal_the_modules_own_computation(lm):
    """`mlp` = act(gate(x)) * up(x) (or act(fc(x))) recomputed from the MLP's input captured by a bare
    PyTorch hook; `mlp_gate` = act(gate(x)); `attn` projected by the output projection = the attention
    module's output; through the down projection, `mlp` = the MLP's output."""
    family = lm.model.config.model_type
    batch = _batch(lm)
    layer = lm.layout.layers[1]
    entry = layer.fc1 if family == "opt" else layer.mlp
    attention = lm.layout.attn_modules[1]
    attention_parent = layer.get_submodule(lm.layout.paths.attn_out.rsplit(".", 1)[0])
    seen = {}
    handles = [entry.register_forward_pre_hook(lambda m, args: seen.__setitem__("mlp_in", args[0])),
               attention_parent.register_forward_hook(lambda m, a, out: seen.__setitem__(
                   "attn_out", out[0] if isinstance(out, tuple) else out))]
    if family != "opt":
        handles.append(layer.mlp.register_forward_hook(lambda m, a, out: seen.__setitem__("mlp_out", out)))
    try:
        with torch.no_grad(), record(lm.layout, lm.layout.sites(["mlp", "mlp_gate", "attn"], [1]),
                                     stop_early=False) as got:
            lm.model(**batch)
            neurons, gate = _mlp_reference(layer, family, seen["mlp_in"])
            through_output = attention(got["layers.1.attn"])
            down = lm.layout.mlp_modules[1](got["layers.1.mlp"])
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(got["layers.1.mlp"].reshape(neurons.shape), neurons)
    torch.testing.assert_close(got["layers.1.mlp_gate"].reshape(gate.shape), gate)
    assert not torch.equal(gate, neurons) or not lm.layout.gated
    torch.testing.assert_close(through_output.reshape(seen["attn_out"].shape), seen["attn_out"])
    if "mlp_out" in seen:
        torch.testing.assert_close(down.reshape(seen["mlp_out"].shape), seen["mlp_out"])


def test_llama_attn_site_equals_per_head_attention_recomputed():
    """Head h's slice of the `attn` site = softmax(q_h k_h^T / sqrt(d) + causal mask) v_h, computed by hand
    from the layer's q/k/v projections and rotary embedding (grouped-query heads repeated)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    enc = lm.tokenizer(["the quick brown fox jumps"], return_tensors="pt")
    attn = lm.model.model.layers[1].self_attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad(), record(lm.layout, [Site(1, "attn")], stop_early=False) as got:
            lm.model(**enc)
    finally:
        handle.remove()
    x, (cos, sin) = seen["hidden_states"], seen["position_embeddings"]
    heads, kv, d = lm.layout.n_heads, lm.model.config.num_key_value_heads, lm.layout.head_dim
    b, t, _ = x.shape
    with torch.no_grad():
        q = attn.q_proj(x).view(b, t, heads, d).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, kv, d).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
        scores = q @ k.transpose(-1, -2) / d ** 0.5
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, heads * d)
    torch.testing.assert_close(got["layers.1.attn"], expected, atol=1e-5, rtol=1e-4)


def test_zero_lesion_zeroes_exactly_the_selected_units(lm):
    batch = _batch(lm)
    units = UnitSet.from_names(["layers.0.residual[3]", "layers.1.mlp[5]", "layers.0.attn[2]"], lm.layout)
    sites = lm.layout.sites(["residual", "mlp", "attn"])
    with torch.no_grad(), lesion(lm, units, "zero"), record(lm.layout, sites, stop_early=False) as got:
        lm.model(**batch)
    assert torch.all(got["layers.0.residual"][..., 3] == 0)
    assert torch.all(got["layers.1.mlp"][..., 5] == 0)
    hd = lm.layout.head_dim
    assert torch.all(got["layers.0.attn"][..., 2 * hd:3 * hd] == 0)
    assert got["layers.0.residual"][..., 4].abs().sum() > 0
    assert got["layers.0.attn"][..., :2 * hd].abs().sum() > 0


def test_lesion_changes_logits_and_scale_two_doubles(lm):
    batch = _batch(lm)
    units = UnitSet.from_names(["layers.1.mlp[0]", "layers.1.mlp[7]"], lm.layout)
    with torch.no_grad():
        base = lm.model(**batch).logits
        with lesion(lm, units, "zero"):
            zeroed = lm.model(**batch).logits
        with lesion(lm, units, "scale:2"), record(lm.layout, [Site(1, "mlp")], stop_early=False) as got:
            lm.model(**batch)
        with record(lm.layout, [Site(1, "mlp")], stop_early=False) as plain:
            lm.model(**batch)
    assert not torch.equal(base, zeroed)
    torch.testing.assert_close(got["layers.1.mlp"][..., 7], 2 * plain["layers.1.mlp"][..., 7])


def test_mean_lesion_uses_stored_means(lm):
    batch = _batch(lm)
    units = UnitSet.from_names(["layers.0.residual[1]"], lm.layout)
    means = {"layers.0.residual": torch.arange(32, dtype=torch.float32)}
    with torch.no_grad(), lesion(lm, units, "mean", means=means), \
            record(lm.layout, [Site(0, "residual")], stop_early=False) as got:
        lm.model(**batch)
    assert torch.all(got["layers.0.residual"][..., 1] == 1.0)
    with pytest.raises(NeurolocError, match="means"):
        with lesion(lm, units, "mean"):
            pass


def test_hooks_are_removed_even_on_error(lm):
    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())

    before = count()
    with pytest.raises(RuntimeError):
        with hooks(lm.layout, observe={Site(0, "mlp"): lambda x: None}, stop_after_layer=1):
            assert count() > before
            raise RuntimeError("boom")
    assert count() == before


def test_unknown_site_raises(lm):
    with pytest.raises(NeurolocError, match="layer 7 does not exist"):
        with record(lm.layout, [Site(7, "residual")]):
            pass


def test_early_stop_skips_later_layers_and_head(lm):
    batch = _batch(lm)
    ran = []
    later = lm.layout.layers[1].register_forward_hook(lambda *a: ran.append("layer1"))
    head = lm.model.get_output_embeddings().register_forward_hook(lambda *a: ran.append("head"))
    try:
        with record(lm.layout, [Site(0, "residual")]) as got, torch.no_grad():
            assert run_forward(lm.model, **batch) is None
    finally:
        later.remove()
        head.remove()
    assert ran == [] and "layers.0.residual" in got


def test_unknown_layout_is_a_clear_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "oddball", "num_hidden_layers": 2, "hidden_size": 8,
                                          "num_attention_heads": 2})()
            self.blocks_a = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
            self.blocks_b = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])

    with pytest.raises(NeurolocError, match="oddball.*register_family"):
        ModelLayout(Odd())


def test_register_family_teaches_a_new_layout():
    model = tiny_model("llama")
    model.config.model_type = "llama_renamed"
    try:
        register_family("llama_renamed", layers="model.layers", mlp_out="mlp.down_proj", attn_out="self_attn.o_proj")
        assert ModelLayout(model).width("mlp") == 48
    finally:
        FAMILIES.pop("llama_renamed")


def test_discovery_fallback_finds_llama_sites():
    model = tiny_model("llama")
    model.config.model_type = "unlisted_llama"
    layout = ModelLayout(model)
    assert layout.paths.mlp_out == "mlp.down_proj" and layout.paths.attn_out == "self_attn.o_proj"


def test_stop_forward_ends_the_pass_after_the_layer(lm):
    """Called directly inside `hooks(stop_after_layer=0)`, the model raises StopForward right after
    layer 0: layer 1 and the head never run. `run_forward` turns it into None; outside the block the
    model runs in full again."""
    batch = _batch(lm)
    ran = []
    spies = [lm.layout.layers[0].register_forward_hook(lambda *a: ran.append("layer0")),
             lm.layout.layers[1].register_forward_hook(lambda *a: ran.append("layer1")),
             lm.model.get_output_embeddings().register_forward_hook(lambda *a: ran.append("head"))]
    try:
        with torch.no_grad():
            with hooks(lm.layout, stop_after_layer=0):
                with pytest.raises(StopForward):
                    lm.model(**batch)
                assert ran == ["layer0"]
                assert run_forward(lm.model, **batch) is None
            assert ran == ["layer0", "layer0"]
            assert run_forward(lm.model, **batch) is not None
    finally:
        for spy in spies:
            spy.remove()
    assert ran[-3:] == ["layer0", "layer1", "head"]
