"""Behavioural benchmarks: choice scoring against a plain transformers loop, oracle scorers (the answer,
the last-mentioned location, the first choice, chance), the binomial test against scipy, and the
registered benchmarks end to end on a tiny model."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom
from transformers import AutoModelForCausalLM

from neuroloc.errors import NeurolocError
from neuroloc.evaluate.benchmark import RESULT_COLUMNS
from neuroloc.evaluate.chance import above_chance
from neuroloc.evaluate.choice import choice_logprobs, summarize_choices, tally_choices
from neuroloc.evaluate.reasoning import ReasoningConfig
from neuroloc.evaluate.registry import build_benchmarks
from neuroloc.settings import RunSettings
from neuroloc.evaluate.scoring import prefix_sharing
from neuroloc.evaluate.theory_of_mind import last_location_pattern, summarize_theory_of_mind
from neuroloc.models.loading import wrap_model
from neuroloc.stimuli.choice_items import ChoiceItem, last_mentioned, render_prompt
from neuroloc.stimuli.false_belief import make_false_belief_items
from neuroloc.stimuli.reasoning_items import make_reasoning_items
from tests.tiny import tiny_config, tiny_tokenizer


@functools.lru_cache(maxsize=1)
def _model() -> torch.nn.Module:
    """A tiny random llama that takes the stories' length in the tiny tokenizer (~200 tokens)."""
    config = tiny_config("llama", vocab_size=len(tiny_tokenizer()))
    config.max_position_embeddings = 512
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").double().eval()


def _lm():
    return wrap_model(_model(), tiny_tokenizer())


def _value(results: pd.DataFrame, subset: str, metric: str) -> float:
    (value,) = results.loc[(results.subset == subset) & (results.metric == metric), "value"]
    return value


# ------------------------------------------------------------------------------ model scoring
@functools.lru_cache(maxsize=1)
def _wordy_model() -> torch.nn.Module:
    """The tiny model with its output layer kept only for whole-word tokens ("Ġ" + letters), so its
    greedy continuations are text that tokenizes back into the same tokens."""
    model = copy.deepcopy(_model())
    words = [i for token, i in tiny_tokenizer().get_vocab().items() if token[:1] == "Ġ" and token[1:].isalpha()]
    keep = torch.zeros(model.lm_head.weight.shape[0], dtype=torch.bool)
    keep[words] = True
    with torch.no_grad():
        model.lm_head.weight[~keep] = 0
        model.lm_head.weight[keep] *= 50
    return model


def _reference(lm, prompt: str, choice: str, greedy: bool) -> tuple[float, bool | None]:
    """The tokenizer called directly (BOS + prompt, BOS + prompt + " " + choice), one unpadded forward,
    and (`greedy`) `generate` for greedy decoding of the choice's length."""
    tok = lm.tokenizer
    first = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    context = [first] + tok(prompt, add_special_tokens=False)["input_ids"]
    whole = [first] + tok(prompt + " " + choice, add_special_tokens=False)["input_ids"]
    assert whole[:len(context)] == context
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = lm.model(ids).logits[0].log_softmax(-1)
    lp = sum(float(logp[p - 1, whole[p]]) for p in range(len(context), len(whole)))
    if not greedy:
        return lp, None
    generated = lm.model.generate(ids[:, :len(context)], attention_mask=torch.ones(1, len(context), dtype=torch.long),
                                  max_new_tokens=len(whole) - len(context), do_sample=False,
                                  pad_token_id=tok.pad_token_id or 0)
    return lp, generated[0, len(context):].tolist() == whole[len(context):]


def _greedy_item(lm) -> ChoiceItem:
    """An item whose answer is the model's own greedy continuation of three tokens."""
    question = "What is 15 + 4?"
    prompt = render_prompt(ChoiceItem("", question, ("x", "y"), "x", "greedy"), list_choices=False)
    ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    generated = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                  pad_token_id=0)
    answer = lm.tokenizer.decode(generated[0, ids.shape[1]:]).strip()
    return ChoiceItem("", question, ("seven", answer), answer, "greedy")


def test_choice_logprobs_equal_a_plain_loop_at_any_batch_size() -> None:
    lm = wrap_model(_wordy_model(), tiny_tokenizer())
    items = (make_reasoning_items(seed=1, per_cell=1, shots=1).items[::4] + (_greedy_item(lm),)
             + make_false_belief_items(seed=1, per_cell=1, orders=("second_order",)).items[:1])
    for listed, sizes in ((False, (1, 64)), (True, (5,))):
        runs = [choice_logprobs(lm, items, list_choices=listed, bos="prepend", batch_size=size, progress=False)
                for size in sizes]
        logprobs, exact = runs[0]
        for item, lps, hit in zip(items, logprobs, exact):
            prompt = render_prompt(item, list_choices=listed)
            references = [_reference(lm, prompt, c, greedy=c == item.answer) for c in item.choices]
            np.testing.assert_allclose(lps, [r[0] for r in references], rtol=1e-6, atol=1e-6)
            assert hit == references[item.answer_index][1]
        if not listed:
            assert exact[3] and not exact[:3].any()  # the greedy item is an exact match; the others are not
        for other in runs[1:]:  # batch size (and so padding and prefix packing) changes nothing: packed rows
            # differ only by the order of HF eager attention's float32 softmax sums (~1e-7 relative here)
            np.testing.assert_allclose(np.concatenate(other[0]), np.concatenate(logprobs), rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(other[1], exact)
        with prefix_sharing(False):  # without packing, padding alone: equal to the last bit
            plain = [choice_logprobs(lm, items, list_choices=listed, bos="prepend", batch_size=size,
                                     progress=False)[0] for size in (1, 64)]
        np.testing.assert_allclose(np.concatenate(plain[1]), np.concatenate(plain[0]), rtol=1e-12)


@pytest.mark.smollm2
def test_choice_logprobs_on_smollm2_equal_a_plain_loop() -> None:
    """The real tokenizer: "Answer:" + " the box" splits where the prompt ends, scores match a plain loop."""
    from neuroloc import load_model

    lm = load_model("smollm2", dtype="float32")
    items = (make_false_belief_items(seed=0, per_cell=1, orders=("first_order",)).items[:1]
             + make_reasoning_items(seed=0, per_cell=1, types=("arithmetic_words",)).items[:1]
             + (ChoiceItem("", "What is 2 + 2?", ("5", "4"), "4", "x"),))
    logprobs, exact = choice_logprobs(lm, items, list_choices=False, bos="prepend", batch_size=8, progress=False)
    for item, lps, hit in zip(items, logprobs, exact):
        prompt = render_prompt(item, list_choices=False)
        references = [_reference(lm, prompt, c, greedy=c == item.answer) for c in item.choices]
        np.testing.assert_allclose(lps, [r[0] for r in references], rtol=1e-5, atol=1e-4)
        assert hit == references[item.answer_index][1]


# ------------------------------------------------------------------------------------ oracles
def _scores(items, pick) -> list[list[float]]:
    """A scorer that puts 1 on the choice `pick(item)` returns and 0 elsewhere."""
    return [[float(c == pick(item)) for c in range(len(item.choices))] for item in items]


def _last(item) -> int:
    return last_mentioned(item.context, item.choices)


@pytest.fixture(scope="module")
def stories():
    return make_false_belief_items(seed=0, per_cell=40).items


@pytest.fixture(scope="module")
def problems():
    return make_reasoning_items(seed=0, per_cell=40).items


def test_an_oracle_gets_everything_right(stories, problems) -> None:
    for items, summarize in ((stories, summarize_theory_of_mind),
                             (problems, lambda s: summarize_choices("reasoning", s))):
        results = summarize(tally_choices(items, _scores(items, lambda i: i.answer_index)))
        assert (results.loc[results.metric == "accuracy", "value"] == 1.0).all()
    results = summarize_theory_of_mind(tally_choices(stories, _scores(stories, lambda i: i.answer_index)))
    assert _value(results, "belief", "false_minus_true") == 0.0
    assert _value(results, "belief", "last_location_rate") == 0.5  # B in true-belief, A in false-belief stories
    assert not last_location_pattern(results)["last_location_pattern"].any()


def test_naming_the_last_location_gives_the_documented_pattern(stories) -> None:
    results = summarize_theory_of_mind(tally_choices(stories, _scores(stories, _last)))
    for order in ("", "/first_order", "/second_order"):
        assert _value(results, "false_belief" + order, "accuracy") == 0.0
        assert _value(results, "true_belief" + order, "accuracy") == 1.0
        assert _value(results, "reality" + order, "accuracy") == 1.0
        assert _value(results, "memory" + order, "accuracy") == 0.0
        assert _value(results, "belief" + order, "false_minus_true") == -1.0
        assert _value(results, "belief" + order, "last_location_rate") == 1.0
        assert _value(results, "belief" + order, "n_items") == 80 * (2 if order == "" else 1)
    pattern = last_location_pattern(results).set_index("subset")
    assert pattern["last_location_pattern"].all() and set(pattern.index) == {
        "belief", "belief/first_order", "belief/second_order"}
    assert (pattern["false_belief_accuracy"] == 0.0).all()


def test_the_first_choice_scores_exactly_chance_in_every_cell(stories, problems) -> None:
    """Answer positions are balanced, so always taking the first choice is right 1 / k of the time."""
    for items in (stories, problems):
        results = summarize_choices("x", tally_choices(items, _scores(items, lambda i: 0)))
        accuracy = results[results.metric == "accuracy"].set_index("subset")["value"]
        chance = results[results.metric == "chance"].set_index("subset")["value"]
        np.testing.assert_allclose(accuracy, chance[accuracy.index])
    results = summarize_choices("reasoning", tally_choices(problems, _scores(problems, lambda i: 0)))
    assert _value(results, "syllogism/2", "chance") == 0.5 and _value(results, "sequence", "chance") == 0.25
    assert _value(results, "overall", "chance") == pytest.approx((3 * 0.25 + 0.5) / 4)  # a hand computation
    assert _value(results, "overall/3", "n_items") == 4 * 40 and _value(results, "arithmetic_words", "n_items") == 120


def test_a_random_scorer_sits_at_chance() -> None:
    items = make_false_belief_items(seed=5, per_cell=200).items + make_reasoning_items(seed=5, per_cell=100).items
    rng = np.random.default_rng(0)
    scores = tally_choices(items, [rng.normal(size=len(i.choices)) for i in items])
    results = summarize_choices("x", scores)
    wide = results.pivot(index="subset", columns="metric", values="value")
    sd = np.sqrt(wide["chance"] * (1 - wide["chance"]) / wide["n_items"])
    assert ((wide["accuracy"] - wide["chance"]).abs() < 4 * sd).all()
    assert not above_chance(results, alpha=0.001)["above_chance"].any()


# ---------------------------------------------------------------------------- chance test
def test_above_chance_is_scipys_binomial_tail_per_group() -> None:
    rows = []
    for condition, (accuracy, n, chance) in {"baseline": (15 / 20, 20, 0.5), "lesioned": (6 / 24, 24, 0.25)}.items():
        for metric, value in (("accuracy", accuracy), ("chance", chance), ("n_items", n)):
            rows.append(("b", "s", metric, value, condition))
    rows.append(("perplexity", "ud", "perplexity", 12.0, "baseline"))  # no chance level: left out
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS + ["condition"])
    tested = above_chance(frame).set_index("condition")
    assert list(tested.index) == ["baseline", "lesioned"]
    assert tested.loc["baseline", "pvalue"] == pytest.approx(binom.sf(14, 20, 0.5), rel=1e-12)
    assert tested.loc["lesioned", "pvalue"] == pytest.approx(binom.sf(5, 24, 0.25), rel=1e-12)
    assert tested.loc["baseline", "above_chance"] and not tested.loc["lesioned", "above_chance"]
    assert not above_chance(frame, alpha=0.01).set_index("condition").loc["baseline", "above_chance"]  # p ≈ 0.021
    with pytest.raises(NeurolocError, match="alpha"):
        above_chance(frame, alpha=1.5)


# ----------------------------------------------------------------------------- benchmarks
def test_registered_benchmarks_run_on_a_model_whatever_the_batch_size(tmp_path) -> None:
    limits = {"reasoning": 1, "theory_of_mind": 1}
    benchmarks = build_benchmarks(["reasoning", "theory_of_mind"], settings=RunSettings(batch_size=3), limits=limits)
    wide = build_benchmarks(["reasoning", "theory_of_mind"], settings=RunSettings(batch_size=64), limits=limits)
    model, tokenizer = _model(), tiny_tokenizer()
    for benchmark, other in zip(benchmarks, wide):
        results = benchmark.run(model, tokenizer)
        pd.testing.assert_frame_equal(results, other.run(model, tokenizer))
        assert list(results.columns) == RESULT_COLUMNS and (results.benchmark == benchmark.name).all()
        assert results.value.between(-1, 1e6).all() and results.value.notna().all()
        source = json.loads(benchmark.source)
        assert source["seed"] == 0 and source["limit"] == 1 and source["templates"]
    tom = benchmarks[1].run(model, tokenizer)
    assert {"belief", "belief/second_order", "false_belief/first_order", "memory"} <= set(tom.subset)
    assert _value(tom, "false_belief", "n_items") == 2 and _value(tom, "reality", "chance") == 0.5
    # a lab's own items through the same benchmark
    own = tmp_path / "own.jsonl"
    own.write_text("\n".join(json.dumps(r) for r in [
        {"context": "Ann puts the ball in the box. Ann leaves. Bob moves the ball to the bag.",
         "question": "Where will Ann look for the ball?", "choices": ["the box", "the bag"], "answer": "the box",
         "condition": "false_belief"},
        {"context": "Ann puts the ball in the box. Bob moves the ball to the bag while Ann watches.",
         "question": "Where will Ann look for the ball?", "choices": ["the bag", "the box"], "answer": "the bag",
         "condition": "true_belief"}]), encoding="utf-8")
    (mine,) = build_benchmarks(["theory_of_mind"], settings=RunSettings(), paths={"theory_of_mind": own})
    results = mine.run(model, tokenizer)
    assert _value(results, "belief", "n_items") == 2 and "false_minus_true" in set(results.metric)
    assert json.loads(mine.source)["source"] == str(own)


def test_benchmark_configs_check_their_values() -> None:
    assert ReasoningConfig(types="syllogism, sequence").types == ("syllogism", "sequence")
    with pytest.raises(NeurolocError, match=r"^types: .*algebra"):
        ReasoningConfig(types=("algebra",))
    with pytest.raises(NeurolocError, match=r"per_cell"):
        ReasoningConfig(per_cell=0)


def test_belief_rows_of_a_lab_file_whose_difficulties_split_the_conditions() -> None:
    """A difficulty with false-belief items only gets belief rows but no false_minus_true."""
    items = [ChoiceItem("A box. The bag.", "Q?", ("the box", "the bag"), "the box", "false_belief", "1"),
             ChoiceItem("A box. The bag.", "Q?", ("the box", "the bag"), "the bag", "true_belief", "2")]
    results = summarize_theory_of_mind(tally_choices(items, [[1, 0], [1, 0]]))
    assert _value(results, "belief", "false_minus_true") == 1.0 and _value(results, "belief/2", "accuracy") == 0.0
    assert not ((results.subset == "belief/1") & (results.metric == "false_minus_true")).any()
    assert _value(results, "belief", "last_location_rate") == 0.0  # "the bag" is mentioned last; never chosen
