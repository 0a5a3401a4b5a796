"""Context-aware hooks and the intervention registry: activation patching by example id, per-unit values,
added vectors, new kinds, and interventions on a model dispatched over several devices."""

import pytest
import torch

from neuroloc import NeurolocError, Site, UnitSet, lesion, token_logprobs
from neuroloc.lesion import INTERVENTIONS, Intervention, InterventionKind, intervene, register_intervention
from neuroloc.models.hooks import HookContext, batch_context, current_batch, hooks, record, run_forward
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = ["the quick brown fox jumps over", "she looked for the keys in", "what is the answer"]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


def _pair(lm):
    """Two texts of the same token length (so positions line up), as one batch."""
    enc = lm.tokenizer(["the lazy dog jumps", "she looked for the"], return_tensors="pt", padding=True)
    assert enc["attention_mask"].all()
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_observers_receive_site_example_ids_mask_and_positions(lm):
    enc = lm.tokenizer(["a dog", "the quick brown fox jumps"], return_tensors="pt", padding=True,
                       padding_side="left")
    seen = []
    with torch.no_grad(), hooks(lm.layout, observe={Site(1, "mlp"): lambda x, ctx: seen.append((x.shape, ctx))}):
        run_forward(lm.model, example_ids=[7, 3], input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    (shape, ctx), = seen
    assert isinstance(ctx, HookContext) and ctx.site == Site(1, "mlp")
    assert ctx.example_ids == (7, 3) and ctx.batch.row(3) == 1 and ctx.batch.row(5) is None
    assert torch.equal(ctx.attention_mask, enc["attention_mask"])
    # left padding: positions count real tokens only, so the short text starts at 0 after its pads
    n_pad = int((enc["attention_mask"][0] == 0).sum())
    assert ctx.positions[0, n_pad:].tolist() == list(range(enc["attention_mask"][0].sum()))
    assert shape == (2, enc["input_ids"].shape[1], lm.layout.width("mlp"))
    assert current_batch().example_ids is None  # the context ends with the pass


def test_batch_context_nests_and_run_forward_keeps_outer_example_ids(lm):
    batch = _pair(lm)
    got = []
    with batch_context(example_ids=[4, 9]), hooks(lm.layout, observe={Site(0, "residual"): lambda x, c: got.append(c)}):
        run_forward(lm.model, **batch)
    assert got[0].example_ids == (4, 9) and torch.equal(got[0].attention_mask, batch["attention_mask"])
    with pytest.raises(ValueError, match="3 example ids"):
        with batch_context(example_ids=[1, 2, 3], attention_mask=batch["attention_mask"]):
            pass


def test_patching_one_example_from_another_input(lm):
    """Activation patching: example 10's last-layer residual at position p is replaced by example 11's.
    Final norm and LM head act per position, so example 10's logits at p must equal example 11's plain
    logits at p, every other position and example 11 must be untouched."""
    batch = _pair(lm)
    last = lm.layout.n_layers - 1
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with record(lm.layout, [Site(last, "residual")], stop_early=False) as got:
            lm.model(**batch)
    donor = got[f"layers.{last}.residual"][1]  # example 11's activations
    p = 2

    def patch(x, mask, ctx):
        row = ctx.batch.row(10)
        if row is None:
            return x
        x = x.clone()
        x[row, p] = donor[p].to(x.device)
        return x

    every = UnitSet({Site(last, "residual"): torch.ones(lm.layout.width("residual"), dtype=torch.bool)})
    with torch.no_grad(), intervene(lm, every, patch):
        patched = run_forward(lm.model, example_ids=[10, 11], **batch).logits
        unnamed = lm.model(**batch).logits  # no example ids declared: the patch finds no row
    torch.testing.assert_close(patched[0, p], plain[1, p])
    torch.testing.assert_close(patched[0, :p], plain[0, :p])
    torch.testing.assert_close(patched[0, p + 1:], plain[0, p + 1:])
    torch.testing.assert_close(patched[1], plain[1])
    assert not torch.allclose(plain[0, p], plain[1, p])
    torch.testing.assert_close(unnamed, plain)


def test_patching_mid_layer_matches_a_plain_torch_hook(lm):
    """A mid-layer patch keyed by example id inside the scorer's length-sorted batches equals the same
    patch done with a bare PyTorch hook on a batch of that one text."""
    texts = ["a dog", "the quick brown fox jumps over", "she looked"]
    target, p, unit = 1, 3, 5
    with torch.no_grad(), record(lm.layout, [Site(0, "mlp")], stop_early=False) as got:
        lm.model(**lm.tokenizer(["<|endoftext|>" + texts[2]], return_tensors="pt"))
    donor_value = got["layers.0.mlp"][0, 2, unit]

    def patch(x, mask, ctx):
        row = ctx.batch.row(target)
        if row is not None:
            x = x.clone()
            x[row, p + 1, unit] = donor_value  # position p + 1: after the BOS the scorer prepends
        return x

    units = UnitSet.from_names([f"layers.0.mlp[{unit}]"], lm.layout)
    with intervene(lm, units, patch):
        scores = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=3, bos="prepend")
    plain = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=3, bos="prepend")

    def bare(_module, args):
        value = args[0].clone()
        value[0, p + 1, unit] = donor_value
        return (value,)

    ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(texts[target])["input_ids"]])
    handle = lm.layout.mlp_modules[0].register_forward_pre_hook(bare)
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, :-1].double()
    finally:
        handle.remove()
    expected = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()
    assert scores[target].logprobs == pytest.approx(expected, abs=1e-5)
    assert scores[target].logprobs[p:] != pytest.approx(plain[target].logprobs[p:], abs=1e-6)
    for other in (0, 2):
        assert scores[other].logprobs == pytest.approx(plain[other].logprobs, abs=1e-6)


def test_value_and_add_interventions(lm):
    batch = _pair(lm)
    units = UnitSet.from_names(["layers.0.residual[3]", "layers.0.residual[8]", "layers.1.mlp[2]"], lm.layout)
    values = {"layers.0.residual": torch.linspace(-1, 1, 32), "layers.1.mlp": torch.full((48,), 0.25)}
    vectors = {"layers.0.residual": torch.arange(32.0), "layers.1.mlp": torch.ones(48)}
    sites = [Site(0, "residual"), Site(1, "mlp")]
    with torch.no_grad():
        with record(lm.layout, sites, stop_early=False) as plain:
            lm.model(**batch)
        plain = dict(plain)
        with lesion(lm, units, "value", values=values), record(lm.layout, sites, stop_early=False) as fixed:
            lm.model(**batch)
        fixed = dict(fixed)
        with lesion(lm, units, "add:0.5", vectors=vectors), record(lm.layout, [Site(0, "residual")],
                                                                   stop_early=False) as added:
            lm.model(**batch)
    residual = fixed["layers.0.residual"]
    assert torch.all(residual[..., 3] == values["layers.0.residual"][3])
    assert torch.all(residual[..., 8] == values["layers.0.residual"][8])
    torch.testing.assert_close(residual[..., :3], plain["layers.0.residual"][..., :3])
    assert torch.all(fixed["layers.1.mlp"][..., 2] == 0.25)
    expected = plain["layers.0.residual"].clone()
    expected[..., 3] += 0.5 * 3
    expected[..., 8] += 0.5 * 8
    torch.testing.assert_close(added["layers.0.residual"], expected)


def test_intervention_specs_parse_and_explain():
    assert str(Intervention.parse("scale:2")) == "scale:2" and Intervention.parse("scale:2").factor == 2.0
    assert str(Intervention.parse("add")) == "add" and Intervention.parse("add").factor == 1.0
    assert str(Intervention.parse("add:3")) == "add:3"
    assert {"zero", "mean", "scale", "value", "add"} <= set(INTERVENTIONS)
    for spec, message in [("scale", "needs a number"), ("zero:2", "takes no argument"), ("scale:x", "not a number"),
                          ("ablate", "unknown lesion mode")]:
        with pytest.raises(NeurolocError, match=message):
            Intervention.parse(spec)


def test_data_errors_name_the_site(lm):
    units = UnitSet.from_names(["layers.1.mlp[2]"], lm.layout)
    with pytest.raises(NeurolocError, match="needs values="):
        with lesion(lm, units, "value"):
            pass
    with pytest.raises(NeurolocError, match="no values for site layers.1.mlp"):
        with lesion(lm, units, "value", values={"layers.0.mlp": torch.zeros(48)}):
            pass
    with pytest.raises(NeurolocError, match="has 5 values"):
        with lesion(lm, units, "value", values={"layers.1.mlp": torch.zeros(5)}):
            pass


def test_a_new_intervention_is_one_class_and_one_registration(lm):
    class Negate(InterventionKind):
        name = "negate"

        def edit(self, x, mask, factor, value, context):
            return torch.where(mask, -x, x)

    register_intervention(Negate())
    try:
        batch = _pair(lm)
        units = UnitSet.from_names(["layers.0.residual[4]"], lm.layout)
        with torch.no_grad():
            with record(lm.layout, [Site(0, "residual")], stop_early=False) as plain:
                lm.model(**batch)
            plain = dict(plain)
            with lesion(lm, units, "negate"), record(lm.layout, [Site(0, "residual")], stop_early=False) as got:
                lm.model(**batch)
        torch.testing.assert_close(got["layers.0.residual"][..., 4], -plain["layers.0.residual"][..., 4])
        torch.testing.assert_close(got["layers.0.residual"][..., 5], plain["layers.0.residual"][..., 5])
    finally:
        INTERVENTIONS.pop("negate")


def test_flattened_mlp_values_are_seen_per_token_when_the_batch_is_declared():
    """OPT flattens tokens before its MLP: editors and observers still get (batch, tokens, width)."""
    lm = wrap_model(tiny_model("opt"), tiny_tokenizer())
    enc = lm.tokenizer(["the quick brown fox", "a dog"], return_tensors="pt", padding=True)
    seen = []
    units = UnitSet.from_names(["layers.0.mlp[1]"], lm.layout)
    with torch.no_grad(), lesion(lm, units, "zero"), \
            hooks(lm.layout, observe={Site(0, "mlp"): lambda x, ctx: seen.append(x)}):
        run_forward(lm.model, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert seen[0].shape == (2, enc["input_ids"].shape[1], 48)
    assert torch.all(seen[0][..., 1] == 0) and seen[0][..., 2].abs().sum() > 0


def _bare_zeroed(lm, ids: torch.Tensor, chosen: list[int], unit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and layer-1 residual of one unpadded text with layer 0's mlp unit zeroed at `chosen`
    by a bare PyTorch hook."""
    def bare(_module, args):
        value = args[0].clone()
        value[0, chosen, unit] = 0
        return (value,)

    handle = lm.layout.mlp_modules[0].register_forward_pre_hook(bare)
    try:
        with torch.no_grad(), record(lm.layout, [Site(1, "residual")], stop_early=False) as got:
            logits = lm.model(input_ids=ids).logits[0].double()
    finally:
        handle.remove()
    return logits, got["layers.1.residual"][0]


@pytest.mark.parametrize("positions", ["last", [1, -2]])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_interventions_at_chosen_positions_match_a_bare_hook_per_text(lm, positions, padding_side):
    """`positions=` addresses each text's own token positions inside a padded batch (either side):
    every text's activations — and, through the scorer's length-sorted batches, its scores — equal a
    bare PyTorch hook zeroing those positions of that text alone."""
    texts = ["a dog", "the quick brown fox jumps over", "she looked for the keys"]
    unit = 5
    units = UnitSet.from_names([f"layers.0.mlp[{unit}]"], lm.layout)
    bos = lm.tokenizer.bos_token_id
    ids = [torch.tensor([[bos] + lm.tokenizer(t)["input_ids"]]) for t in texts]
    width = max(x.shape[1] for x in ids)
    batch = torch.full((len(texts), width), lm.tokenizer.pad_token_id or 0)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, x in enumerate(ids):
        columns = slice(0, x.shape[1]) if padding_side == "right" else slice(width - x.shape[1], width)
        batch[row, columns], mask[row, columns] = x[0], 1
    with torch.no_grad(), lesion(lm, units, "zero", positions=positions), \
            record(lm.layout, [Site(1, "residual")], stop_early=False) as got:
        run_forward(lm.model, input_ids=batch, attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    with lesion(lm, units, "zero", positions=positions):
        scores = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=3, bos="prepend")
    for row, x in enumerate(ids):
        n = x.shape[1]
        logits, residual = _bare_zeroed(lm, x, [n - 1] if positions == "last" else [k % n for k in positions], unit)
        torch.testing.assert_close(got["layers.1.residual"][row][mask[row].bool()], residual, atol=1e-5, rtol=1e-5)
        expected = logits[:-1].log_softmax(-1).gather(-1, x[0, 1:, None]).squeeze(-1).numpy()
        assert scores[row].logprobs == pytest.approx(expected, abs=1e-5)
    if positions == "last":  # the edit reached the last token and nothing before it
        with torch.no_grad(), record(lm.layout, [Site(1, "residual")], stop_early=False) as plain:
            run_forward(lm.model, input_ids=batch, attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        changed = (got["layers.1.residual"] - plain["layers.1.residual"]).abs().amax(-1) > 1e-6
        last = mask.bool() & ((mask.cumsum(-1) == mask.sum(1, keepdim=True)))
        assert torch.equal(changed & mask.bool(), last)  # (padding rows attend to nothing: not compared)


def test_positions_must_be_last_or_integers(lm):
    units = UnitSet.from_names(["layers.0.mlp[5]"], lm.layout)
    for bad in ("first", [], [1.5], 3):
        with pytest.raises(NeurolocError, match="positions must be None"):
            with lesion(lm, units, "zero", positions=bad):
                pass


def test_positions_on_flattened_tokens_follow_the_declared_batch():
    """OPT hooks its MLP input as (batch × tokens, width): `positions="last"` still reaches each text's own
    last token of a right-padded batch, as running every text alone does."""
    lm = wrap_model(tiny_model("opt"), tiny_tokenizer())
    units = UnitSet.from_names([f"layers.0.mlp[{i}]" for i in range(48)], lm.layout)
    texts = ["the lazy dog", "she looked for the keys in the drawer"]
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True)
    assert not enc["attention_mask"].all()  # the short text is padded
    with torch.no_grad(), lesion(lm, units, "zero", positions="last"):
        batched = run_forward(lm.model, **enc).logits
        alone = [run_forward(lm.model, **lm.tokenizer([t], return_tensors="pt")).logits[0] for t in texts]
    for row, single in enumerate(alone):
        real = enc["attention_mask"][row].bool()
        torch.testing.assert_close(batched[row][real], single, atol=1e-5, rtol=1e-5)


def test_positions_refuse_passes_that_declare_no_batch(lm):
    """Without a declared batch (a bare call, or a cached generation step) positions cannot be counted
    per text: a clear error instead of a silently wrong lesion."""
    units = UnitSet.from_names(["layers.0.mlp[5]"], lm.layout)
    ids = lm.tokenizer(["the lazy dog"], return_tensors="pt")["input_ids"]
    with torch.no_grad(), lesion(lm, units, "zero", positions="last"):
        with pytest.raises(NeurolocError, match="positions= needs each row's real tokens"):
            lm.model(ids)
        with pytest.raises(NeurolocError, match="one cached generation step"):
            with batch_context(attention_mask=torch.ones_like(ids)):
                lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                                  pad_token_id=0)
