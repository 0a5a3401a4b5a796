"""Answer scoring (greedy exact match, best choice, log p(answer | prompt)) against a plain transformers
loop: one unpadded forward per item and `generate` for greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroloc.errors import NeurolocError
from neuroloc.evaluate.answers import answer_accuracy, score_answers, score_continuations
from neuroloc.models.loading import wrap_model
from neuroloc.stimuli.prompts import EncodedContinuation, PromptSet, encode_continuations
from tests.tiny import tiny_model, tiny_tokenizer

PROMPTS = ["The quick brown fox", "She didn't know that the keys", "1 + 2 =", "The lazy dog", "What is 15"]
ANSWERS = ["jumps over", "were", "3", "sat", "+ 4?"]


def _lm(family: str = "llama"):
    return wrap_model(tiny_model(family).double(), tiny_tokenizer())


def _items() -> PromptSet:
    return PromptSet(PROMPTS, ANSWERS, ["a", "a", "b", "b", "b"], ["test"] * 5)


def _reference(lm, prompt: str, answer: str) -> tuple[float, bool]:
    """Plain loop: joint encoding as the library does, one forward without padding, and greedy
    decoding with `generate` compared with the answer's tokens."""
    (e,) = encode_continuations(lm.tokenizer, [prompt], [answer], bos="prepend")
    ids = torch.tensor([e.ids])
    with torch.no_grad():
        logp = lm.model(ids).logits[0].double().log_softmax(-1)
    lp = sum(float(logp[p - 1, ids[0, p]]) for p in range(e.start, len(e.ids)))
    gen = lm.model.generate(ids[:, :e.start], attention_mask=torch.ones(1, e.start, dtype=torch.long),
                            max_new_tokens=e.n_answer, do_sample=False, pad_token_id=0)
    return lp, gen[0, e.start:].tolist() == list(e.ids[e.start:])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_exact_match_and_logprob_equal_a_plain_loop(family) -> None:
    lm = _lm(family)
    items = _items()
    for batch_size in (1, 3, 64):
        scores = score_answers(lm, items, batch_size=batch_size, bos="prepend")
        for i in range(len(items)):
            lp, exact = _reference(lm, items.prompts[i], items.answers[i])
            assert scores.loc[i, "logprob"] == pytest.approx(lp, rel=1e-9, abs=1e-9)
            assert bool(scores.loc[i, "exact"]) == exact
    assert scores.correct.equals(scores.exact)


def test_greedy_continuations_are_exact_and_one_token_off_is_not() -> None:
    """Sequences built from `generate`'s own greedy tokens score as exact matches; changing the last
    generated token makes them miss."""
    lm = _lm()
    tok, encoded, changed = lm.tokenizer, [], []
    for prompt in PROMPTS:
        ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=3, do_sample=False, pad_token_id=0)[0].tolist()
        encoded.append(EncodedContinuation(tuple(out), len(ids)))
        changed.append(EncodedContinuation(tuple(out[:-1] + [(out[-1] + 1) % len(tok)]), len(ids)))
    _, exact = score_continuations(lm, encoded + changed, batch_size=4)
    assert exact[:len(PROMPTS)].all() and not exact[len(PROMPTS):].any()


def test_choices_pick_the_most_likely_and_accuracy_per_label() -> None:
    lm = _lm()
    choices = [("jumps over", "sat", "ran"), ("were", "was"), ("3", "4", "5"), ("sat", "jumps over"),
               ("+ 4?", "- 4?")]
    items = PromptSet(PROMPTS, ANSWERS, ["a", "a", "b", "b", "b"], ["test"] * 5, choices)
    scores = score_answers(lm, items, batch_size=2, bos="prepend")
    for i, options in enumerate(choices):
        lps = [_reference(lm, PROMPTS[i], c)[0] for c in options]
        assert scores.loc[i, "choice"] == int(np.argmax(lps))
        assert scores.loc[i, "correct"] == (options[int(np.argmax(lps))] == ANSWERS[i])
    table = answer_accuracy(scores).set_index("label")
    assert table.loc["b", "n_items"] == 3
    assert table.loc["b", "accuracy"] == pytest.approx(scores.correct[2:].mean())
    assert table.loc["a", "mean_logprob"] == pytest.approx(scores.logprob[:2].mean())


def test_answer_that_tokenizes_to_nothing_is_an_error() -> None:
    lm = _lm()
    with pytest.raises(NeurolocError, match="tokenizes to nothing"):
        encode_continuations(lm.tokenizer, ["The quick brown fox"], [" "], bos="prepend")
    with pytest.raises(NeurolocError, match="tokenizes to nothing"):
        encode_continuations(lm.tokenizer, ["The quick brown fox", "1 + 2 ="], ["jumps", ""], bos="prepend")


@pytest.mark.smollm2
def test_smollm2_knows_paris_and_ig_is_complete() -> None:
    """On SmolLM2: scoring equals the plain loop, "Paris" is an exact match, and integrated gradients
    of ln p(answer | prompt) to two MLP layers add up to f(x) − f(baseline)."""
    from neuroloc.localize.attribution import iter_answer_attributions
    from neuroloc.models.layout import Site
    from neuroloc.models.loading import load_model

    lm = load_model("smollm2", dtype="float32")
    items = PromptSet(["The capital of France is", "The capital of Italy is"], ["Paris", "Rome"], ["c", "c"],
                      ["test", "test"])
    scores = score_answers(lm, items, batch_size=2, bos="prepend")
    assert scores.exact.all()
    for i in range(2):
        assert scores.loc[i, "logprob"] == pytest.approx(_reference(lm, items.prompts[i], items.answers[i])[0], abs=1e-3)
    encoded = encode_continuations(lm.tokenizer, items.prompts, items.answers, bos="prepend")
    batches = list(iter_answer_attributions(lm, encoded, method="ig", sites=[Site(3, "mlp"), Site(20, "mlp")],
                                            steps=16, reduce="sum", batch_size=34, items_per_group=16,
                                            skip_first=True))
    totals = np.concatenate([b.site_totals for b in batches])
    deltas = np.concatenate([b.site_deltas for b in batches])
    assert np.abs(totals - deltas).sum() < 0.05 * np.abs(deltas).sum()
