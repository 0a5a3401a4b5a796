"""Attribution of next-word predictions to units: IG completeness, gradient × activation against finite
differences and direct autograd, invariance to batching, and the streaming summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroloc.errors import NeurolocError
from neuroloc.models.hooks import hooks
from neuroloc.models.layout import Site
from neuroloc.models.loading import wrap_model
from neuroloc.studies.pos import attribution as engine
from neuroloc.studies.pos.key_neurons import select_key_neurons
from neuroloc.studies.pos.specificity import word_logprobs as _word_logprobs
from neuroloc.stimuli.treebank import TaggedCorpus, TaggedSentence
from tests.test_pos_pipeline import own_tokenizer, tagged_corpus
from tests.tiny import tiny_model, tiny_tokenizer


# The engine takes the run settings explicitly (no defaults below the study): these tests use the BOS policy
# `prepend` and 64 rows per pass unless they say otherwise.
def iter_attributions(lm, corpus, **kwargs):
    return engine.iter_attributions(lm, corpus, **{"bos": "prepend", "batch_size": 64, **kwargs})


def attribute(lm, corpus, **kwargs):
    return engine.attribute(lm, corpus, **{"bos": "prepend", "batch_size": 64, **kwargs})


def word_targets(lm, corpus, classes=None):
    return engine.word_targets(lm, corpus, classes, bos="prepend")


def word_logprobs(lm, corpus, bos="prepend"):
    return _word_logprobs(lm, corpus, batch_size=16, bos=bos)


@pytest.fixture(scope="module")
def lm64():
    return wrap_model(tiny_model("gpt2").double(), own_tokenizer())


@pytest.fixture(scope="module")
def llama64():
    return wrap_model(tiny_model("llama").double(), own_tokenizer())


@pytest.fixture(scope="module")
def corpus():
    return tagged_corpus(n_docs=2, per_doc=3)


def _concat(batches):
    words = [w for b in batches for w in b.words]
    return words, torch.cat([b.scores for b in batches]).double(), np.concatenate([b.target_logprob for b in batches])


def _direct(lm, ids, predict, target, site, edit_value=None):
    """f = ln p(target | prefix) from a plain full-sequence forward (no cache), with the site's
    activation at `predict` optionally replaced; returns (f, activation there, df/dactivation)."""
    store = {}

    def edit(x0):
        x = x0.reshape(1, -1, x0.shape[-1])
        store["a"] = x[0, predict].detach().clone()
        delta = torch.zeros_like(x[0, predict], requires_grad=True)
        store["d"] = delta
        new = x[0, predict] if edit_value is None else edit_value(x[0, predict])
        out = x.clone()
        out[0, predict] = new + delta
        return out.reshape(x0.shape)

    with torch.enable_grad(), hooks(lm.layout, edit={site: edit}):
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, predict].double()
        f = logits.log_softmax(-1)[target]
        (grad,) = torch.autograd.grad(f, store["d"])
    return float(f.detach()), store["a"].double(), grad.double()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2", "phi3"])
def test_gradxact_equals_direct_autograd(family, corpus) -> None:
    lm = wrap_model(tiny_model(family).double(), own_tokenizer())
    ids, _ = word_targets(lm, corpus)
    sites = lm.layout.sites("mlp")
    width = lm.layout.width("mlp")
    words, scores, f = _concat(list(iter_attributions(lm, corpus.subset([0, 1]), method="gradxact", batch_size=5)))
    part = corpus.subset([0, 1])
    n_didnt = sum("did" in s.words for s in part)  # "did" + "n't" share the token "Ġdidn": both dropped
    assert len(words) == sum(len(s) for s in part) - 2 * n_didnt
    for i, w in enumerate(words):
        for j, site in enumerate(sites):
            fx, act, grad = _direct(lm, ids[w.sentence], w.predict, w.target, site)
            assert f[i] == pytest.approx(fx, rel=1e-6)
            assert torch.allclose(scores[i, j * width:(j + 1) * width], act * grad, rtol=1e-5, atol=1e-9)


def test_gradxact_against_finite_differences(lm64, corpus) -> None:
    ids, _ = word_targets(lm64, corpus)
    width = lm64.layout.width("mlp")
    words, scores, _ = _concat(list(iter_attributions(lm64, corpus.subset([0]), method="gradxact")))
    eps = 1e-5
    for i in (1, 4):
        w = words[i]
        for j, site in enumerate(lm64.layout.sites("mlp")):
            _, act, _ = _direct(lm64, ids[w.sentence], w.predict, w.target, site)
            for unit in torch.argsort(act.abs(), descending=True)[:3].tolist():
                def nudge(step):
                    bump = torch.zeros(width, dtype=torch.float64)
                    bump[unit] = step
                    return _direct(lm64, ids[w.sentence], w.predict, w.target, site, lambda a: a + bump)[0]
                # central difference: (f(x + eps e_i) - f(x - eps e_i)) / 2 eps, times a_i
                expected = (nudge(eps) - nudge(-eps)) / (2 * eps) * float(act[unit])
                assert float(scores[i, j * width + unit]) == pytest.approx(expected, rel=1e-5, abs=1e-10)


@pytest.mark.parametrize("rule", ["midpoint", "trapezoid"])
def test_ig_completeness_within_five_percent(lm64, corpus, rule) -> None:
    summary = attribute(lm64, corpus, classes=None, method="ig", steps=32, rule=rule)
    stats = summary.completeness.summary()
    assert stats["n_pairs"] == len(summary.words) * lm64.layout.n_layers
    assert stats["relative_error"] < 0.05 and stats["median_relative_error"] < 0.05
    assert set(stats["by_site"]) == {"layers.0.mlp", "layers.1.mlp"}
    assert all(value < 0.05 for value in stats["by_site"].values())


def test_ig_deltas_match_a_direct_baseline_forward(llama64, corpus) -> None:
    """f(x) − f(baseline) from the cached single-token rows equals a plain forward with the site's
    activation at the predicting position set to the baseline; also with a non-zero baseline."""
    part = corpus.subset([1])
    ids, _ = word_targets(llama64, part)  # sentence indices count within the corpus given
    sites = llama64.layout.sites("mlp")
    rng = np.random.default_rng(0)
    baseline = {s.name: torch.tensor(rng.normal(size=llama64.layout.width("mlp")) * 0.1) for s in sites}
    for base in ("zero", baseline):
        batches = list(iter_attributions(llama64, part, method="ig", steps=32, baseline=base,
                                         batch_size=37))
        for b in batches:
            # the tiny llama's BOS embedding is zero (pad id 0): at position 0 the residual is ~0 and the
            # RMS norms make f far from linear along the path to a random baseline; check the others
            later = np.array([w.predict > 0 for w in b.words])
            error = np.abs(b.site_totals - b.site_deltas)[later]
            assert error.max() < 0.05 * np.abs(b.site_deltas[later]).max()
            for i, w in enumerate(b.words[:4]):
                for j, site in enumerate(sites):
                    vector = torch.zeros(llama64.layout.width("mlp"), dtype=torch.float64) if base == "zero" \
                        else baseline[site.name]
                    fx, _, _ = _direct(llama64, ids[w.sentence], w.predict, w.target, site)
                    fb, _, _ = _direct(llama64, ids[w.sentence], w.predict, w.target, site, lambda a: vector + 0 * a)
                    assert b.site_deltas[i, j] == pytest.approx(fx - fb, rel=1e-5, abs=1e-7)


def test_other_sites_attn_heads_and_residual(lm64, corpus) -> None:
    sites = [Site(0, "attn"), Site(1, "residual")]
    batches = list(iter_attributions(lm64, corpus.subset([0]), method="ig", sites=sites, steps=32))
    b = batches[0]
    assert b.scores.shape[1] == lm64.layout.n_heads + lm64.layout.hidden_size
    assert np.abs(b.site_totals - b.site_deltas).sum() < 0.05 * np.abs(b.site_deltas).sum()


@pytest.mark.parametrize("method", ["gradxact", "ig"])
def test_results_do_not_depend_on_batching(llama64, corpus, method) -> None:
    part = corpus.subset([0, 1])
    runs = [_concat(list(iter_attributions(llama64, part, method=method, steps=3, batch_size=bs, words_per_group=g)))
            for bs, g in ((3, 1), (13, 5), (4096, 1000))]
    (words, scores, f), others = runs[0], runs[1:]
    for other_words, other_scores, other_f in others:
        assert other_words == words
        assert torch.allclose(other_scores, scores, rtol=1e-6, atol=1e-10)
        assert np.allclose(other_f, f, rtol=1e-9)


@pytest.mark.parametrize("bos", ["prepend", "none"])
def test_target_logprobs_equal_the_scorer(corpus, bos) -> None:
    """The attribution's targets are the scorer's word log-probabilities; without a BOS both leave each
    sentence's first word out (nothing predicts it)."""
    lm = wrap_model(tiny_model("llama"), own_tokenizer())
    summary = attribute(lm, corpus, classes=None, method="gradxact", bos=bos)
    scored = word_logprobs(lm, corpus, bos)
    assert (0 in set(scored.word_index)) == (bos == "prepend")
    merged = summary.words.merge(scored, on=["sent_index", "word_index", "upos"], suffixes=("", "_scorer"))
    assert len(merged) == len(summary.words) == len(scored)
    assert np.allclose(merged["logprob"], merged["logprob_scorer"], atol=1e-4)


def test_summary_streams_the_recipe_and_leaves_the_model_alone(llama64, corpus) -> None:
    params = list(llama64.model.parameters())
    assert all(p.requires_grad for p in params)
    summary = attribute(llama64, corpus, classes=("NOUN", "VERB"), method="ig", steps=4, top_percent=10,
                        keep_scores=True, batch_size=31, words_per_group=7)
    assert all(p.requires_grad and p.grad is None for p in params)
    assert set(summary.words["upos"]) == {"NOUN", "VERB"}
    assert summary.scores.shape == (len(summary.words), 2 * llama64.layout.width("mlp"))
    expected = select_key_neurons(summary.scores, summary.words["upos"].tolist(), classes=("NOUN", "VERB"), k=7,
                                  top_percent=10)
    key = summary.key_neurons(7)
    for c in ("NOUN", "VERB"):
        assert key.units[c].flat_indices().tolist() == sorted(expected[c].tolist())
        assert key.n_words[c] == int((summary.words["upos"] == c).sum())
    table = summary.table(key)
    assert len(table) == 2 * summary.scores.shape[1]
    noun = table[table["class"] == "NOUN"]
    nouns = (summary.words["upos"] == "NOUN").to_numpy()
    assert np.allclose(noun["mean_attribution"], summary.scores[nouns].mean(0), rtol=1e-5, atol=1e-9)
    assert noun["key"].sum() == len(key.units["NOUN"])
    assert summary.parameters["steps"] == 4 and summary.completeness is not None


def test_word_targets_filter_and_skip_merged_words(llama64, corpus) -> None:
    ids, words = word_targets(llama64, corpus, classes=["NOUN"])
    assert all(w.upos == "NOUN" for ws in words for w in ws)
    bos = tiny_tokenizer().bos_token_id
    assert all(row[0] == bos for row in ids)
    for ws in words:
        for w in ws:
            assert ids[w.sentence][w.predict + 1] == w.target
    _, every = word_targets(llama64, corpus)
    with_didnt = [i for i, s in enumerate(corpus) if "did" in s.words]
    for i in with_didnt:
        kept = {w.word for w in every[i]}
        d = corpus[i].words.index("did")
        assert d not in kept and d + 1 not in kept and len(kept) == len(corpus[i]) - 2


def test_errors(llama64, corpus) -> None:
    def run(**kwargs):
        return list(iter_attributions(llama64, corpus.subset([0]), **kwargs))

    with pytest.raises(NeurolocError, match="unknown attribution method"):
        run(method="lrp")
    with pytest.raises(NeurolocError, match="integration rule"):
        run(rule="simpson")
    with pytest.raises(NeurolocError, match="steps"):
        run(steps=0)
    with pytest.raises(NeurolocError, match="steps"):
        run(steps=1, rule="trapezoid")
    with pytest.raises(NeurolocError, match="batch_size"):
        run(batch_size=0)
    with pytest.raises(NeurolocError, match="coordinates"):
        run(baseline={"layers.0.mlp": torch.zeros(3)})
    with pytest.raises(NeurolocError, match="not attributed"):
        run(baseline={"layers.0.residual": torch.zeros(32)}, sites=[Site(0, "mlp")])
    with pytest.raises(NeurolocError, match="unknown baseline"):
        run(baseline="mean")
    gemma = wrap_model(tiny_model("gemma2"), own_tokenizer())  # sliding window of 16 tokens
    words = ["word"] * 20
    text = " ".join(words)
    spans = tuple((5 * i, 5 * i + 4) for i in range(20))
    long = TaggedCorpus([TaggedSentence("s", "d", text, tuple(words), ("NOUN",) * 20, (None,) * 20, spans,
                                        (False,) * 20)])
    with pytest.raises(NeurolocError, match="sliding attention window"):
        list(iter_attributions(gemma, long, method="gradxact"))


@pytest.mark.smollm2
def test_smollm2_attribution_is_complete_and_matches_the_scorer() -> None:
    from neuroloc.models.loading import load_model

    lm = load_model("smollm2", dtype="float32")
    words = ["The", "cat", "sat", "quietly"]
    corpus = TaggedCorpus([TaggedSentence("s1", "d1", "The cat sat quietly", tuple(words),
                                          ("DET", "NOUN", "VERB", "ADV"), (None,) * 4,
                                          ((0, 3), (4, 7), (8, 11), (12, 19)), (False,) * 4)])
    grad = attribute(lm, corpus, classes=("NOUN", "VERB"), method="gradxact")
    scored = word_logprobs(lm, corpus).set_index("word_index")["logprob"]
    assert np.allclose(grad.words["logprob"], scored.loc[grad.words["word_index"]].to_numpy(), atol=1e-3)
    sites = [Site(2, "mlp"), Site(20, "mlp")]
    ig = attribute(lm, corpus, classes=("NOUN",), method="ig", sites=sites, steps=16, batch_size=34)
    assert ig.completeness.summary()["relative_error"] < 0.05
