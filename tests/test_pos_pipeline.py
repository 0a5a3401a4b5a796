"""The pos study (`PosConfig` through the runner) end to end on a tiny model and a hand-written CoNLL-U
treebank; the deprecated `run_pos` call form still works."""

from __future__ import annotations

import copy
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroloc.errors import NeurolocError
from neuroloc.models.loading import wrap_model
from neuroloc.pipelines import pos as pos_pipeline
from neuroloc.pipelines.pos import PROBE_COLUMNS, PosConfig, PosInputs, run_pos
from neuroloc.runner import RunOptions, run
from neuroloc.settings import RunSettings
from neuroloc.studies.pos.specificity import LONG_COLUMNS, SUMMARY_COLUMNS
from neuroloc.stimuli.treebank import TaggedCorpus, read_conllu
from neuroloc.units import UnitSet
from tests.tiny import tiny_model, tiny_tokenizer

_WORDS = {
    "DET": ["the", "a", "this"], "ADJ": ["quick", "lazy", "brown", "small", "old"],
    "NOUN": ["fox", "dog", "cat", "keys", "drawer", "table"], "VERB": ["jumps", "sees", "likes", "finds", "takes"],
    "ADV": ["quickly", "slowly", "elsewhere", "again"], "ADP": ["over", "under", "near"],
}


def conllu_text(n_docs: int = 6, per_doc: int = 4, seed: int = 0) -> str:
    """Sentences "Det Adj Noun Verb Det Noun Adv ." (some with "did n't" as a multiword token and a
    prepositional phrase), `per_doc` per document, each document with a `# newdoc id`."""
    rng = random.Random(seed)
    blocks = []
    for d in range(n_docs):
        for s in range(per_doc):
            pick = lambda tag: (rng.choice(_WORDS[tag]), tag)  # noqa: E731
            words = [pick("DET"), pick("ADJ"), pick("NOUN")]
            if rng.random() < 0.3:
                words += [("did", "AUX"), ("n't", "PART"), ("see", "VERB")]
            else:
                words += [pick("VERB")]
            words += [pick("DET"), pick("NOUN")]
            if rng.random() < 0.5:
                words += [pick("ADP"), pick("DET"), pick("NOUN")]
            words += [pick("ADV"), (".", "PUNCT")]
            words[0] = (words[0][0].capitalize(), words[0][1])
            lines = ([f"# newdoc id = doc{seed}-{d}"] if s == 0 else []) + [f"# sent_id = doc{seed}-{d}-{s}"]
            i = 1
            for j, (form, tag) in enumerate(words):
                if form == "n't":
                    continue
                no_space = j + 1 < len(words) and (words[j + 1][0] in (".", "n't"))
                if form == "did":
                    lines.append(f"{i}-{i + 1}\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_")
                    lines.append(f"{i}\tdid\tdo\tAUX\t_\t_\t0\tdep\t_\t_")
                    lines.append(f"{i + 1}\tn't\tnot\tPART\t_\t_\t0\tdep\t_\t_")
                    i += 2
                    continue
                misc = "SpaceAfter=No" if no_space else "_"
                lines.append(f"{i}\t{form}\t{form.lower()}\t{tag}\t_\t_\t0\tdep\t_\t{misc}")
                i += 1
            blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def own_tokenizer():
    """A private copy of the cached tiny tokenizer: `wrap_model` gives the tokenizer it is handed a pad
    token, which must not leak into other test modules through `tiny_tokenizer`'s cache."""
    return copy.deepcopy(tiny_tokenizer())


def tagged_corpus(n_docs: int = 6, per_doc: int = 4, seed: int = 0) -> TaggedCorpus:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"tiny-{seed}.conllu"
        path.write_text(conllu_text(n_docs, per_doc, seed), encoding="utf-8")
        return read_conllu(path)


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), own_tokenizer())


@pytest.fixture
def treebanks(tmp_path):
    train, evaluation = tmp_path / "train.conllu", tmp_path / "eval.conllu"
    train.write_text(conllu_text(8, 4, seed=0), encoding="utf-8")
    evaluation.write_text(conllu_text(3, 4, seed=1), encoding="utf-8")
    return read_conllu(train), read_conllu(evaluation)


FAST = dict(k=5, steps=4, n_controls=2, n_bootstrap=20, attribution_batch_size=50,
            settings=RunSettings(batch_size=7, progress=False))


def run_study(lm, train, out, evaluation=None, **fields):
    """The pos study on in-memory corpora, through the runner."""
    config = PosConfig(**{**FAST, **fields}, model="tiny")
    return run(config, out, lm=lm, inputs=PosInputs(train, evaluation), options=RunOptions(overwrite=True))


def test_the_corpus_helper_reads_back() -> None:
    corpus = tagged_corpus(2, 3)
    assert len(corpus) == 6 and len(set(corpus.groups())) == 2
    assert all(s.text[a:b] == w for s in corpus for w, (a, b) in zip(s.words, s.spans))
    assert {"NOUN", "VERB", "ADJ", "ADV"} <= {t for s in corpus for t in s.upos}


def test_run_pos_writes_every_output(lm, treebanks, tmp_path) -> None:
    train, evaluation = treebanks
    out = tmp_path / "pos"
    result = run_study(lm, train, out, evaluation, score="ig")
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = {"key_neurons.json", "layers.csv", "attributions.parquet", "probe.csv", "specificity.csv",
                "specificity_summary.csv", "layers.png", "probe.png", "specificity.png", "manifest.json"}
    assert expected <= names
    for c in ("NOUN", "VERB", "ADJ", "ADV"):
        assert {f"key_neurons/{c}/units.safetensors", f"key_neurons/{c}/units.json"} <= names
        units = UnitSet.load(out / "key_neurons" / c)
        assert units == result.key_neurons.units[c] and 0 < len(units) <= 5
        assert units.model == lm.identity
    assert not list(tmp_path.glob(".pos.*"))  # no staging folder left behind

    info = json.loads((out / "key_neurons.json").read_text())
    assert info["method"] == "ig" and set(info["classes"]) == {"NOUN", "VERB", "ADJ", "ADV"}
    assert info["classes"]["NOUN"]["count"] == len(info["classes"]["NOUN"]["names"])
    assert info["jaccard"]["NOUN"]["NOUN"] == 1.0 and info["parameters"]["k"] == 5

    probe = pd.read_csv(out / "probe.csv")
    assert list(probe.columns) == PROBE_COLUMNS
    assert set(probe["split"]) == {"test", "eval"}
    counts = probe.groupby(["neuron_set", "split"]).size().to_dict()
    assert counts == {("key", "test"): 1, ("key", "eval"): 1, ("random", "test"): 2, ("random", "eval"): 2,
                      ("layer", "test"): 1, ("layer", "eval"): 1, ("majority", "test"): 1, ("majority", "eval"): 1}
    key_rows, random_rows = probe[probe.neuron_set == "key"], probe[probe.neuron_set == "random"]
    assert (random_rows["n_units"] == key_rows["n_units"].iloc[0]).all()
    assert (probe.loc[probe.neuron_set == "layer", "n_units"] == lm.layout.width("mlp")).all()
    assert probe["accuracy"].between(0, 1).all()
    with_selectivity = probe[probe.neuron_set != "majority"]
    gap = with_selectivity["accuracy"] - with_selectivity["control_accuracy"]
    assert np.allclose(with_selectivity["selectivity"], gap)

    spec = pd.read_csv(out / "specificity.csv")
    assert list(spec.columns) == LONG_COLUMNS
    assert len(spec) == 4 * (1 + 2) * 4  # lesioned classes × (key + 2 random) × evaluated classes
    summary = pd.read_csv(out / "specificity_summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 16

    table = pd.read_parquet(out / "attributions.parquet")
    assert list(table.columns) == ["class", "unit", "site", "layer", "index", "n_words", "selection_count",
                                   "selection_frequency", "mean_attribution", "mean_abs_attribution", "key"]
    assert len(table) == 4 * lm.layout.n_layers * lm.layout.width("mlp")
    assert table.groupby("class")["key"].sum().to_dict() == {c: len(u) for c, u in result.key_neurons.units.items()}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "pos" and manifest["model"] == lm.identity
    assert manifest["data"]["train"]["sha256"] and manifest["data"]["eval"]["sha256"]
    assert manifest["parameters"]["score"] == "ig" and manifest["parameters"]["steps"] == 4
    completeness = manifest["results"]["ig_completeness"]
    assert completeness["n_pairs"] > 0 and completeness["relative_error"] < 0.05
    assert {"key_neurons_s", "probe_s", "specificity_s", "total_s"} <= set(manifest["timings"])
    assert result.summary["probe"]["test"]["random"]["accuracy"]["n"] == 2


def test_probe_train_and_test_share_no_sentence(lm, treebanks, tmp_path) -> None:
    train, evaluation = treebanks
    result = run_study(lm, train, tmp_path / "out", score="gradxact", test_fraction=0.25, seed=3)
    split = json.loads((tmp_path / "out" / "manifest.json").read_text())["split"]
    assert not set(split["train_sentences"]) & set(split["test_sentences"])
    assert not set(split["train_documents"]) & set(split["test_documents"])
    assert len(split["train_sentences"]) + len(split["test_sentences"]) == len(train)
    sizes = result.summary["n_sentences"]
    assert sizes["train"] + sizes["test"] == len(train) and sizes["eval"] == 0
    # the probe's training rows are the words of the training sentences only
    probe = result.probe
    train_words = sum(len(s) for s in train if s.sent_id in set(split["train_sentences"]))
    test_words = sum(len(s) for s in train if s.sent_id in set(split["test_sentences"]))
    assert (probe["n_train"] == train_words).all() and (probe["n_test"] == test_words).all()
    assert set(probe["split"]) == {"test"}


def test_contrast_method_and_all_classes(lm, treebanks, tmp_path) -> None:
    train, _ = treebanks
    result = run_study(lm, train, tmp_path / "c", score="contrast", classes="all", max_sentences=20)
    assert set(result.key_neurons.classes) == {t for s in train.subset(range(20)) for t in s.upos}
    table = pd.read_parquet(tmp_path / "c" / "attributions.parquet")
    assert {"welch_t", "key"} <= set(table.columns)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["results"]["ig_completeness"] is None
    assert manifest["data"]["train"]["n_sentences_used"] == 20


def test_failure_leaves_no_output(lm, treebanks, tmp_path, monkeypatch) -> None:
    train, _ = treebanks
    out = tmp_path / "pos"

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(pos_pipeline, "plot_heatmap", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        run_study(lm, train, out, score="gradxact")
    assert [p.name for p in out.iterdir()] == [".checkpoints"]  # no output: only the finished stage, to resume
    shutil.rmtree(out)
    # an earlier result stays untouched
    out.mkdir()
    (out / "probe.csv").write_text("old\n")
    with pytest.raises(RuntimeError, match="figure failed"):
        run_study(lm, train, out, score="gradxact")
    kept = [p.name for p in out.iterdir() if p.name != ".checkpoints"]  # the finished stage may be kept beside it
    assert kept == ["probe.csv"] and (out / "probe.csv").read_text() == "old\n"
    assert not list(tmp_path.glob(".pos.*"))  # no staging folder left behind


def test_parameter_errors(lm, treebanks, tmp_path) -> None:
    train, _ = treebanks
    with pytest.raises(NeurolocError, match="'lrp' is not a score"):
        run_study(lm, train, tmp_path / "x", score="lrp")
    with pytest.raises(NeurolocError, match="`neuroloc pos` takes an attribution score"):
        run_study(lm, train, tmp_path / "x", score="lape")
    with pytest.raises(NeurolocError, match="XYZ"):
        run_study(lm, train, tmp_path / "x", classes=("NOUN", "XYZ"))
    with pytest.raises(NeurolocError, match="layer 7 does not exist"):
        run_study(lm, train, tmp_path / "x", probe_layer=7)
    assert not (tmp_path / "x").exists()


def test_deprecated_run_pos_and_old_config_names(lm, treebanks, tmp_path) -> None:
    """`run_pos(..., method=, n_random=, batch_size=, progress=)` and `PosConfig(method=...)` (neuroloc 0.1) run
    the same study as the new names."""
    train, _ = treebanks
    with pytest.warns(DeprecationWarning):
        old = run_pos(lm, train, tmp_path / "old", method="contrast", k=5, n_random=1, n_bootstrap=5,
                      batch_size=7, progress=False, max_sentences=12)
    new = run_study(lm, train, tmp_path / "new", score="one_vs_rest_welch", n_controls=1, n_bootstrap=5,
                    max_sentences=12)
    assert old.key_neurons.units.sets == new.key_neurons.units.sets
    pd.testing.assert_frame_equal(old.probe, new.probe)
    with pytest.warns(DeprecationWarning):
        config = PosConfig(method="gradxact", n_random=3, batch_size=8, bos="none")
    assert (config.score, config.n_controls, config.settings.batch_size, config.settings.bos) == \
        ("gradxact", 3, 8, "none")


@pytest.mark.parametrize("score, bos", [("gradxact", "none"), ("contrast", "tokenizer")])
def test_a_bos_policy_reaches_every_forward_pass(lm, treebanks, tmp_path, monkeypatch, score, bos) -> None:
    """The attribution (or word recording), the probes' features and the lesion check all encode under the run
    settings' BOS policy: every call of the one encoding path says so."""
    from tests.bos_spy import spy_bos

    train, evaluation = treebanks
    calls = spy_bos(monkeypatch)
    run_study(lm, train, tmp_path / "o", evaluation, score=score, n_controls=1, n_bootstrap=5, max_sentences=12,
              settings=RunSettings(bos=bos, batch_size=7, progress=False))
    # key neurons 1; probe features 3 splits; specificity: intact + (1 key + 1 random) × 4 classes
    assert len(calls) >= 1 + 3 + 9 and set(calls) == {bos}, sorted(set(calls))


def test_an_interrupted_run_resumes_after_the_key_neurons(lm, treebanks, tmp_path, monkeypatch) -> None:
    """Interrupted after the attribution stage, the same run again reuses the key neurons (attribution is
    not redone) and ends with the undisturbed run's tables."""
    from neuroloc.interrupts import Interrupted

    train, evaluation = treebanks
    config = PosConfig(**FAST, score="gradxact", model="tiny")
    undisturbed = run(config, tmp_path / "plain", lm=lm, inputs=PosInputs(train, evaluation))
    real_probe, real_find = pos_pipeline.probe_key_neurons, pos_pipeline.find_key_neurons
    calls = []

    def interrupted(*args, **kwargs):
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(pos_pipeline, "probe_key_neurons", interrupted)
    with pytest.raises(Interrupted):
        run(config, tmp_path / "pos", lm=lm, inputs=PosInputs(train, evaluation))
    assert [p.name for p in (tmp_path / "pos").iterdir()] == [".checkpoints"]  # nothing but the checkpoint
    monkeypatch.setattr(pos_pipeline, "probe_key_neurons", real_probe)
    monkeypatch.setattr(pos_pipeline, "find_key_neurons", lambda *a, **k: calls.append(1) or real_find(*a, **k))
    resumed = run(config, tmp_path / "pos", lm=lm, inputs=PosInputs(train, evaluation))
    assert not calls  # the key neurons came from the checkpoint
    for name in ("probe.csv", "specificity.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pos" / name), pd.read_csv(tmp_path / "plain" / name))
    assert resumed.key_neurons.union().names() == undisturbed.key_neurons.union().names()
    assert not (tmp_path / "pos" / ".checkpoints").exists()  # removed after success


def test_site_chooses_where_key_neurons_live_and_their_magnitudes_are_mean_abs_word_activations(lm, treebanks,
                                                                                                  tmp_path) -> None:
    train, _ = treebanks
    result = run_study(lm, train, tmp_path / "pos", score="one_vs_rest_welch", site=("residual",), classes=("NOUN",))
    units = result.key_neurons.units["NOUN"]
    assert {s.kind for s in units.sites} == {"residual"} and len(units) == 5
    assert {s.kind for s in UnitSet.load(tmp_path / "pos" / "key_neurons" / "NOUN").sites} == {"residual"}
    columns = {s: np.arange(w) for s, w in zip(units.sites, units.widths)}
    _, features = pos_pipeline.record_word_features(lm, result.data.fit, columns, pooling="word-predict",
                                                    settings=RunSettings(batch_size=3, progress=False))
    written = pd.read_csv(tmp_path / "pos" / "magnitudes.csv")
    np.testing.assert_allclose(written.mean_abs_activation, np.abs(features.astype(np.float64)).mean(0), rtol=1e-4)
    assert written.unit.iloc[0] == f"{units.sites[0].name}[0]" and len(written) == sum(units.widths)
