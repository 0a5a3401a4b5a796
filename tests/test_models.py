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


def test_stop_forward_is_an_exception_type():
    assert issubclass(StopForward, Exception)
