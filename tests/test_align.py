"""Brain alignment: ridge by leave-one-out, grouped folds, ceilings, baselines, and simulated recordings
whose answer is known in advance."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.preprocessing import StandardScaler
from click.testing import CliRunner

from neuroloc.align import (DEFAULT_ALPHAS, Recordings, cross_validate, fit_predict, group_folds,
                            intersubject_ceiling, oracle_r, permutation_pvalue, score_alignment, simulate_recordings)
from neuroloc.align.baselines import length_features, matched_random_units, position_features, rank_among
from neuroloc.align.ridge import pearson_columns
from neuroloc.errors import NeurolocError
from neuroloc.models.loading import wrap_model
from neuroloc.record.features import extract_features
from neuroloc.units import UnitSet
from tests.tiny import tiny_model, tiny_tokenizer

WORDS = ("the quick brown fox jumps over lazy dog she looked elsewhere keys were in drawer what is "
         "sentences strings language").split()


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(120)]
    return texts, [f"p{i // 4}" for i in range(120)]


# ------------------------------------------------------------------------------------------ ridge
@pytest.mark.parametrize("per_target", [True, False])
@pytest.mark.parametrize("n, p", [(70, 25), (30, 80)])  # an SVD, and the Gram route for wide features
def test_loo_penalty_and_predictions_match_sklearn_ridgecv(per_target, n, p):
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, p), rng.normal(size=(9, p))
    y = x @ (rng.normal(size=(p, 40)) * rng.uniform(0, 1, (1, 40))) + rng.normal(size=(n, 40)) * rng.uniform(
        0.1, 60, 40)
    scaler = StandardScaler().fit(x)
    reference = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=per_target).fit(scaler.transform(x), y)
    ours = fit_predict(torch.tensor(x), torch.tensor(y), torch.tensor(x_test), alpha_per_target=per_target)
    assert len(set(np.atleast_1d(reference.alpha_))) > 1 or not per_target  # the grid choice is exercised
    np.testing.assert_allclose(ours.alphas.numpy(), np.broadcast_to(reference.alpha_, (40,)))
    np.testing.assert_allclose(ours.predictions.numpy(), reference.predict(scaler.transform(x_test)), atol=1e-9)


def test_linear_regression_matches_sklearn_minimum_norm():
    rng = np.random.default_rng(1)
    x, y, x_test = rng.normal(size=(20, 50)), rng.normal(size=(20, 3)), rng.normal(size=(4, 50))
    scaler = StandardScaler().fit(x)
    reference = LinearRegression().fit(scaler.transform(x), y).predict(scaler.transform(x_test))
    ours = fit_predict(torch.tensor(x), torch.tensor(y), torch.tensor(x_test), alphas=None)
    np.testing.assert_allclose(ours.predictions.numpy(), reference, atol=1e-9)


def test_target_batches_do_not_change_the_answer():
    rng = np.random.default_rng(2)
    x, y, x_test = (torch.tensor(rng.normal(size=s)) for s in ((30, 8), (30, 50), (5, 8)))
    whole = fit_predict(x, y, x_test, alpha_per_target=True)
    batched = fit_predict(x, y, x_test, alpha_per_target=True, target_batch=7)
    np.testing.assert_allclose(whole.predictions.numpy(), batched.predictions.numpy(), atol=1e-12)
    assert torch.equal(whole.alphas, batched.alphas)


def test_pearson_columns_match_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(15, 4)), rng.normal(size=(15, 4))
    ours = pearson_columns(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(ours, [scipy.stats.pearsonr(a[:, j], b[:, j])[0] for j in range(4)])
    assert np.isnan(pearson_columns(torch.ones(5, 1), torch.tensor(a[:5, :1])).item())


def test_bad_penalties_are_refused():
    with pytest.raises(NeurolocError, match="positive"):
        fit_predict(torch.ones(4, 2), torch.ones(4, 1), torch.ones(2, 2), alphas=[0.0, 1.0])


# ------------------------------------------------------------------------------------------ folds
def test_grouped_folds_never_leak_a_passage():
    rng = np.random.default_rng(4)
    groups = [f"g{g}" for g in rng.integers(0, 23, size=200)]
    folds = group_folds(groups, 10, seed=3)
    assert len(folds) == 10
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(200))  # every stimulus tested exactly once
    labels = np.asarray(groups)
    for train, test in folds:
        assert not set(labels[train]) & set(labels[test])
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 200
    assert len(group_folds(["a", "a", "b", "b", "c", "c"], 10 if False else 5)) == 3  # fewer groups → fewer folds


def test_cross_validate_equals_sklearn_pipeline_per_fold():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 6)) * 5 + 3
    y = x @ rng.normal(size=(6, 3)) + rng.normal(size=(60, 3)) * 4
    folds = group_folds([f"p{i // 3}" for i in range(60)], 5)
    ours = cross_validate(x, y, folds)
    for f, (train, test) in enumerate(folds):
        scaler = StandardScaler().fit(x[train])
        prediction = RidgeCV(alphas=DEFAULT_ALPHAS).fit(scaler.transform(x[train]), y[train]).predict(
            scaler.transform(x[test]))
        expected = [scipy.stats.pearsonr(prediction[:, j], y[test, j])[0] for j in range(3)]
        np.testing.assert_allclose(ours.r[f], expected, atol=1e-9)
    assert ours.score() == pytest.approx(np.mean(np.median(ours.r, axis=1)))


# ------------------------------------------------------------------------------------------ ceiling and baselines
def test_ceiling_matches_theory_of_pooled_subjects():
    """Each subject = shared signal + noise (snr 1). A pool of m subjects predicts a held-out one at
    about r* · √(m·snr / (m·snr + 1)); the extrapolated ceiling lies between the largest pool's score
    and the oracle r* = √(snr / (1 + snr)). Many hidden features make the neuroids' signals independent,
    so a pool can only average the matching neuroid of the other subjects."""
    rng = np.random.default_rng(6)
    rec = simulate_recordings(rng.normal(size=(300, 200)), [f"t{i}" for i in range(300)],
                              [f"p{i // 5}" for i in range(300)], n_subjects=5, n_neuroids=12, snr=1.0, seed=1)
    folds = group_folds(rec.groups, 5)
    ceiling = intersubject_ceiling(rec, folds, n_subsets=4, n_holdouts=2, n_bootstraps=40)
    points = ceiling.points.groupby("n_subjects").r.mean()
    oracle = oracle_r(1.0)
    for k, value in points.items():
        expected = oracle * np.sqrt((k - 1) / (k - 1 + 1))
        assert value == pytest.approx(expected, abs=0.06)
    assert points.iloc[-1] - 0.02 <= ceiling.value() <= oracle + 0.02
    assert ceiling.table.extrapolated.iloc[0]
    assert ceiling.table.low.iloc[0] <= ceiling.value() <= ceiling.table.high.iloc[0]


def test_pvalue_rank_and_confound_features_by_hand(lm):
    assert permutation_pvalue(0.5, [0.1, 0.6, 0.2, 0.5]) == pytest.approx(3 / 5)
    assert rank_among(0.5, [0.1, 0.6, 0.2, 0.5]) == 2
    stimuli = pd.DataFrame({"stimulus_id": list("abcd"), "text": ["w x", "y", "z z z", "q"],
                            "group": ["p", "p", "q", "q"], "position": [0, 1, 0, 1]})
    rec = Recordings(np.ones((4, 1)), stimuli, pd.DataFrame({"neuroid_id": ["n"], "subject": ["s"], "roi": ["r"]}))
    features = position_features(rec, sigma=1.0)
    np.testing.assert_allclose(features[:, :2], [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(features[1, 2:], [np.exp(-0.5), 1.0])
    tokens = [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rec.texts]
    np.testing.assert_array_equal(length_features(lm.tokenizer, rec.texts)[:, 0], tokens)


def test_matched_random_units_keep_counts_and_avoid_the_set(lm):
    units = UnitSet.empty(lm.layout, ["residual", "mlp"])
    units.masks[units.sites[0]][:3] = True
    units.masks[units.sites[3]][5:9] = True
    control = matched_random_units(units, seed=1)
    assert control.counts() == units.counts() and len(control & units) == 0
    assert control != matched_random_units(units, seed=2)


# ------------------------------------------------------------------------------------------ features
def hidden_states(lm, text):
    """Each decoder layer's output for one unpadded text, by plain torch forward hooks (index 0 = the
    embeddings, as in transformers' hidden_states, whose last entry is normalised and so not used)."""
    outputs = []
    handles = [layer.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
               for layer in lm.model.model.layers]
    ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    bos = torch.tensor([[lm.tokenizer.bos_token_id]])  # the default BOS policy: prepend
    tokens = torch.cat([bos, ids["input_ids"]], 1)
    ids = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
    try:
        with torch.no_grad():
            lm.model(**ids)
    finally:
        for handle in handles:
            handle.remove()
    return [None] + [o.reshape(1, -1, o.shape[-1]) for o in outputs], ids


def test_features_follow_stimulus_order_and_match_a_plain_forward(lm, corpus):
    texts = corpus[0][:11]
    features = extract_features(lm, texts, "residual", batch_size=4, bos="prepend")
    for i, text in enumerate(texts):
        states, _ = hidden_states(lm, text)
        for layer in range(lm.layout.n_layers):
            np.testing.assert_allclose(features.layer(layer)[i].numpy(), states[layer + 1][0, -1].numpy(),
                                       atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_context_reads_the_passage_and_pools_only_the_current_stimulus(lm, pooling):
    texts = ["the dog ran", "she looked elsewhere", "keys were in the drawer", "what is this"]
    passages = ["a", "a", "a", "b"]
    got = extract_features(lm, texts, "layers.1.residual", pooling=pooling, passages=passages, batch_size=3, bos="prepend")
    again = extract_features(lm, texts, "layers.1.residual", pooling=pooling, passages=passages, batch_size=1, bos="prepend")
    np.testing.assert_allclose(got.all().numpy(), again.all().numpy(), atol=1e-5)
    full = "the dog ran she looked elsewhere keys were in the drawer"
    states, ids = hidden_states(lm, full)
    offsets = [(0, 0)] + lm.tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    start = full.index("keys")
    own = [t for t, (a, b) in enumerate(offsets) if b > start and b > a]
    expected = states[2][0, own[-1]] if pooling == "last" else states[2][0, own].mean(0)
    np.testing.assert_allclose(got.all()[2].numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)
    short = extract_features(lm, texts, "layers.1.residual", pooling=pooling, passages=passages, max_context=1,
                             batch_size=4, bos="prepend")
    one_back = hidden_states(lm, "she looked elsewhere keys were in the drawer")[0][2][0]
    offsets = [(0, 0)] + lm.tokenizer("she looked elsewhere keys were in the drawer", return_offsets_mapping=True,
                                      add_special_tokens=False)["offset_mapping"]
    own = [t for t, (a, b) in enumerate(offsets) if b > len("she looked elsewhere ") and b > a]
    expected = one_back[own[-1]] if pooling == "last" else one_back[own].mean(0)
    np.testing.assert_allclose(short.all()[2].numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)
    no_context = extract_features(lm, texts, "layers.1.residual", pooling=pooling, batch_size=4, bos="prepend")
    np.testing.assert_allclose(no_context.all()[3].numpy(), got.all()[3].numpy(), atol=1e-5)
    alone = hidden_states(lm, "what is this")[0][2][0]
    np.testing.assert_allclose(got.all()[3].numpy(), (alone[-1] if pooling == "last" else alone[1:].mean(0)).numpy(),
                               atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def simulated(lm, corpus):
    """Responses driven by 6 residual units of layer 1 (snr 1, 4 subjects, 2 ROIs)."""
    texts, groups = corpus
    units = UnitSet.empty(lm.layout, "residual")
    units.masks[units.sites[1]][[2, 5, 7, 11, 19, 30]] = True
    features = extract_features(lm, texts, units, passages=groups, batch_size=32, bos="prepend").units(units).numpy()
    return units, simulate_recordings(features, texts, groups, n_subjects=4, n_neuroids=10, snr=1.0, n_rois=2,
                                      seed=3)


def test_true_units_beat_random_units_and_reach_the_oracle(lm, simulated):
    units, rec = simulated
    result = score_alignment(lm, rec, units, controls=6, layers="all", ceiling_subsets=3, ceiling_holdouts=2,
                             batch_size=32, bos="prepend",
                             ceiling_bootstraps=30)
    summary = result.summary.set_index("features")
    oracle = oracle_r(1.0)
    assert summary.loc["units", "score"] == pytest.approx(oracle, abs=0.06)
    random = summary[summary.kind == "random"].score
    assert (random < summary.loc["units", "score"] - 0.05).all()
    assert summary.loc["units", "rank"] == 1 and summary.loc["units", "p"] == pytest.approx(1 / 7)
    assert abs(summary.loc["length", "score"]) < 0.2 and abs(summary.loc["position", "score"]) < 0.2
    assert summary.loc["layer-1", "score"] > summary.loc["layer-0", "score"] - 0.1
    assert 0.5 < result.ceiling.value() <= oracle + 0.02
    assert summary.loc["units", "normalized"] == pytest.approx(summary.loc["units", "score"] / result.ceiling.value())
    assert set(result.by_roi.name) >= {"roi0", "roi1", "sub0", "sub3"}
    assert result.scores.fold.nunique() == 10 and set(result.neuroid_scores.columns) >= {"units", "all"}


def test_pipeline_writes_tables_figures_report_and_manifest(lm, simulated, tmp_path):
    from neuroloc.pipelines.align import align, alignment_section

    units, rec = simulated
    frame = pd.DataFrame(rec.responses, columns=[f"v{j}" for j in range(rec.n_neuroids)])
    frame.insert(0, "text", rec.texts)
    frame.insert(1, "passage", rec.groups)
    table = tmp_path / "responses.csv"
    frame.to_csv(table, index=False)
    result = align(lm, table, units, controls=3, layers=[0, 1], ceiling=0.8, folds=5, out=tmp_path / "out")
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files >= {"scores.csv", "summary.csv", "by_roi.csv", "ceiling.csv", "neuroids.parquet", "layers.png",
                     "units_vs_random.png", "manifest.json", "report.html"}
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.loc[summary.features == "units", "normalized"].iloc[0] == pytest.approx(
        result.score("units") / 0.8)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["parameters"]["folds"] == 5 and "sha256" in manifest["data"]
    section = alignment_section(result)
    assert "rank 1 of 4" in section.text and len(section.figures) == 2


def test_cli_align_on_a_table(lm, simulated, tmp_path):
    from neuroloc.cli import app

    units, rec = simulated
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    units.save(tmp_path / "units")
    frame = pd.DataFrame({"Sentence": rec.texts, "story": rec.groups, "lang": rec.responses[:, :10].mean(1)})
    frame.loc[3, "lang"] = np.nan
    frame.to_csv(tmp_path / "roi.csv", index=False)
    runner = CliRunner()
    args = ["align", "--model", str(model_dir), "--recordings", str(tmp_path / "roi.csv"), "--units",
            str(tmp_path / "units"), "--controls", "2", "--folds", "4", "--quiet"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 NaN responses" in " ".join(result.output.split())
    assert (tmp_path / "out" / "report.html").is_file()
    strict = runner.invoke(app, args + ["--strict", "--out", str(tmp_path / "strict")])
    assert strict.exit_code == 2 and "--strict" in " ".join(strict.output.split())
    assert not (tmp_path / "strict").exists()


@pytest.mark.smollm2
def test_smollm2_true_units_beat_random_on_simulated_passages():
    """Responses driven by 40 units of layer 20; 60 sentences of 12 passages, read in context."""
    from neuroloc import load_model

    lm = load_model("smollm2", dtype="float32")  # the float32 reference below
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 10)))).capitalize() + "." for _ in range(60)]
    groups = [f"p{i // 5}" for i in range(60)]
    units = UnitSet.empty(lm.layout, "residual")
    units.masks[units.sites[20]][rng.choice(576, 40, replace=False)] = True
    features = extract_features(lm, texts, units, passages=groups, batch_size=16, bos="prepend")
    states, _ = hidden_states(lm, texts[0])  # the first sentence of a passage has no context
    np.testing.assert_allclose(features.site("layers.20.residual")[0].numpy(), states[21][0, -1].numpy(),
                               atol=1e-3, rtol=1e-3)
    rec = simulate_recordings(features.units(units).numpy(), texts, groups, n_subjects=3, n_neuroids=8, snr=2.0)
    result = score_alignment(lm, rec, units, controls=3, folds=6, ceiling="none", confounds=["length"],
                             batch_size=32, bos="prepend")
    summary = result.summary.set_index("features")
    assert summary.loc["units", "rank"] == 1
    assert summary.loc["units", "score"] > summary[summary.kind == "random"].score.max() + 0.05


def test_alignment_figures_refuse_tables_they_cannot_draw():
    from neuroloc.report.align_figures import plot_alignment_controls, plot_alignment_layers

    summary = pd.DataFrame([{"features": "all", "kind": "all", "layer": -1, "n_units": 10, "score": 0.3,
                             "sd_folds": 0.01, "ceiling": np.nan}])
    with pytest.raises(NeurolocError, match="--layers all"):
        plot_alignment_layers(summary)
    with pytest.raises(NeurolocError, match="--controls"):
        plot_alignment_controls(summary)
    with pytest.raises(NeurolocError, match="lacks columns"):
        plot_alignment_layers(summary.drop(columns=["ceiling"]))


def test_bad_requests_fail_before_any_work(lm, simulated):
    units, rec = simulated
    for kwargs, message in (({"ceiling": "high"}, "--ceiling takes"), ({"ceiling": 1.5}, r"\(0, 1\]"),
                            ({"metric": "lasso"}, "unknown metric"), ({"controls": -1}, "--controls"),
                            ({"layers": "2,x"}, "--layers takes"), ({"layers": [7]}, "layers \\[7\\] do not exist")):
        with pytest.raises(NeurolocError, match=message):
            score_alignment(lm, rec, units, batch_size=32, bos="prepend", **kwargs)
