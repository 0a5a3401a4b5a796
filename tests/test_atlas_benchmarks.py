"""The benchmarks that join the atlas for language and relation networks, against independent computations:
`multilingual_perplexity` (perplexity by hand with plain transformers, on the multilingual study's held-out
split re-derived by hand) and `relations` (greedy exact match by hand)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroloc import NeurolocError, RunSettings
from neuroloc.errors import MissingData
from neuroloc.evaluate.registry import BenchmarkSpec
from neuroloc.pipelines.multilingual import MultilingualConfig
from neuroloc.pipelines.task import TaskConfig
from tests.tiny import tiny_model, tiny_tokenizer

SETTINGS = RunSettings(batch_size=3, progress=False)
N_TEXTS = 12


def write_pud(root: Path, n: int = N_TEXTS) -> Path:
    """ud/en_pud-ud-test.conllu and ud/fr_pud-ud-test.conllu: `n` parallel sentences (shared ids)."""
    texts = {"en": [f"The dog {i} runs home." for i in range(n)], "fr": [f"Le chien {i} court vite." for i in range(n)]}
    (root / "ud").mkdir(parents=True, exist_ok=True)
    for lang, items in texts.items():
        (root / "ud" / f"{lang}_pud-ud-test.conllu").write_text("".join(
            f"# sent_id = n{i:03d}\n# text = {text}\n1\t{text.split()[0]}\t_\t_\t_\t_\t0\troot\t_\t_\n\n"
            for i, text in enumerate(items)), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama").eval()


@pytest.fixture(scope="module")
def tokenizer():
    return copy.deepcopy(tiny_tokenizer())


def hand_perplexity(model, tokenizer, texts) -> float:
    """exp(−Σ ln p / Σ tokens): each text alone after the BOS token, every token counted, plain transformers."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        total += float(logprobs.gather(-1, ids[0, 1:, None]).sum())
        count += ids.shape[1] - 1
    return float(np.exp(-total / count))


def hand_heldout(path: Path, n_heldout: int, seed: int) -> list[str]:
    """The multilingual study's held-out texts of one language, re-derived: ids shuffled once by the seed,
    the held-out ones from the back (at most half)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    ids = [line.split("=", 1)[1].strip() for line in lines if line.startswith("# sent_id")]
    texts = [line.split("=", 1)[1].strip() for line in lines if line.startswith("# text")]
    order = np.random.default_rng(seed).permutation(len(ids))
    held = [ids[p] for p in order][len(ids) - min(n_heldout, len(ids) // 2):]
    return [texts[ids.index(i)] for i in held]


def test_multilingual_perplexity_is_perplexity_of_the_held_out_split_by_hand(model, tokenizer, tmp_path):
    root = write_pud(tmp_path / "data")
    spec = BenchmarkSpec("multilingual_perplexity", {"languages": "fr,en", "n_heldout": 4, "seed": 3, "limit": 3})
    bench = spec.build(SETTINGS, root)
    assert bench.subsets == ("fr", "en")
    rows = bench.run(model, tokenizer)
    assert set(rows.benchmark) == {"multilingual_perplexity"} and list(dict.fromkeys(rows.subset)) == ["fr", "en"]
    for lang in ("fr", "en"):
        texts = hand_heldout(root / "ud" / f"{lang}_pud-ud-test.conllu", 4, 3)[:3]
        value = rows[(rows.subset == lang) & (rows.metric == "perplexity")].value.iloc[0]
        assert value == pytest.approx(hand_perplexity(model, tokenizer, texts), rel=1e-5)


def test_multilingual_perplexity_reads_the_multilingual_studys_held_out_texts(tmp_path):
    from neuroloc.evaluate.multilingual_perplexity import MultilingualPerplexityConfig, heldout_texts
    from neuroloc.evaluate.benchmark import BenchmarkOptions

    root = write_pud(tmp_path / "data")
    study = MultilingualConfig(data=str(root), n_identify=5, n_heldout=4, seed=2).load_inputs()
    options = BenchmarkOptions(path=None, data_dir=root, limit=None, batch_size=2, bos="prepend")
    texts, _ = heldout_texts(options, MultilingualPerplexityConfig(languages=("fr",), n_identify=5, n_heldout=4,
                                                                   seed=2))
    assert texts == {"fr": study.heldout.texts["fr"]}
    assert not set(texts["fr"]) & set(study.identify.texts["fr"])


def test_multilingual_perplexity_without_data_or_with_an_unknown_language_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data beside the working directory
    monkeypatch.delenv("NEUROLOC_DATA", raising=False)
    with pytest.raises(MissingData, match="no UD PUD treebanks") as missing:
        BenchmarkSpec("multilingual_perplexity", {}).build(SETTINGS, tmp_path / "empty")
    root = write_pud(tmp_path / "data")
    with pytest.raises(NeurolocError, match="no texts in de .*it has en, fr") as unknown:
        BenchmarkSpec("multilingual_perplexity", {"languages": "de"}).build(SETTINGS, root)
    assert "\n" not in str(missing.value) + str(unknown.value)


def greedy_items(model, tokenizer, path: Path) -> list[dict]:
    """Prompt–answer items of two relations: per relation, test items whose answer is the random model's own
    greedy next token (found among seeded random prompts: one that starts with a space, so it joins the prompt
    as the answer does), items with another answer, and identification items."""
    words = "The quick brown fox jumps over the lazy dog and keys were in drawer so she looked elsewhere".split()
    rng, exact = random.Random(0), []
    while len(exact) < 4:
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            word = tokenizer.decode([int(model(ids).logits[0, -1].argmax())])
        if word.startswith(" ") and word.strip() and prompt not in dict(exact):
            exact.append((prompt, word.strip()))
    rows = []
    for k, label in enumerate(("first", "second")):
        rows += [{"prompt": p, "answer": a, "label": label, "split": "test"} for p, a in exact[k::2]]
        rows += [{"prompt": f"{label} item {i} is", "answer": "zebra quartz", "label": label, "split": "test"}
                 for i in range(k + 1)]
        rows += [{"prompt": f"{label} fact {i} is", "answer": "Paris", "label": label, "split": "identification"}
                 for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def hand_exact(model, tokenizer, prompt: str, answer: str) -> bool:
    """Every answer token is the argmax given BOS, the prompt and the answer tokens before it (plain transformers)."""
    context = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    whole = [tokenizer.bos_token_id, *tokenizer(f"{prompt} {answer}", add_special_tokens=False)["input_ids"]]
    assert whole[:len(context)] == context
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    return all(int(logits[j - 1].argmax()) == whole[j] for j in range(len(context), len(whole)))


def test_relations_is_greedy_exact_match_per_relation_by_hand(model, tokenizer, tmp_path):
    rows = greedy_items(model, tokenizer, tmp_path / "facts.jsonl")
    bench = BenchmarkSpec("relations", {"path": str(tmp_path / "facts.jsonl")}).build(SETTINGS, None)
    assert bench.subsets == ("first", "second")
    result = bench.run(model, tokenizer)
    for label in ("first", "second"):
        items = [r for r in rows if r["label"] == label and r["split"] == "test"]
        by_hand = np.mean([hand_exact(model, tokenizer, r["prompt"], r["answer"]) for r in items])
        got = result[result.subset == label].set_index("metric").value
        assert got["accuracy"] == pytest.approx(by_hand) and 0 < by_hand < 1
        assert got["n_items"] == len(items) and got["chance"] == 0.0
    limited = BenchmarkSpec("relations", {"path": str(tmp_path / "facts.jsonl"), "relations": "second",
                                          "limit": 1}).build(SETTINGS, None).run(model, tokenizer)
    assert set(limited.subset) == {"second"} and limited.set_index("metric").value["n_items"] == 1


def test_relations_reads_the_task_studys_test_split():
    from neuroloc.evaluate.benchmark import BenchmarkOptions
    from neuroloc.evaluate.relations import RelationsConfig, relation_items

    study = TaskConfig(max_test=4).load_inputs()
    options = BenchmarkOptions(path=None, data_dir=None, limit=4, batch_size=2, bos="prepend")
    items = relation_items(options, RelationsConfig(relations=("currency", "capital")))
    for label in ("capital", "currency"):
        mine = [i for i, lab in enumerate(items.labels) if lab == label]
        theirs = study.test.indices(label)
        assert [items.prompts[i] for i in mine] == [study.test.prompts[i] for i in theirs]
        assert [items.answers[i] for i in mine] == [study.test.answers[i] for i in theirs]
    with pytest.raises(NeurolocError, match="no test items of capitals"):
        relation_items(options, RelationsConfig(relations=("capitals",)))
