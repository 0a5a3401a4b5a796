"""The recorder and accumulators: padding/batch invariance, exact statistics, mergeable state."""

import numpy as np
import pytest
import torch

from neuroloc import Moments, NeurolocError, Recorder, StatsStore, StimulusSet, collect
from neuroloc.models.hooks import record
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a",
    "sentences and non-word strings are contrasted",
    "pome oy ree holily shourn",
    "she looked elsewhere!",
    "what is 15 + 4?",
    "the dog",
    "1 + 2 = 3",
    "the keys were in the drawer so she looked",
]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


def pooled(lm, pooling, batch_size, side, texts=TEXTS, spans=None, kinds=("residual", "mlp", "attn"),
           bos="tokenizer"):
    recorder = Recorder(lm, lm.layout.sites(kinds), pooling=pooling, batch_size=batch_size, padding_side=side,
                        bos=bos)
    rows = {}
    for batch in recorder.iter_batches(texts, spans):
        for k, row in enumerate(batch.rows):
            rows[row] = torch.cat([batch.features[s][k] for s in recorder.sites])
    return torch.stack([rows[key] for key in sorted(rows)])


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_batch_size_and_padding_side_do_not_change_results(lm, pooling):
    texts = TEXTS * 4  # 36 texts, so batch size 32 really pads
    reference = pooled(lm, pooling, 1, "right", texts)
    for batch_size in (7, 32):
        for side in ("left", "right"):
            torch.testing.assert_close(pooled(lm, pooling, batch_size, side, texts), reference, atol=1e-5, rtol=0)


def test_last_and_mean_pooling_match_unbatched_hidden_states(lm):
    result_last = pooled(lm, "last", 4, "left", kinds=("residual",))
    result_mean = pooled(lm, "mean", 4, "left", kinds=("residual",))
    for i, text in enumerate(TEXTS):
        ids = lm.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = lm.model(**ids, output_hidden_states=True).hidden_states[1][0]  # layer 0 output
        torch.testing.assert_close(result_last[i, :32], hidden[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(result_mean[i, :32], hidden.mean(0), atol=1e-5, rtol=0)


def test_attention_units_pool_head_norms(lm):
    text = TEXTS[0]
    ids = lm.tokenizer(text, return_tensors="pt")
    site = lm.layout.sites("attn", layers=[1])
    with record(lm.layout, site, stop_early=False) as got, torch.no_grad():
        lm.model(**ids)
    expected = got["layers.1.attn"][0, -1].reshape(4, 8).norm(dim=-1)
    result = pooled(lm, "last", 3, "right", kinds=("attn",))
    torch.testing.assert_close(result[0, 4:], expected, atol=1e-5, rtol=0)


def test_word_pooling_is_padding_invariant_and_picks_word_tokens(lm):
    texts = ["the quick brown fox", "a dog jumps over", "she looked elsewhere"]
    spans = [[(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", t)] for t in texts]
    for pooling in ("word-first", "word-last", "word-mean", "word-predict"):
        reference = pooled(lm, pooling, 1, "right", texts, spans, kinds=("residual",))
        torch.testing.assert_close(pooled(lm, pooling, 3, "left", texts, spans, kinds=("residual",)), reference,
                                   atol=1e-5, rtol=0)
    n_words = sum(len(s) for s in spans)
    assert pooled(lm, "word-mean", 2, "right", texts, spans, kinds=("residual",)).shape[0] == n_words
    # words at position 0 have no predicting token without a BOS: dropped, one per text
    assert pooled(lm, "word-predict", 2, "right", texts, spans, kinds=("residual",)).shape[0] == n_words - 3


def test_moments_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(103, 6)) * [1, 2, 3, 4, 5, 6] - 1.5
    whole = Moments(6)
    whole.update(torch.tensor(data))
    parts = [Moments(6), Moments(6), Moments(6)]
    for part, chunk in zip(parts, np.array_split(data, [1, 50])):
        for piece in np.array_split(chunk, 3):
            part.update(torch.tensor(piece))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    for moments in (whole, merged):
        assert moments.n == 103
        np.testing.assert_allclose(moments.mean.numpy(), data.mean(0), rtol=1e-12)
        np.testing.assert_allclose(moments.variance().numpy(), data.var(0, ddof=1), rtol=1e-10)
        np.testing.assert_allclose(moments.abs_mean.numpy(), np.abs(data).mean(0), rtol=1e-12)
        np.testing.assert_allclose(moments.variance(absolute=True).numpy(), np.abs(data).var(0, ddof=1), rtol=1e-10)
        np.testing.assert_array_equal(moments.positive.numpy(), (data > 0).sum(0))


def test_moments_reject_non_finite_values():
    moments = Moments(2)
    with pytest.raises(NeurolocError, match="non-finite"):
        moments.update(torch.tensor([[1.0, float("nan")]]))


def test_stats_store_save_restore_and_merge(tmp_path):
    rng = np.random.default_rng(1)
    stats_a, stats_b = StatsStore(), StatsStore()
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(7, 3))
    stats_a.update("moments", "S", "layers.0.residual", torch.tensor(a))
    stats_b.update("moments", "S", "layers.0.residual", torch.tensor(b))
    stats_b.update("moments", "N", "layers.0.residual", torch.tensor(b))
    stats_a.save(tmp_path / "a.safetensors")
    restored = StatsStore.load(tmp_path / "a.safetensors").merge(stats_b)
    both = np.concatenate([a, b])
    got = restored.get("moments", "S", "layers.0.residual")
    assert got.n == 17 and restored.count("N") == 7
    np.testing.assert_allclose(got.mean.numpy(), both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got.variance().numpy(), both.var(0, ddof=1), rtol=1e-10)


def test_collect_streams_by_condition(lm):
    stimuli = StimulusSet("toy", tuple(TEXTS), tuple("AB"[i % 2] for i in range(len(TEXTS))), ("A", "B"))
    stats = collect(Recorder(lm, lm.layout.sites("residual"), batch_size=4, bos="tokenizer"), stimuli)
    rows = pooled(lm, "last", 1, "right", kinds=("residual",))
    a_rows = rows[[i for i in range(len(TEXTS)) if i % 2 == 0], :32].double()
    np.testing.assert_allclose(stats.get("moments", "A", "layers.0.residual").mean.numpy(), a_rows.mean(0).numpy(),
                               atol=1e-6)
    assert stats.count("A") == 5 and stats.count("B") == 4


def test_recorder_rejects_bad_requests(lm):
    with pytest.raises(NeurolocError, match="pooling"):
        Recorder(lm, lm.layout.sites("residual"), pooling="max", batch_size=4, bos="prepend")
    with pytest.raises(NeurolocError, match="empty"):
        list(Recorder(lm, lm.layout.sites("residual"), batch_size=4, bos="prepend").iter_batches(["ok", "  "]))
    with pytest.raises(NeurolocError, match="word spans"):
        list(Recorder(lm, lm.layout.sites("residual"), pooling="word-first", batch_size=4,
                      bos="prepend").iter_batches(["ok"]))
