"""Multilingual corpora: PUD, per-language folders, tables, Hugging Face, splits by id, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.corpora import (PUD_LANGUAGES, MultilingualCorpus, corpus_from_records, load_corpus,
                                      load_hf_corpus, load_language_dir, load_language_table, load_pud, split_corpus,
                                      unknown_token_shares)

DATA = Path(__file__).parents[1].parent / "shared" / "data"
needs_pud = pytest.mark.skipif(not (DATA / "ud" / "de_pud-ud-test.conllu").is_file(), reason="no PUD treebanks")

CONLLU = """# sent_id = s1
# text = Ciao mondo.
1\tCiao\tciao\tINTJ\t_\t_\t0\troot\t_\t_
2\tmondo\tmondo\tNOUN\t_\t_\t1\tvocative\t_\tSpaceAfter=No
3\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_

# sent_id = s2
1\tBuona\tbuono\tADJ\t_\t_\t2\tamod\t_\t_
2\tsera\tsera\tNOUN\t_\t_\t0\troot\t_\tSpaceAfter=No
3\t!\t!\tPUNCT\t_\t_\t2\tpunct\t_\t_
"""


@needs_pud
def test_pud_is_parallel_and_splits_by_sentence_id() -> None:
    corpus = load_pud(DATA)
    assert corpus.languages == list(PUD_LANGUAGES) and corpus.parallel
    assert all(len(corpus.texts[lang]) == 1000 for lang in corpus.languages)
    assert corpus.texts["en"][0].startswith("“While much of the digital transition")
    identify, heldout = split_corpus(corpus, 30, 10, seed=3)
    for lang in corpus.languages:
        assert identify.ids[lang] == identify.ids["en"] and heldout.ids[lang] == heldout.ids["en"]
        assert len(identify.texts[lang]) == 30 and len(heldout.texts[lang]) == 10
        assert not set(identify.ids[lang]) & set(heldout.ids[lang])
    # same content, different language: the first identification sentence differs in every language
    assert len({identify.texts[lang][0] for lang in corpus.languages}) == len(corpus.languages)
    position = corpus.ids["de"].index(identify.ids["de"][0])
    assert identify.texts["de"][0] == corpus.texts["de"][position]
    again, _ = split_corpus(corpus, 30, 10, seed=3)
    assert again.ids == identify.ids
    fewer_heldout, _ = split_corpus(corpus, 30, 0, seed=3)  # cached statistics stay valid
    assert fewer_heldout.ids == identify.ids


@needs_pud
def test_load_corpus_dispatches_and_selects() -> None:
    corpus = load_corpus(DATA, ["de", "zh"])
    assert corpus.languages == ["de", "zh"]
    with pytest.raises(NeurolocError, match="no PUD treebank for xx"):
        load_corpus(DATA, ["de", "xx"])
    default = load_corpus(None, ["de", "zh"], data_root=DATA)  # PUD under the data root
    assert default.texts == corpus.texts and default.source == corpus.source


def test_language_folder_reads_txt_and_conllu(tmp_path) -> None:
    (tmp_path / "en.txt").write_text("Hello world.\n\nGood evening!\n", encoding="utf-8")
    (tmp_path / "it.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored")
    corpus = load_language_dir(tmp_path)
    assert corpus.texts == {"en": ["Hello world.", "Good evening!"], "it": ["Ciao mondo.", "Buona sera!"]}
    assert corpus.ids == {"en": ["1", "3"], "it": ["s1", "s2"]}
    assert not corpus.parallel
    identify, heldout = split_corpus(corpus, 5, 1)
    assert len(identify.texts["en"]) == 1 and len(heldout.texts["it"]) == 1
    assert load_corpus(tmp_path).languages == ["en", "it"]


def test_clear_errors(tmp_path) -> None:
    (tmp_path / "en.txt").write_text("Hello world.\n", encoding="utf-8")
    (tmp_path / "de.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(NeurolocError, match="no text for language\\(s\\) de"):
        load_corpus(tmp_path)
    with pytest.raises(NeurolocError, match="at least two languages"):
        load_corpus(tmp_path, ["en"])
    with pytest.raises(NeurolocError, match="no such file"):
        load_corpus(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NeurolocError, match="no language files"):
        load_language_dir(empty)


def test_tables_with_a_language_column(tmp_path) -> None:
    rows = [{"language": "en", "text": "The cat.", "id": 1, "prompt": "The"},
            {"language": "fr", "text": "Le chat.", "id": 1, "prompt": "Le"},
            {"language": "en", "text": "A dog.", "id": 2, "prompt": "A"},
            {"language": "fr", "text": "Un chien.", "id": 2, "prompt": "Un"}]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    csv = tmp_path / "data.csv"
    csv.write_text("language,text\nen,The cat.\nde,Die Katze.\n", encoding="utf-8")
    corpus = load_language_table(jsonl)
    assert corpus.texts == {"en": ["The cat.", "A dog."], "fr": ["Le chat.", "Un chien."]}
    assert corpus.prompts == {"en": ["The", "A"], "fr": ["Le", "Un"]} and corpus.parallel
    assert load_corpus(csv).texts == {"en": ["The cat."], "de": ["Die Katze."]}
    with pytest.raises(NeurolocError, match="no 'language' column"):
        corpus_from_records([{"lang": "en", "text": "x"}], source="records")
    assert corpus.content_hash("en") != corpus.content_hash("fr")


def test_hugging_face_dataset_through_a_local_builder(tmp_path) -> None:
    pytest.importorskip("datasets")
    csv = tmp_path / "data.csv"
    csv.write_text("language,text\nen,The cat.\nde,Die Katze.\n", encoding="utf-8")
    corpus = load_hf_corpus("csv", data_files=str(csv))
    assert corpus.texts == {"en": ["The cat."], "de": ["Die Katze."]}


def _word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "der": 4, "hund": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_unknown_tokens_are_reported_per_language() -> None:
    corpus = MultilingualCorpus({"en": ["the cat sat", "the cat"], "de": ["der hund sat", "der katze"],
                                 "zh": ["猫 坐 了"]},
                                {"en": ["1", "2"], "de": ["1", "2"], "zh": ["1"]})
    shares = unknown_token_shares(_word_tokenizer(), corpus, max_share=None)
    assert shares == {"en": 0.0, "de": pytest.approx(1 / 5), "zh": 1.0}
    with pytest.raises(NeurolocError, match=r"maps zh to unknown tokens .*en 0.0%, de 20.0%, zh 100.0%"):
        unknown_token_shares(_word_tokenizer(), corpus, max_share=0.5)
