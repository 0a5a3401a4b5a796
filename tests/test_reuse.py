"""Reuse in scoring: prefix trees packed into rows, footprints, and the fallbacks that keep answers exact.

Independent expectations: a plain transformers forward of each text alone (one row, no padding, a full
log_softmax), the set of distinct prefixes of the sequences (what a trie must hold), hand-written
ancestor masks, and the plain path (`prefix_sharing(False)`) under the same lesions.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from neuroloc import UnitSet, intervene, lesion, wrap_model
from neuroloc.evaluate.answers import score_answers
from neuroloc.evaluate import prefix as prefix_module
from neuroloc.evaluate import scoring
from neuroloc.evaluate.prefix import ancestor_mask, plan_prefixes
from neuroloc.evaluate.scoring import prefix_sharing, token_logprobs
from neuroloc.models.footprint import Footprint, declared, hook_state
from neuroloc.models.hooks import current_batch
from neuroloc.models.layout import Site
from neuroloc.stimuli.prompts import PromptSet

from .tiny import FAMILIES, tiny_config, tiny_tokenizer

# pairs and triples sharing long beginnings, texts longer than a 5-token sliding window, one text twice
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "The quick brown fox jumps over the lazy cat.",
    "The quick brown fox jumps.",
    "She didn't know that the keys were in the drawer, so she looked elsewhere!",
    "She didn't know that the keys were in the drawer.",
    "She didn't know that the key was in the drawer.",
    "Hi",
    "1 + 2 = 3; 117 - 104 = 13. What is 15 + 4?",
    "1 + 2 = 3; 117 - 104 = 13.",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (a shared CPU makes extra threads wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_lm(family: str, layers: int = 4, window: int | None = 5):
    """A random `layers`-layer model of `family` (sliding window `window` where the family has one)."""
    tokenizer = tiny_tokenizer()
    kwargs = tiny_config(family, len(tokenizer)).to_dict()
    for key in ("num_hidden_layers", "n_layer"):
        if key in kwargs:
            kwargs[key] = layers
    for key in ("layer_types", "model_type", "transformers_version", "architectures"):
        kwargs.pop(key, None)
    if family in ("gemma2", "gemma3_text", "mistral") and window is not None:
        kwargs["sliding_window"] = window
    config = AutoConfig.for_model(family, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    return wrap_model(model, tokenizer)


def reference(model, tokenizer, text: str, bos: str) -> np.ndarray:
    """ln p of every scored token of `text` alone: BOS (prepend), the tokenizer's specials, or none."""
    ids = tokenizer(text, add_special_tokens=bos == "tokenizer")["input_ids"]
    ids = [tokenizer.bos_token_id, *ids] if bos == "prepend" else ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)[:-1].gather(-1, torch.tensor(ids[1:])[:, None])
    return logprobs.squeeze(-1).numpy()


@contextlib.contextmanager
def counting_tokens(model, seen: list[int]):
    """Count the real tokens of every forward pass, through a hook declared as touching nothing (so
    it leaves every reuse allowed)."""
    @contextlib.contextmanager
    def install():
        handle = model.get_input_embeddings().register_forward_pre_hook(
            lambda _m, _a: seen.append(int(current_batch().attention_mask.sum())))
        try:
            yield
        finally:
            handle.remove()

    with declared(model, Footprint(frozenset(), token_local=True), install()):
        yield


def units_at(lm, *sites: Site) -> UnitSet:
    masks = {site: torch.zeros(lm.layout.width(site.kind), dtype=torch.bool) for site in lm.layout.sites()}
    for site in sites:
        masks[site][:3] = True
    return UnitSet(masks, model=lm.identity)


# --- the plan ------------------------------------------------------------------------------------------

def test_plan_holds_each_distinct_prefix_once_and_every_path():
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(0, 3, size=rng.integers(1, 9))) for _ in range(60)] + [[1, 2, 0], [1, 2, 0]]
    distinct = {tuple(s[:k]) for s in sequences for k in range(1, len(s) + 1)}
    wide = plan_prefixes(sequences, 10_000)
    assert wide.n_tokens == len(distinct)
    for width in (10_000, 12, 8):
        plan = plan_prefixes(sequences, width)
        assert all(len(row) <= max(width, 8) for row in plan.rows)
        for sequence, (r, columns) in zip(sequences, plan.paths):
            row = plan.rows[r]
            assert [row.tokens[c] for c in columns] == sequence
            assert [row.positions[c] for c in columns] == list(range(len(sequence)))
            assert [row.parents[c] for c in columns] == [-1, *columns[:-1]]
        assert len(distinct) <= plan.n_tokens <= sum(map(len, sequences))


def test_ancestor_mask_by_hand():
    # row: tree 0 = a → b, a → c → d; tree 1 = e; one padding column
    mask = ancestor_mask([-1, 0, 0, 2, -1], 6)
    expected = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [1, 0, 1, 1, 0, 0],
                         [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(mask, expected)


# --- exactness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_packed_scores_equal_each_text_alone(family):
    lm = small_lm(family, layers=2)
    plain_tokens = sum(len(lm.tokenizer(t)["input_ids"]) + 1 for t in TEXTS)
    token_logprobs(lm.model, lm.tokenizer, TEXTS[:2], batch_size=2, bos="prepend")  # the first packed pass is checked
    seen: list[int] = []
    with counting_tokens(lm.model, seen):
        scores = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
    assert sum(seen) < 0.8 * plain_tokens  # the shared beginnings ran once
    for text, score in zip(TEXTS, scores):
        np.testing.assert_allclose(score.logprobs, reference(lm.model, lm.tokenizer, text, "prepend"), atol=1e-4)


@pytest.mark.parametrize("bos", ["prepend", "tokenizer", "none"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_every_bos_policy_and_padding_side(bos, side):
    lm = small_lm("gemma2", layers=2)
    lm.tokenizer.padding_side = side
    scores = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=4, bos=bos)
    with prefix_sharing(False):
        plain = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=4, bos=bos)
    for text, score, other in zip(TEXTS, scores, plain):
        ref = reference(lm.model, lm.tokenizer, text, bos)
        np.testing.assert_allclose(score.logprobs, ref[-len(score):] if len(score) else ref[:0], atol=1e-4)
        np.testing.assert_allclose(score.logprobs, other.logprobs, atol=1e-4)
        assert score.offsets.tolist() == other.offsets.tolist()


def test_lesion_at_every_position_is_packed_and_exact():
    lm = small_lm("llama", layers=2)
    units = units_at(lm, Site(0, "mlp"), Site(1, "residual"))
    token_logprobs(lm.model, lm.tokenizer, TEXTS[:2], batch_size=2, bos="prepend")  # the packed check
    with lesion(lm, units, "scale:0.3"):
        with prefix_sharing(False):
            plain = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
        seen: list[int] = []
        with counting_tokens(lm.model, seen):
            packed = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
    assert sum(seen) < sum(len(p) + 1 for p in plain)
    intact = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
    assert max(np.abs(a.logprobs - b.logprobs).max() for a, b in zip(packed, intact)) > 1e-3  # the lesion acts
    for a, b in zip(packed, plain):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_position_lesions_custom_editors_and_bare_hooks_run_every_text_whole():
    lm = small_lm("gpt2", layers=2)
    units = units_at(lm, Site(1, "mlp"))
    plain_tokens = sum(len(lm.tokenizer(t)["input_ids"]) + 1 for t in TEXTS)
    contexts = {
        "positions": lambda: lesion(lm, units, "zero", positions=[-1, 2]),
        "custom": lambda: intervene(lm, units, lambda x, mask: x.masked_fill(mask, 0.0)),
    }
    for name, enter in contexts.items():
        seen: list[int] = []
        with enter():
            assert not hook_state(lm.model).position_wise
            with counting_tokens(lm.model, seen):
                scores = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
            with prefix_sharing(False):
                plain = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=3, bos="prepend")
        assert sum(seen) == plain_tokens, name
        for a, b in zip(scores, plain):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)
    handle = lm.layout.layers[0].register_forward_hook(lambda *_: None)  # declares nothing
    try:
        state = hook_state(lm.model)
        assert state.undeclared and not state.position_wise and state.intact_layers(2) == 0
    finally:
        handle.remove()
    assert not hook_state(lm.model).undeclared


def test_footprints_count_intact_layers():
    residual, inside = Footprint(frozenset({Site(3, "residual"), Site(5, "mlp")})), Footprint(frozenset({Site(3, "attn")}))
    assert residual.intact_layers(8) == 4 and inside.intact_layers(8) == 3
    assert Footprint(frozenset()).intact_layers(8) == 8
    lm = small_lm("llama", layers=4)
    with lesion(lm, units_at(lm, Site(2, "residual")), "zero") as first, \
            lesion(lm, units_at(lm, Site(3, "mlp")), "mean", means={s.name: torch.ones(lm.layout.width(s.kind))
                                                                    for s in lm.layout.sites()}):
        state = hook_state(lm.model)
        assert first.token_local and state.position_wise and state.intact_layers(4) == 3
    assert hook_state(lm.model).footprints == ()


def test_forced_choice_answers_share_their_prompt():
    lm = small_lm("qwen2", layers=2)
    items = PromptSet(["The quick brown fox jumps over the", "She didn't know that the keys were in the"],
                      ["lazy dog.", "drawer."], ["a", "b"], ["test", "test"],
                      choices=[("lazy dog.", "lazy cat.", "fence."), ("drawer.", "car.", "kitchen.")])
    token_logprobs(lm.model, lm.tokenizer, TEXTS[:2], batch_size=2, bos="prepend")  # the packed check
    seen: list[int] = []
    with counting_tokens(lm.model, seen):
        shared = score_answers(lm, items, batch_size=8, bos="prepend")
    with prefix_sharing(False):
        plain_seen: list[int] = []
        with counting_tokens(lm.model, plain_seen):
            plain = score_answers(lm, items, batch_size=8, bos="prepend")
    assert sum(seen) < 0.6 * sum(plain_seen)
    np.testing.assert_allclose(shared.logprob, plain.logprob, atol=1e-4)
    assert shared[["exact", "correct", "choice"]].equals(plain[["exact", "correct", "choice"]])


# --- fallbacks -----------------------------------------------------------------------------------------

def test_a_model_failing_its_packed_check_is_scored_plainly(monkeypatch, caplog):
    lm = small_lm("llama", layers=2)

    def causal_over_the_row(model, allowed, positions, dtype):  # ignores the trees: texts see each other
        width = allowed.shape[-1]
        causal = torch.ones(width, width, dtype=torch.bool, device=allowed.device).tril()
        return torch.zeros((allowed.shape[0], 1, width, width), dtype=dtype).masked_fill_(~causal, torch.finfo(dtype).min)

    monkeypatch.setattr(scoring, "attention_mask_for", causal_over_the_row)
    with caplog.at_level(logging.WARNING, logger="neuroloc.evaluate.scoring"):
        scores = token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=4, bos="prepend")
    assert "not packed" in caplog.text
    for text, score in zip(TEXTS, scores):
        np.testing.assert_allclose(score.logprobs, reference(lm.model, lm.tokenizer, text, "prepend"), atol=1e-4)
    seen: list[int] = []
    with counting_tokens(lm.model, seen):
        token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=4, bos="prepend")
    assert sum(seen) == sum(len(lm.tokenizer(t)["input_ids"]) + 1 for t in TEXTS)  # never packed again


def test_models_without_a_prepared_mask_are_not_packed():
    lm = small_lm("llama", layers=2)
    lm.model.config._attn_implementation = "flash_attention_2"
    assert "prepared mask" in prefix_module.packing_problem(lm.model)
