"""Every layout kind, one family each: dense gated (llama), dense ungated (gpt2), fused-expert MoE
(qwen3_moe), per-expert nn.Linear MoE (linear_experts), MoE with a shared expert (qwen2_moe), mixed dense
and MoE layers (deepseek_v3), Mamba (mamba) and an attention/Mamba/MoE hybrid (jamba).

Expectations are independent of neuroloc's hooks: plain PyTorch hooks on the model's modules, hand
computations from the weights (act(x W_gate) · x W_up per expert, softmax / top-k / renormalised routing,
the hand-masked router of an expert lesion), the model's own `output_router_logits`, and a Mamba block's
residual structure.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from neuroloc import NeurolocError, StimulusSet, UnitSet, lesion, register_family, wrap_model
from neuroloc.models.hooks import hooks, record, run_forward
from neuroloc.models.layout import FAMILIES, SITE_KINDS, ModelLayout, Site
from neuroloc.record.collect import collect
from neuroloc.record.recorder import Recorder
from neuroloc.record.stats import StatsStore
from neuroloc.text.encoding import batches, encode, pad_id
from tests.tiny import tiny_model, tiny_tokenizer

SUBSET = ["llama", "gpt2", "qwen3_moe", "linear_experts", "qwen2_moe", "deepseek_v3", "mamba", "jamba"]
BOTH, FIRST, SECOND = [0, 1], [0], [1]
EXPECTED = {
    "llama": dict(residual=BOTH, mlp=BOTH, mlp_gate=BOTH, attn=BOTH),
    "gpt2": dict(residual=BOTH, mlp=BOTH, mlp_gate=BOTH, attn=BOTH),
    "qwen3_moe": dict(residual=BOTH, attn=BOTH, expert=BOTH, router=BOTH),
    "linear_experts": dict(residual=BOTH, attn=BOTH, expert=BOTH, router=BOTH),
    "qwen2_moe": dict(residual=BOTH, attn=BOTH, expert=BOTH, router=BOTH, shared_expert=BOTH),
    "deepseek_v3": dict(residual=BOTH, mlp=FIRST, mlp_gate=FIRST, attn=BOTH, expert=SECOND, router=SECOND,
                        shared_expert=SECOND),
    "mamba": dict(residual=BOTH, ssm=BOTH),
    "jamba": dict(residual=BOTH, mlp=FIRST, mlp_gate=FIRST, attn=SECOND, expert=SECOND, router=SECOND, ssm=FIRST),
}
MOE = ["qwen3_moe", "linear_experts", "qwen2_moe", "deepseek_v3", "jamba"]
TEXTS = ["the quick brown fox jumps over the lazy dog", "a dog", "She didn't know that the keys were in the drawer",
         "POME OY REE HOLILY", "1 + 2 = 3; what is 15 + 4?", "Sentences and non-word strings"]


@functools.lru_cache(maxsize=None)
def _lm(family: str):
    return wrap_model(tiny_model(family), tiny_tokenizer(), name=family)


def _inputs(lm, padding_side: str = "left") -> dict:
    encoded = encode(lm.tokenizer, TEXTS, bos="prepend")
    return next(batches(encoded, len(TEXTS), pad=pad_id(lm.tokenizer), padding_side=padding_side)).inputs("cpu")


def _moe_layer(lm) -> int:
    return next(i for i in range(lm.layout.n_layers) if lm.layout.has(i, "expert"))


def _capture(module: torch.nn.Module, run, *, inputs: bool = False, kwargs: bool = False):
    """Run `run()` with a plain hook on `module`; return what it saw (output, or input args/kwargs)."""
    seen = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda m, a, kw: seen.append((a, kw)), with_kwargs=True)
    elif kwargs:
        handle = module.register_forward_hook(lambda m, a, kw, out: seen.append((a, kw, out)), with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return seen[0]


# -- sites per layer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", SUBSET)
def test_each_family_exposes_the_sites_its_layers_have_and_says_why_not_the_others(family):
    layout = _lm(family).layout
    table = layout.availability()
    have = {kind: entry["layers"] for kind, entry in table.items() if "layers" in entry}
    assert have == EXPECTED[family]
    for kind in SITE_KINDS:
        if kind not in have:
            assert "unavailable" in table[kind] and "layer" in table[kind]["unavailable"]
            with pytest.raises(NeurolocError, match=f"has no '{kind}' site"):
                layout.sites(kind)
        elif have[kind] != BOTH:
            assert table[kind]["absent"]  # a reason for the layers without it
    described = layout.describe()
    assert set(described["sites"]) == set(have) and set(described["unavailable"]) == set(SITE_KINDS) - set(have)


def test_a_missing_kind_is_named_with_its_reason():
    with pytest.raises(NeurolocError, match="MambaBlock has no MLP"):
        _lm("mamba").layout.sites("mlp")
    with pytest.raises(NeurolocError, match="mixture of experts"):
        _lm("deepseek_v3").layout.check(Site(1, "mlp"))
    with pytest.raises(NeurolocError, match="JambaMambaDecoderLayer has no attention"):
        _lm("jamba").layout.check(Site(0, "attn"))
    with pytest.raises(NeurolocError, match="experts 0..3"):
        _lm("qwen3_moe").layout.check(Site(0, "expert", 4))


def test_the_sites_table_says_where_each_kind_is_and_why_not():
    text = _lm("jamba").layout.table()
    assert "attn           layer 1: 4 heads" in text and "absent in layer 0: JambaMambaDecoderLayer has no attention" in text
    assert "expert         layer 1: 4 experts × 48 neurons" in text
    assert "shared_expert  unavailable — " in text


def test_register_family_takes_per_layer_rules():
    """Rules by layer class (a mapping) or by index (a callable) replace discovery layer by layer; a path
    set to None makes the part absent there, with the registration as the reason."""
    model = tiny_model("jamba")
    model.config.model_type = "jamba_renamed"
    try:
        register_family("jamba_renamed", layers="model.layers",
                        per_layer={"JambaMambaDecoderLayer": {"ssm": None}})
        layout = ModelLayout(model)
        assert not layout.has(0, "ssm") and "registered for 'jamba_renamed'" in layout.reason(0, "ssm")
        assert layout.has(1, "attn") and layout.has(0, "mlp") and layout.has(1, "expert")
        register_family("jamba_renamed", layers="model.layers",
                        per_layer=lambda index, layer: {"attn_out": None} if index == 1 else {})
        layout = ModelLayout(model)
        assert not layout.has(1, "attn") and layout.has(0, "ssm")
        with pytest.raises(NeurolocError, match="unknown per-layer keys"):
            register_family("jamba_renamed", layers="model.layers", per_layer={"JambaMambaDecoderLayer": {"mixer": "x"}})
    finally:
        FAMILIES.pop("jamba_renamed", None)
    assert "mixtral_dense" not in FAMILIES  # a table entry no model type matches is gone


def test_gates_are_checked_not_presumed():
    """Gated MLPs (llama, deepseek's dense layer, jamba's) are confirmed by a probe; gpt2 says it has no gate."""
    for family in ("llama", "deepseek_v3", "jamba"):
        description = _lm(family).layout.gate_description()
        assert description.startswith("act(gate) of a gated MLP (checked")
    assert "no gate" in _lm("gpt2").layout.gate_description()


def test_unit_names_say_the_kind_and_the_expert():
    layout = _lm("qwen2_moe").layout
    units = UnitSet.from_names(["layers.1.expert[3][7]", "layers.0.router[2]", "layers.1.shared_expert[39]"], layout)
    assert units.names() == ["layers.0.router[2]", "layers.1.expert[3][7]", "layers.1.shared_expert[39]"]
    assert "layers.1.expert[3][7]" in units and "layers.1.expert[2][7]" not in units
    assert layout.width(Site(1, "expert", 3)) == 24 and layout.width("router") == 4
    with pytest.raises(NeurolocError, match="width 24"):
        UnitSet.from_names(["layers.0.expert[0][24]"], layout)


# -- recording ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _reference(family: str, text: int) -> dict[str, torch.Tensor]:
    """(tokens, width) values of the residual, mlp, attn and ssm sites for one text run alone, read by
    plain hooks on the layer's output, the down / output projection's input, the mixer's output."""
    lm = _lm(family)
    layout = lm.layout
    ids = torch.tensor([encode(lm.tokenizer, TEXTS, bos="prepend").input_ids[text]])
    seen, handles = {}, []
    for site in _plain_sites(family):
        layer, parts = layout.layers[site.layer], layout.parts(site.layer)
        if site.kind in ("residual", "ssm"):
            module = layer if site.kind == "residual" else layer.get_submodule(parts.ssm)
            handles.append(module.register_forward_hook(
                lambda m, a, out, key=site.name: seen.__setitem__(key, out[0] if isinstance(out, tuple) else out)))
        else:
            module = layer.get_submodule(parts.mlp.down if site.kind == "mlp" else parts.attn)
            handles.append(module.register_forward_pre_hook(lambda m, a, key=site.name: seen.__setitem__(key, a[0])))
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return {name: value.reshape(ids.shape[1], -1) for name, value in seen.items()}


def _plain_sites(family: str) -> list[Site]:
    """The residual, mlp, attn and ssm sites of the last layer that has each."""
    kinds = [k for k in ("residual", "mlp", "attn", "ssm") if k in EXPECTED[family]]
    return [s for s in _lm(family).layout.sites(kinds) if s.layer == max(EXPECTED[family][s.kind])]


@pytest.mark.parametrize("family", SUBSET)
def test_batched_padded_recording_equals_one_text_at_a_time(family):
    """Mean rows and token sums at batch size 4 with left padding and batch size 3 with right padding
    equal the values of each text run alone, read by a plain hook."""
    lm = _lm(family)
    sites = _plain_sites(family)
    own = [torch.tensor(s) == 0 for s in encode(lm.tokenizer, TEXTS, bos="prepend").special]
    for batch_size, side in ((4, "left"), (3, "right")):
        recorder = Recorder(lm, sites, pooling="mean", batch_size=batch_size, padding_side=side, bos="prepend")
        for batch in recorder.iter_batches(TEXTS, token_stats=True):
            for j, (text, _) in enumerate(batch.rows):
                for site in sites:
                    raw = _reference(family, text)[site.name]
                    values = raw
                    if site.kind == "attn":
                        values = raw.unflatten(-1, (lm.layout.parts(site.layer).n_heads, -1)).norm(dim=-1)
                    torch.testing.assert_close(batch.features[site][j], values.mean(0), atol=1e-5, rtol=1e-4)
                    torch.testing.assert_close(batch.token_sums[site][j], (raw.double() * own[text][:, None]).sum(0),
                                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", [f for f in SUBSET if f not in ("llama", "gpt2")])
def test_noop_hooks_leave_logits_bit_identical(family):
    lm = _lm(family)
    inputs = _inputs(lm)
    sites = lm.layout.sites()
    every = UnitSet({s: torch.ones(lm.layout.width(s), dtype=torch.bool) for s in sites})
    with torch.no_grad():
        reference = run_forward(lm.model, **inputs).logits
        with lesion(lm, every, "scale:1"):
            scaled = run_forward(lm.model, **inputs).logits
        with hooks(lm.layout, edit={s: (lambda x: x) for s in sites}, observe={s: (lambda x: None) for s in sites}):
            identity = run_forward(lm.model, **inputs).logits
    assert torch.equal(reference, scaled) and torch.equal(reference, identity)


# -- experts and routers, by hand ------------------------------------------------------------------------
def _expert_by_hand(lm, layer: int, expert: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(neurons, output) of one expert on rows x, from its weights: silu(x W_gate) · x W_up, then W_down."""
    moe = lm.layout.parts(layer).moe
    experts = lm.layout.layers[layer].get_submodule(moe.experts)
    if moe.fused:
        gate, up = (x @ experts.gate_up_proj[expert].T).chunk(2, dim=-1)
        neurons = F.silu(gate) * up
        return neurons, neurons @ experts.down_proj[expert].T
    module = experts[expert]
    neurons = F.silu(x @ module.w1.weight.T) * (x @ module.w3.weight.T)
    return neurons, neurons @ module.w2.weight.T


def _router_weight(lm, layer: int) -> torch.Tensor:
    moe = lm.layout.parts(layer).moe
    return lm.layout.layers[layer].get_submodule(moe.router).weight


def _routing_by_hand(lm, layer: int, x: torch.Tensor, removed: int | None = None):
    """Softmax over the router logits (an expert removed: its logit −∞), top-k, renormalised."""
    logits = x @ _router_weight(lm, layer).T
    if removed is not None:
        logits[:, removed] = float("-inf")
    weights, chosen = torch.topk(torch.softmax(logits.float(), -1), 2, dim=-1)
    return weights / weights.sum(-1, keepdim=True), chosen


def _block_input(lm, layer: int, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens entering the MoE block, the block's output), flattened, by plain hooks."""
    block = lm.layout.layers[layer].get_submodule(lm.layout.parts(layer).moe.block)
    seen = {}
    handles = [block.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
               block.register_forward_hook(lambda m, a, out: seen.__setitem__("y", out[0] if isinstance(out, tuple) else out))]
    try:
        with torch.no_grad():
            run_forward(lm.model, **inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen["x"].reshape(-1, seen["x"].shape[-1]), seen["y"].reshape(-1, seen["y"].shape[-1])


@pytest.mark.parametrize("family", MOE)
def test_expert_neurons_are_the_experts_hidden_layer_on_their_routed_tokens(family):
    """Each expert's site holds silu(x W_gate)·x W_up on the tokens the model routed to it (the experts'
    own routing arguments, or the hand routing of the nn.Linear block) and 0 elsewhere; through each
    expert's down projection and routing weight, the sites rebuild the experts' output."""
    lm = _lm(family)
    layer = _moe_layer(lm)
    moe = lm.layout.parts(layer).moe
    inputs = _inputs(lm)
    x, _ = _block_input(lm, layer, inputs)
    if moe.fused:
        experts = lm.layout.layers[layer].get_submodule(moe.experts)
        args, kwargs, out = _capture(experts, lambda: run_forward(lm.model, **inputs), kwargs=True)
        chosen, weights = args[1], args[2]
        total = out.reshape(-1, out.shape[-1])
    else:
        weights, chosen = _routing_by_hand(lm, layer, x)
        total = None
    rebuilt = torch.zeros(x.shape[0], lm.layout.hidden_size)
    sites = lm.layout.sites("expert", [layer])
    with torch.no_grad(), record(lm.layout, sites, stop_early=False) as got:
        run_forward(lm.model, **inputs)
    for site in sites:
        routed = (chosen == site.expert).any(-1)
        value = got[site.name].reshape(x.shape[0], -1)
        neurons, output = _expert_by_hand(lm, layer, site.expert, x[routed])
        torch.testing.assert_close(value[routed], neurons, atol=1e-6, rtol=1e-4)
        assert torch.all(value[~routed] == 0)
        slot_weight = (weights * (chosen == site.expert)).sum(-1)[routed]
        rebuilt[routed] += output * slot_weight[:, None].to(output.dtype)
    if total is not None:
        torch.testing.assert_close(rebuilt, total, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", MOE)
def test_router_units_are_the_softmax_of_the_router_logits(family):
    lm = _lm(family)
    layer = _moe_layer(lm)
    inputs = _inputs(lm)
    with torch.no_grad(), record(lm.layout, [Site(layer, "router")], stop_early=False) as got:
        output = run_forward(lm.model, **inputs, **({} if family == "linear_experts" else {"output_router_logits": True}))
    if family == "linear_experts":
        logits = _block_input(lm, layer, inputs)[0] @ _router_weight(lm, layer).T
    else:  # the model's own router logits, one tensor per MoE layer
        moe_layers = [i for i in range(lm.layout.n_layers) if lm.layout.has(i, "router")]
        logits = output.router_logits[moe_layers.index(layer)]
    expected = torch.softmax(logits.float(), -1)
    torch.testing.assert_close(got[f"layers.{layer}.router"].reshape(expected.shape), expected)


@pytest.mark.parametrize("family", ["qwen3_moe", "linear_experts"])
def test_expert_lesion_equals_the_hand_masked_router(family):
    """`unroute` on expert 1: the MoE block's output is the mixture under the hand-masked router (logit −∞,
    softmax, top-2 among the rest, renormalised), and differs from the unlesioned output."""
    lm = _lm(family)
    layer = _moe_layer(lm)
    inputs = _inputs(lm)
    x, plain = _block_input(lm, layer, inputs)
    units = UnitSet.from_names([f"layers.{layer}.router[1]"], lm.layout)
    with lesion(lm, units, "unroute"):
        x_lesioned, y = _block_input(lm, layer, inputs)
    torch.testing.assert_close(x_lesioned, x)  # the lesion's first layer is this one
    weights, chosen = _routing_by_hand(lm, layer, x, removed=1)
    assert not (chosen == 1).any() and (_routing_by_hand(lm, layer, x)[1] == 1).any()
    expected = torch.zeros_like(y)
    for e in range(lm.layout.parts(layer).moe.n_experts):
        routed = (chosen == e).any(-1)
        if routed.any():
            _, output = _expert_by_hand(lm, layer, e, x[routed])
            expected[routed] += output * (weights * (chosen == e)).sum(-1)[routed][:, None]
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(y, plain)
    with pytest.raises(NeurolocError, match="select router units"):
        with lesion(lm, UnitSet.from_names([f"layers.{layer}.expert[1][0]"], lm.layout), "unroute"):
            run_forward(lm.model, **inputs)


@pytest.mark.parametrize("family", ["qwen3_moe", "linear_experts"])
@pytest.mark.parametrize("mode", ["zero", "scale:2", "value"])
def test_interventions_on_expert_neurons_change_the_mixture_as_computed_by_hand(family, mode):
    lm = _lm(family)
    layer = _moe_layer(lm)
    inputs = _inputs(lm)
    x, _ = _block_input(lm, layer, inputs)
    units = UnitSet.from_names([f"layers.{layer}.expert[2][0]", f"layers.{layer}.expert[2][5]"], lm.layout)
    values = {f"layers.{layer}.expert[2]": torch.linspace(-1, 1, 24)}
    with lesion(lm, units, mode, values=values):
        _, y = _block_input(lm, layer, inputs)
    weights, chosen = _routing_by_hand(lm, layer, x)
    experts = lm.layout.layers[layer].get_submodule(lm.layout.parts(layer).moe.experts)
    expected = torch.zeros_like(y)
    for e in range(lm.layout.parts(layer).moe.n_experts):
        routed = (chosen == e).any(-1)
        neurons, _ = _expert_by_hand(lm, layer, e, x[routed])
        if e == 2:
            picked = [0, 5]
            neurons[:, picked] = {"zero": 0 * neurons[:, picked], "scale:2": 2 * neurons[:, picked],
                                  "value": values[f"layers.{layer}.expert[2]"][picked].expand(len(neurons), 2)}[mode]
        down = experts.down_proj[e].T if lm.layout.parts(layer).moe.fused else experts[e].w2.weight.T
        expected[routed] += (neurons @ down) * (weights * (chosen == e)).sum(-1)[routed][:, None]
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-4)


# -- statistics ------------------------------------------------------------------------------------------
def _routed_own_tokens(lm, layer: int, labels: list[str]) -> dict[tuple[int, str], int]:
    """(expert, label) → the texts' own tokens (no BOS) routed to the expert, each text run alone."""
    encoded = encode(lm.tokenizer, TEXTS, bos="prepend")
    counts: dict[tuple[int, str], int] = {}
    for text, label in enumerate(labels):
        x, _ = _block_input(lm, layer, {"input_ids": torch.tensor([encoded.input_ids[text]])})
        _, chosen = _routing_by_hand(lm, layer, x)
        own = torch.tensor(encoded.special[text]) == 0
        for expert in range(lm.layout.parts(layer).moe.n_experts):
            key = (expert, label)
            counts[key] = counts.get(key, 0) + int(((chosen == expert).any(-1) & own).sum())
    return counts


@pytest.mark.parametrize("family", ["qwen3_moe", "linear_experts"])
def test_expert_statistics_count_the_routed_tokens_and_merge_exactly(family):
    lm = _lm(family)
    layer = _moe_layer(lm)
    labels = ["S", "N", "S", "N", "S", "N"]
    stimuli = StimulusSet(name="t", texts=TEXTS, conditions=labels)
    sites = lm.layout.sites(["expert"], [layer])
    stores = [collect(Recorder(lm, sites, pooling="mean", batch_size=b, padding_side=side, bos="prepend"), stimuli)
              for b, side in ((1, "right"), (4, "left"))]
    halves = [collect(Recorder(lm, sites, pooling="mean", batch_size=2, bos="prepend"),
                      StimulusSet(name="h", texts=TEXTS[i::2], conditions=labels[i::2])) for i in (0, 1)]
    merged = StatsStore.merged(halves)
    expected = _routed_own_tokens(lm, layer, labels)
    for site in sites:
        for label in ("S", "N"):
            tokens = [store.get("tokens", label, site.name) for store in (*stores, merged)]
            assert [t.n for t in tokens] == [expected[(site.expert, label)]] * 3
            moments = [store.get("moments", label, site.name) for store in (*stores, merged)]
            assert len({m.n for m in moments}) == 1 and moments[0].n <= 3
            for other in moments[1:]:
                torch.testing.assert_close(other.mean, moments[0].mean, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(other.m2, moments[0].m2, atol=1e-6, rtol=1e-5)
            for other in tokens[1:]:
                torch.testing.assert_close(other.sum, tokens[0].sum, atol=1e-6, rtol=1e-5)


# -- state-space mixers --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mamba", "jamba"])
def test_ssm_site_is_the_mixer_output(family):
    """The `ssm` site equals the mixer's output (plain hook); in a Mamba block it is exactly what the block
    adds to its input (residual structure)."""
    lm = _lm(family)
    layer = EXPECTED[family]["ssm"][0]
    block = lm.layout.layers[layer]
    mixer = block.get_submodule(lm.layout.parts(layer).ssm)
    inputs = _inputs(lm)
    seen = {}
    handles = [mixer.register_forward_hook(lambda m, a, out: seen.__setitem__("mixer", out)),
               block.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("in", a[0] if a else kw["hidden_states"]),
                                               with_kwargs=True),
               block.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out[0] if isinstance(out, tuple) else out))]
    try:
        with torch.no_grad(), record(lm.layout, [Site(layer, "ssm")], stop_early=False) as got:
            run_forward(lm.model, **inputs)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(got[f"layers.{layer}.ssm"], seen["mixer"])
    if family == "mamba":
        torch.testing.assert_close(seen["in"] + got[f"layers.{layer}.ssm"], seen["out"])


@pytest.mark.parametrize("spans", ["text", "overlapping words"])
def test_routed_rows_reduce_as_each_expert_alone(spans):
    """The side-by-side reduction of many experts equals, expert by expert, the mean of its routed tokens
    over each pooled row's span (words may share a token) and the sums over each text's counted tokens."""
    from neuroloc.record.pooling import text_plan, word_plan
    from neuroloc.record.recorder import PooledBatch
    from neuroloc.record.routed import RoutedRows

    generator = torch.Generator().manual_seed(0)
    batch, length, width = 3, 6, 5
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, 4:] = False
    own = mask.clone()
    own[:, 0] = False  # a BOS: pooled by text plans, never counted
    if spans == "text":
        plan = text_plan(mask, "mean")
    else:
        plan = word_plan([[(1, 2), (2, 3), (5, 5)], [(1, 1), (1, 3)], [(0, 5)]], length, torch.device("cpu"))
    routed_rows, expected = RoutedRows(), {}
    sites = [Site(layer, "expert", e) for layer in (0, 1) for e in range(3)]
    for site in sites:
        tokens = torch.randperm(batch * length, generator=generator)[:int(torch.randint(0, 12, (1,), generator=generator))]
        rows = torch.randn(len(tokens), width, generator=generator)
        routed_rows.add_rows(site, rows, tokens)
        expected[site] = dict(zip(tokens.tolist(), rows))
    reduced = PooledBatch([], {})
    routed_rows.reduce(reduced, plan, own, token_stats=True)
    for site in sites:
        values = expected[site]
        for out in range(plan.n_outputs):
            span = plan.token_rows[plan.output_rows == out].tolist()
            hit = [values[t] for t in span if t in values]
            assert bool(reduced.present[site][out]) == bool(hit)
        pooled = [torch.stack([values[t] for t in plan.token_rows[plan.output_rows == out].tolist() if t in values]).mean(0)
                  for out in range(plan.n_outputs) if reduced.present[site][out]]
        torch.testing.assert_close(reduced.features[site], torch.stack(pooled) if pooled else torch.zeros(0, width))
        for text in range(batch):
            counted = [values[t] for t in range(text * length, (text + 1) * length)
                       if t in values and own.reshape(-1)[t]]
            total = torch.stack(counted).double().sum(0) if counted else torch.zeros(width, dtype=torch.float64)
            torch.testing.assert_close(reduced.token_sums[site][text], total)
            assert int(reduced.routed_counts[site][text]) == len(counted)
            assert torch.equal(reduced.token_positive[site][text], sum((v > 0).long() for v in counted) if counted
                               else torch.zeros(width, dtype=torch.long))


def test_expert_statistics_carry_on_after_the_store_is_read():
    """A store read between recordings (its stacked expert statistics split per site, as on a resume)
    takes further batches exactly as one recording of everything."""
    lm = _lm("qwen3_moe")
    sites = lm.layout.sites(["expert"], [0])
    labels = ["S", "N", "S", "N", "S", "N"]
    recorder = Recorder(lm, sites, pooling="mean", batch_size=2, bos="prepend")
    whole = collect(recorder, StimulusSet(name="w", texts=TEXTS, conditions=labels))
    store = collect(recorder, StimulusSet(name="a", texts=TEXTS[:3], conditions=labels[:3]))
    store.get("moments", "S", sites[0].name)  # read: split into per-site statistics
    collect(recorder, StimulusSet(name="b", texts=TEXTS[3:], conditions=labels[3:]), store)
    for site in sites:
        for label in ("S", "N"):
            for kind in ("moments", "tokens"):
                a, b = whole.get(kind, label, site.name), store.get(kind, label, site.name)
                assert a.n == b.n
                for f in a.FIELDS:
                    torch.testing.assert_close(getattr(b, f), getattr(a, f), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "jamba"])
def test_loading_leaves_no_hook_on_the_model(family):
    """The probes run at load (gates, experts, what layers output) leave the model as they found it: a hook
    left behind (e.g. transformers' own output capture, installed for good by output_hidden_states) would
    count as an undeclared hook and turn the scorer's reuse off."""
    from neuroloc.models.footprint import hook_keys

    model = tiny_model(family)
    before = hook_keys(model)
    wrap_model(model, tiny_tokenizer(), name=family)
    assert hook_keys(model) == before == frozenset()
