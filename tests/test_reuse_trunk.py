"""Below-the-lesion reuse: a stored residual stream replaces the layers a lesion cannot change.

Independent expectation: the same lesion scored by the plain path outside any cache (every layer run);
which passes resumed, and from which layer, is read off the cache's counters.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from neuroloc import lesion
from neuroloc.evaluate import trunk_cache as trunk_module
from neuroloc.evaluate.benchmark import Benchmark
from neuroloc.evaluate.conditions import Condition, evaluate_conditions, trunk_levels
from neuroloc.evaluate.scoring import prefix_sharing, token_logprobs
from neuroloc.evaluate.trunk_cache import trunk_cache
from neuroloc.models.layout import Site
from neuroloc.models.trunk import TrunkUnsupported, _hidden_only

from .test_reuse import TEXTS, one_thread, small_lm, units_at  # noqa: F401 - one_thread is a fixture

FAMILIES = ["llama", "gpt2", "gemma2", "gemma3_text", "opt"]


def score(lm, batch_size: int = 3) -> list[np.ndarray]:
    return [s.logprobs for s in token_logprobs(lm.model, lm.tokenizer, TEXTS, batch_size=batch_size, bos="prepend")]


def assert_close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sharing", [True, False])
def test_lesions_resume_from_the_stored_trunk_exactly(family, sharing):
    lm = small_lm(family, layers=4)
    lesions = {  # name: (units, positions, layers the lesion leaves intact)
        "mlp 2": (units_at(lm, Site(2, "mlp")), None, 2),
        "residual 1": (units_at(lm, Site(1, "residual")), None, 2),
        "attn 3 + residual 2": (units_at(lm, Site(3, "attn"), Site(2, "residual")), None, 3),
        "last token, mlp 3": (units_at(lm, Site(3, "mlp")), [-1], 3),
    }
    expected = {}
    for name, (units, positions, _) in lesions.items():
        with lesion(lm, units, "zero", positions=positions):
            expected[name] = score(lm)
    with prefix_sharing(sharing), trunk_cache(lm, levels=[2, 3], max_bytes=10**8) as cache:
        intact = score(lm)  # captures levels 2 and 3
        assert cache.stats["resumed"] == 0 and len(cache.store) > 0
        assert all(set(levels) == {2, 3} for levels in cache.store.values())
        for name, (units, positions, start) in lesions.items():
            with lesion(lm, units, "zero", positions=positions):
                if positions is not None and sharing:  # its texts run unpacked: a first pass stores their trunk
                    assert_close(score(lm), expected[name])
                before = dict(cache.stats)
                got = score(lm)
            resumed = cache.stats["resumed"] - before["resumed"]
            assert resumed > 0 and cache.stats["layers_skipped"] - before["layers_skipped"] == start * resumed, name
            assert_close(got, expected[name])
    with prefix_sharing(False):
        assert_close(intact, score(lm))
    assert max(np.abs(a - b).max() for a, b in zip(expected["mlp 2"], intact)) > 1e-3  # the lesions act


def test_edits_below_the_stored_levels_run_every_layer():
    lm = small_lm("llama", layers=4)
    early = units_at(lm, Site(0, "mlp"))
    with lesion(lm, early, "zero", positions=[0, 1]):  # early positions of an early layer
        expected = score(lm)
    with trunk_cache(lm, levels=[2, 3], max_bytes=10**8) as cache:
        score(lm)
        with lesion(lm, early, "zero", positions=[0, 1]):
            got = score(lm)
        handle = lm.layout.layers[3].register_forward_hook(lambda *_: None)  # a hook declaring nothing
        try:
            score(lm)
        finally:
            handle.remove()
    assert cache.stats["resumed"] == 0
    assert_close(got, expected)


def test_a_full_cache_stores_nothing_more_and_says_so(caplog):
    lm = small_lm("gpt2", layers=4)
    units = units_at(lm, Site(3, "mlp"))
    with lesion(lm, units, "zero"):
        expected = score(lm)
    with caplog.at_level(logging.WARNING, logger="neuroloc.evaluate.trunk_cache"), \
            trunk_cache(lm, levels=[3], max_bytes=0) as cache:
        score(lm)
        with lesion(lm, units, "zero"):
            got = score(lm)
    assert "trunk cache full" in caplog.text and cache.stats["resumed"] == 0 and cache.bytes == 0
    assert_close(got, expected)


def test_a_cache_filled_part_way_reuses_what_it_holds_and_runs_the_rest_whole(caplog):
    lm = small_lm("llama", layers=4)
    units = units_at(lm, Site(3, "mlp"))
    with lesion(lm, units, "zero"):
        expected = score(lm)
    with trunk_cache(lm, levels=[3], max_bytes=10**8) as roomy:
        score(lm)
        sizes = sorted(h[3].numel() * h[3].element_size() for h in roomy.store.values())  # cleared on exit
    assert len(sizes) >= 3
    with caplog.at_level(logging.WARNING, logger="neuroloc.evaluate.trunk_cache"), \
            trunk_cache(lm, levels=[3], max_bytes=sum(sizes[-2:]) - 1) as cache:  # room for some batches only
        score(lm)
        with lesion(lm, units, "zero"):
            got = score(lm)
        stored, held = len(cache.store), cache.bytes
    assert caplog.text.count("trunk cache full") == 1
    assert 0 < stored < len(sizes) and held <= sum(sizes[-2:]) - 1
    assert cache.stats["resumed"] == stored and cache.stats["whole"] == len(sizes) + len(sizes) - stored
    assert_close(got, expected)


def test_evaluate_conditions_beyond_the_cache_limit_logs_and_keeps_every_result(caplog):
    lm = small_lm("gpt2", layers=4)
    benchmarks = [Benchmark("texts", "in memory", lambda model, tokenizer: pd.DataFrame(
        {"benchmark": "texts", "subset": [str(i) for i in range(len(TEXTS))], "metric": "logprob",
         "value": [s.total for s in token_logprobs(model, tokenizer, TEXTS, batch_size=4, bos="prepend")]}))]
    conditions = [Condition("intact")] + [Condition(str(layer), lambda layer=layer: lesion(
        lm, units_at(lm, Site(layer, "mlp")), "zero")) for layer in (3, 2, 3)]
    with caplog.at_level(logging.INFO, logger="neuroloc.evaluate"):
        limited = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=0)
    assert "trunk cache full" in caplog.text and "0 passes resumed" in caplog.text
    plain = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=0, reuse=False)
    for a, b in zip(limited, plain):
        np.testing.assert_allclose(a.value, b.value, atol=1e-4)


def test_a_resume_that_changes_the_logits_turns_reuse_off(monkeypatch, caplog):
    lm = small_lm("llama", layers=4)
    units = units_at(lm, Site(3, "mlp"))
    with lesion(lm, units, "zero"):
        expected = score(lm)
    real_resume = trunk_module.resume

    def corrupted(layout, level, hidden, arity):  # as if the layers' inputs were more than the residual
        return real_resume(layout, level, hidden * 1.5, arity)

    monkeypatch.setattr(trunk_module, "resume", corrupted)
    with caplog.at_level(logging.WARNING, logger="neuroloc.evaluate.trunk_cache"), \
            trunk_cache(lm, levels=[3], max_bytes=10**8) as cache:
        score(lm)
        with lesion(lm, units, "zero"):
            got = score(lm)
    assert cache.disabled and "reuse is off" in caplog.text
    assert_close(got, expected)


def test_layers_returning_more_than_the_hidden_state_cannot_be_resumed():
    hidden = torch.zeros(1, 2, 3)
    assert _hidden_only(hidden) == (hidden, None)
    assert _hidden_only((hidden, None))[1] == 2
    with pytest.raises(TrunkUnsupported):
        _hidden_only((hidden, torch.ones(1)))


@pytest.mark.parametrize("bos, side", [("prepend", "right"), ("tokenizer", "left"), ("none", "right")])
def test_evaluate_conditions_equals_each_condition_alone_in_the_order_given(bos, side):
    lm = small_lm("gemma2", layers=4)
    lm.tokenizer.padding_side = side

    def run(model, tokenizer):
        scores = token_logprobs(model, tokenizer, TEXTS, batch_size=4, bos=bos)
        return pd.DataFrame({"benchmark": "texts", "subset": [str(i) for i in range(len(scores))],
                             "metric": "logprob", "value": [s.total for s in scores]})

    benchmarks = [Benchmark("texts", "in memory", run)]
    @contextlib.contextmanager
    def undeclared_edit():  # a custom hook that declares nothing: halves layer 2's output
        handle = lm.layout.layers[2].register_forward_hook(lambda _m, _a, out: (out[0] * 0.5, *out[1:])
                                                           if isinstance(out, tuple) else out * 0.5)
        try:
            yield
        finally:
            handle.remove()

    conditions = [Condition("intact")] + [
        Condition(name, lambda units=units, positions=positions: lesion(lm, units, "zero", positions=positions))
        for name, units, positions in [
            ("low", units_at(lm, Site(0, "mlp")), None), ("high", units_at(lm, Site(3, "mlp")), None),
            ("mid", units_at(lm, Site(1, "residual")), None),
            ("low, first tokens", units_at(lm, Site(0, "mlp")), [0, 1]),  # earlier positions, below the stored levels
            ("high, first tokens", units_at(lm, Site(2, "mlp")), [0, 1]),
            ("high, last token", units_at(lm, Site(3, "mlp")), [-1])]] + [Condition("undeclared", undeclared_edit)]
    reused = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=10**8)
    for condition, frame in zip(conditions, reused):
        with condition.enter():
            with prefix_sharing(False):
                alone = run(lm.model, lm.tokenizer)
        np.testing.assert_allclose(frame.value, alone.value, atol=1e-4)
    plain = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=10**8, reuse=False)
    for a, b in zip(reused, plain):
        np.testing.assert_allclose(a.value, b.value, atol=1e-4)
    assert np.abs(reused[-1].value - reused[0].value).max() > 1e-3  # the undeclared edit acts (and was not skipped)
    assert trunk_levels([4, 0, 3, 2]) == [2, 3]  # level 4 only the intact model reaches; 0 is no level
