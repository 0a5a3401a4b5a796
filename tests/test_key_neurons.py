"""The key-neuron recipe on hand-made attribution tables, and the Welch-t contrast alternative."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from neuroloc.errors import NeurolocError
from neuroloc.models.layout import Site
from neuroloc.models.loading import wrap_model
from neuroloc.studies.pos.key_neurons import (
    ClassFrequency, KeyNeurons, contrast_key_neurons, key_from_counts, n_top, resolve_classes, select_key_neurons,
    top_percent_indices,
)
from neuroloc.record.recorder import Recorder
from neuroloc.settings import RunSettings
from neuroloc.units import UnitSet
from tests.test_pos_pipeline import own_tokenizer, tagged_corpus
from tests.tiny import tiny_model

# 6 units; top_percent=34 keeps floor(0.34 * 6 + 0.5) = 2 units per word.
TABLE = np.array([
    [5, 4, 0, 0, 0, 1],        # NOUN: top {0, 1}
    [0, 3, 3, 0, 0, 0],        # NOUN: top {1, 2}
    [1, 0, 0, 2, 0, 0],        # NOUN: top {3, 0}
    [0, 0, 0, 0, 9, 8],        # VERB: top {4, 5}
    [-1, -1, -1, -1, -1, -1],  # VERB: all tied, top {0, 1}
    [0, 0, 0, -5, 7, 0],       # ADJ: top {4, 0} (0 ties with 1, 2, 5: the lowest index wins); |.|: {4, 3}
], dtype=float)
LABELS = ["NOUN", "NOUN", "NOUN", "VERB", "VERB", "ADJ"]


def test_n_top_rounds_half_up_and_keeps_one() -> None:
    assert n_top(10, 5) == 1 and n_top(30, 5) == 2 and n_top(46080, 5) == 2304 and n_top(3, 1) == 1
    assert n_top(6, 34) == 2 and n_top(6, 100) == 6
    for bad in (0, -1, 101, True):
        with pytest.raises(NeurolocError, match="top_percent"):
            n_top(10, bad)


def test_top_percent_indices_by_hand() -> None:
    top = top_percent_indices(TABLE, 34)
    assert [sorted(row) for row in top.tolist()] == [[0, 1], [1, 2], [0, 3], [4, 5], [0, 1], [0, 4]]
    assert top[2].tolist() == [3, 0]  # rank order: largest first
    assert top_percent_indices(TABLE, 34, absolute=True)[5].tolist() == [4, 3]
    assert top_percent_indices(torch.tensor(TABLE), 34).tolist() == top.tolist()
    with pytest.raises(NeurolocError, match="NaN"):
        top_percent_indices(np.array([[np.nan, 1.0]]), 50)
    with pytest.raises(NeurolocError, match="table"):
        top_percent_indices(np.zeros(4), 50)


def test_recipe_on_a_hand_made_table() -> None:
    keys = select_key_neurons(TABLE, LABELS, classes=("NOUN", "VERB", "ADJ"), k=2, top_percent=34)
    assert keys["NOUN"].tolist() == [0, 1]  # counts u0: 2, u1: 2, u2: 1, u3: 1
    assert keys["VERB"].tolist() == [0, 1]  # counts 1 each for 0, 1, 4, 5: ties go to the lower index
    assert keys["ADJ"].tolist() == [0, 4]
    # k = 3: the tie between u2 and u3 (one word each) goes to u2
    assert select_key_neurons(TABLE, LABELS, classes=["NOUN"], k=3, top_percent=34)["NOUN"].tolist() == [0, 1, 2]
    # |attribution| ranks the ADJ word's -5 second
    by_size = select_key_neurons(TABLE, LABELS, classes=["ADJ"], k=2, top_percent=34, absolute=True)
    assert by_size["ADJ"].tolist() == [3, 4]
    # all classes present, in sorted order
    assert list(select_key_neurons(TABLE, LABELS, classes="all", k=1, top_percent=34)) == ["ADJ", "NOUN", "VERB"]


def test_k_larger_than_available_returns_the_units_ever_selected() -> None:
    keys = select_key_neurons(TABLE, LABELS, classes=("NOUN", "ADJ"), k=100, top_percent=34)
    assert keys["NOUN"].tolist() == [0, 1, 2, 3]  # most frequent first, then by index
    assert keys["ADJ"].tolist() == [0, 4]
    assert key_from_counts(np.zeros(5), 3).tolist() == []
    assert key_from_counts(np.array([0, 2, 2, 5, 0]), 2).tolist() == [3, 1]
    with pytest.raises(NeurolocError, match="k must be"):
        key_from_counts(np.ones(3), 0)


def test_unknown_or_absent_class_is_an_error() -> None:
    with pytest.raises(NeurolocError, match=r"XYZ.*UPOS tags are"):
        select_key_neurons(TABLE, LABELS, classes=("NOUN", "XYZ"), k=2, top_percent=34)
    with pytest.raises(NeurolocError, match=r"\['ADV'\].*tags present: ADJ, NOUN, VERB"):
        select_key_neurons(TABLE, LABELS, classes=("ADV",), k=2, top_percent=34)
    with pytest.raises(NeurolocError, match="repeated"):
        resolve_classes(["NOUN", "NOUN"], LABELS)
    with pytest.raises(NeurolocError, match="no attributed words"):
        ClassFrequency(["NOUN", "ADV"], 6, 34).update(LABELS, TABLE).select(2)


def test_streaming_counts_equal_the_whole_table() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(57, 40))
    labels = rng.choice(["NOUN", "VERB", "ADJ", "DET"], size=57).tolist()
    whole = ClassFrequency(["NOUN", "VERB", "ADJ"], 40, 10).update(labels, table)
    parts = ClassFrequency(["NOUN", "VERB", "ADJ"], 40, 10)
    for start in range(0, 57, 7):
        parts.update(labels[start:start + 7], torch.tensor(table[start:start + 7]))
    merged = ClassFrequency(["NOUN", "VERB", "ADJ"], 40, 10).update(labels[:20], table[:20])
    merged.merge(ClassFrequency(["NOUN", "VERB", "ADJ"], 40, 10).update(labels[20:], table[20:]))
    for other in (parts, merged):
        assert np.array_equal(other.counts, whole.counts) and np.array_equal(other.n_words, whole.n_words)
        assert np.allclose(other.sums, whole.sums)
    nouns = np.array(labels) == "NOUN"
    assert whole.n_words.tolist() == [int(nouns.sum()), labels.count("VERB"), labels.count("ADJ")]
    assert np.allclose(whole.mean_attribution()[0], table[nouns].mean(0))
    assert whole.counts[0].sum() == nouns.sum() * 4  # 10% of 40 units per word
    assert {c: v.tolist() for c, v in whole.select(5).items()} == {
        c: v.tolist() for c, v in select_key_neurons(table, labels, classes=["NOUN", "VERB", "ADJ"], k=5,
                                                     top_percent=10).items()}


def test_key_neurons_views_and_save(tmp_path) -> None:
    sites, widths = [Site(0, "mlp"), Site(1, "mlp")], [3, 3]
    key = KeyNeurons.from_indices({"NOUN": np.array([0, 1, 4]), "VERB": np.array([1, 5])}, sites, widths,
                                  method="ig", model={"spec": "x"}, n_words={"NOUN": 3, "VERB": 2})
    assert key.units["NOUN"].names() == ["layers.0.mlp[0]", "layers.0.mlp[1]", "layers.1.mlp[1]"]
    jac = key.jaccard_table()
    assert jac.loc["NOUN", "VERB"] == pytest.approx(1 / 4) and jac.loc["VERB", "VERB"] == 1.0
    layers = key.layer_table()
    assert layers[layers["class"] == "NOUN"]["n_selected"].tolist() == [2, 1]
    assert len(key.union()) == 4
    info = key.to_json()
    assert info["classes"]["NOUN"]["count"] == 3
    assert info["classes"]["VERB"]["per_layer"] == {"layers.0.mlp": 1, "layers.1.mlp": 1}
    key.save(tmp_path)
    assert UnitSet.load(tmp_path / "NOUN") == key.units["NOUN"]
    assert UnitSet.load(tmp_path / "VERB").model == {"spec": "x"}


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), own_tokenizer())


@pytest.mark.parametrize("pooling", ["word-mean", "word-predict"])
def test_contrast_matches_scipy_welch(lm, pooling) -> None:
    corpus = tagged_corpus(n_docs=3, per_doc=4)
    sites = lm.layout.sites("mlp")
    key = contrast_key_neurons(lm, corpus, classes=("NOUN", "VERB"), k=4, pooling=pooling,
                               settings=RunSettings(batch_size=5))
    # independent: record the same word rows, then scipy's Welch test, class vs every other word
    rows, values = [], []
    for batch in Recorder(lm, sites, pooling=pooling, batch_size=3, bos="prepend").iter_batches(corpus.texts(),
                                                                                                corpus.word_spans()):
        rows += batch.rows
        values.append(torch.cat([batch.features[s] for s in sites], dim=1).double().numpy())
    values = np.concatenate(values)
    tags = np.array([corpus[t].upos[w] for t, w in rows])
    for i, c in enumerate(["NOUN", "VERB"]):
        expected = stats.ttest_ind(values[tags == c], values[tags != c], equal_var=False).statistic
        assert np.allclose(key.scores[i], expected, rtol=1e-6, atol=1e-8)
        top = np.argsort(-expected, kind="stable")[:4]
        assert key.units[c].flat_indices().tolist() == sorted(top.tolist())
        assert key.n_words[c] == int((tags == c).sum())
    assert key.method == "one_vs_rest_welch"  # the registered score behind the alias `contrast`


def test_contrast_needs_two_words_per_class(lm) -> None:
    corpus = tagged_corpus(n_docs=1, per_doc=1)
    with pytest.raises(NeurolocError, match="at least 2"):
        contrast_key_neurons(lm, corpus, classes=("ADV",), k=2, pooling="word-mean", settings=RunSettings())
