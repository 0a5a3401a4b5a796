"""The general core: designs, the score registry, the statistics protocol, the encoding path, mlp_gate."""

import json

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import average_precision_score

from neuroloc import (Design, LabeledUnits, Localizer, Moments, NeurolocError, Recorder, Rows, Scores, StatsStore,
                      StimulusSet, TokenStats, encode, lesion, load_contrast_file)
from neuroloc.localize.score_functions import SCORES, average_precision, get_score
from neuroloc.localize.scores import lape_scores
from neuroloc.models.hooks import record, run_forward
from neuroloc.models.layout import Site
from neuroloc.models.loading import wrap_model
from neuroloc.units import UnitSet
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = {
    "a": ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
          "the dog jumps over the fox", "what is the answer to this"],
    "b": ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy", "whimp holily ree"],
    "c": ["1 + 2 = 3", "what is 15 + 4?", "117 - 104 = 13", "2 + 2 = 4 and 3 + 3 = 6"],
}


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def three():
    texts = [t for label in "abc" for t in TEXTS[label]]
    return StimulusSet("three", tuple(texts), tuple(label for label in "abc" for _ in TEXTS[label]))


def pooled_rows(lm, texts, kinds, bos="prepend", pooling="last"):
    """Pooled activations per text in text order, all sites laid end to end."""
    recorder = Recorder(lm, lm.layout.sites(kinds), batch_size=1, bos=bos, pooling=pooling)
    out = {}
    for batch in recorder.iter_batches(texts):
        for row, (text, _) in enumerate(batch.rows):
            out[text] = torch.cat([batch.features[s][row] for s in recorder.sites]).double().numpy()
    return np.stack([out[i] for i in range(len(texts))])


# ------------------------------------------------------------------------------------------ encoding
def test_bos_policies(lm):
    tok = lm.tokenizer
    text = "the quick brown fox"
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert encode(tok, [text], bos="prepend").input_ids[0] == [tok.bos_token_id, *plain]
    assert encode(tok, [text], bos="none").input_ids[0] == plain
    assert encode(tok, [text], bos="tokenizer").input_ids[0] == tok(text)["input_ids"]
    with pytest.raises(NeurolocError, match="BOS policy"):
        encode(tok, [text], bos="always")


def test_prepend_policy_matches_a_plain_forward_with_bos(lm):
    texts = TEXTS["a"] + TEXTS["b"]
    got = pooled_rows(lm, texts, ["residual"], pooling="mean")
    for i, text in enumerate(texts):
        ids = [lm.tokenizer.bos_token_id, *lm.tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            hidden = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        # layer 0's output (the last hidden state is after the final norm, so not a block output)
        np.testing.assert_allclose(got[i][:32], hidden[1][0].mean(0).double().numpy(), atol=1e-5)


def test_word_predict_has_a_position_for_the_first_word_under_prepend(lm):
    texts = ["the quick brown fox", "a dog jumps"]
    spans = [[(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", t)] for t in texts]
    recorder = Recorder(lm, [Site(0, "residual")], pooling="word-predict", bos="prepend", batch_size=32)
    rows = [r for batch in recorder.iter_batches(texts, spans) for r in batch.rows]
    assert len(rows) == sum(len(s) for s in spans)  # no word dropped


# ------------------------------------------------------------------------------------------- designs
def test_design_parsing_and_resolution(tmp_path):
    assert Design.parse("S:N") == Design.contrast("S", "N")
    assert Design.parse("one-vs-rest") == Design.one_vs_rest()
    assert Design.parse("one-vs-rest:en,de").labels == ("en", "de")
    assert Design.one_vs_rest().resolve(["x", "y", "z"]).labels == ("x", "y", "z")
    assert Design.one_vs_rest(["x", "z"]).comparisons(["x", "y", "z"]) == [("x", ("y", "z")), ("z", ("x", "y"))]
    with pytest.raises(NeurolocError, match="no stimulus has"):
        Design.contrast("S", "Q").resolve(["S", "N"])
    path = tmp_path / "design.json"
    path.write_text(json.dumps({"kind": "groups", "labels": ["a", "b"]}))
    assert Design.from_file(path) == Design.groups(["a", "b"])
    path.write_text("{")
    with pytest.raises(NeurolocError, match=r"design\.json"):
        Design.from_file(path)


def test_three_condition_files_load_without_a_contrast(tmp_path):
    path = tmp_path / "three.csv"
    path.write_text("text,condition\na,x\nb,y\nc,z\nd,x\ne,y\nf,z\n")
    stimuli = load_contrast_file(path)
    assert stimuli.contrast is None and stimuli.labels == ["x", "y", "z"]
    assert stimuli.design == Design.one_vs_rest()


# ---------------------------------------------------------------------------------------- the scores
def test_one_vs_rest_welch_matches_scipy(lm, three):
    localizer = Localizer(["residual", "mlp_gate"], score="one_vs_rest_welch", percent=10, batch_size=3).fit(lm, three)
    rows = pooled_rows(lm, list(three.texts), ["residual", "mlp_gate"])
    labels = np.array(three.conditions)
    assert localizer.labels_ == ("a", "b", "c") and localizer.scores_.shape == (3, rows.shape[1])
    for i, label in enumerate("abc"):
        expected = scipy.stats.ttest_ind(rows[labels == label], rows[labels != label], equal_var=False)
        np.testing.assert_allclose(localizer.scores_[i], expected.statistic, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(localizer.pvalues_[i], expected.pvalue, rtol=1e-5, atol=1e-7)
    assert isinstance(localizer.units_, LabeledUnits)
    assert localizer.units_.labels == ["a", "b", "c"]
    top = np.argsort(-localizer.scores_[1], kind="stable")
    chosen = localizer.get_support()[1]
    # per site kind, the 10% largest t of label b
    kinds = np.repeat([s.kind for s in localizer.sites_], localizer.widths_)
    for kind in ("residual", "mlp_gate"):
        idx = np.flatnonzero(kinds == kind)
        k = int(np.floor(0.1 * idx.size + 0.5))
        expected = idx[np.argsort(-localizer.scores_[1][idx], kind="stable")[:k]]
        assert set(np.flatnonzero(chosen & (kinds == kind))) == set(expected)
    assert top.size


def test_cohen_d_against_a_hand_computation(lm):
    stimuli = StimulusSet("ab", tuple(TEXTS["a"] + TEXTS["b"]), tuple("a" * 4 + "b" * 4), ("a", "b"))
    localizer = Localizer("residual", score="cohen_d", percent=5).fit(lm, stimuli)
    rows = pooled_rows(lm, list(stimuli.texts), ["residual"])
    a, b = rows[:4], rows[4:]
    pooled_sd = np.sqrt(((a.var(0, ddof=1) * 3) + (b.var(0, ddof=1) * 3)) / 6)
    np.testing.assert_allclose(localizer.scores_, (a.mean(0) - b.mean(0)) / pooled_sd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(localizer.pvalues_, scipy.stats.ttest_ind(a, b, equal_var=False).pvalue,
                               rtol=1e-5, atol=1e-7)


def _token_store(prob: np.ndarray, tokens: int = 1000) -> StatsStore:
    """A store whose token statistics give exactly `prob` (labels × units) at one site."""
    store = StatsStore()
    for i, row in enumerate(prob):
        positive = torch.tensor(np.round(row * tokens), dtype=torch.int64)
        zeros = torch.zeros(len(row), dtype=torch.float64)
        store.update("tokens", f"L{i}", "layers.0.mlp_gate", tokens, positive, zeros, zeros)
    return store


def test_lape_entropy_bar_and_assignment_by_hand():
    prob = np.array([[0.90, 0.10, 0.50, 0.00, 0.96, 0.30],
                     [0.05, 0.10, 0.50, 0.00, 0.97, 0.31],
                     [0.05, 0.80, 0.50, 0.00, 0.01, 0.29]])
    scores = SCORES["lape"](_token_store(prob), Design.groups(), quantile=0.8)
    share = prob / np.where(prob.sum(0) == 0, 1, prob.sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(share > 0, share * np.log(share), 0), axis=0)
    entropy[prob.sum(0) == 0] = np.log(3)
    np.testing.assert_allclose(scores.columns["entropy"][0], entropy, rtol=1e-12)
    np.testing.assert_allclose(lape_scores(prob), entropy, rtol=1e-12)
    bar = np.quantile(prob, 0.8)  # numpy's linear interpolation, as LAPE's torch.quantile / np.percentile
    assert 0.5 < bar < 0.9
    # 50% of 6 units = 3 lowest-entropy units among those above the bar somewhere: units 0, 1, 4
    support = scores.support(50.0, None)
    expected = (prob > bar) & np.isin(np.arange(6), [0, 1, 4])[None, :]
    np.testing.assert_array_equal(support, expected)
    assert support[:, 4].tolist() == [True, True, False]  # one unit serves two labels


def test_activation_probability_margin_by_hand():
    prob = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.2, 0.7, 0.4]])
    scores = SCORES["activation_probability"](_token_store(prob), Design.one_vs_rest())
    expected = np.stack([prob[i] - np.delete(prob, i, 0).max(0) for i in range(3)])
    np.testing.assert_allclose(scores.values, expected, atol=1e-12)


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(40, 7)).astype(float)  # many ties
    values[:, 6] = rng.normal(size=40)
    positive = rng.random(40) < 0.3
    got = average_precision(values, positive)
    expected = [average_precision_score(positive, values[:, u]) for u in range(7)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_average_precision_localizer_against_sklearn(lm, three):
    localizer = Localizer("mlp", score="average_precision", count=5).fit(lm, three)
    rows = pooled_rows(lm, list(three.texts), ["mlp"])
    labels = np.array(three.conditions)
    for i, label in enumerate("abc"):
        expected = [average_precision_score(labels == label, rows[:, u]) for u in range(rows.shape[1])]
        np.testing.assert_allclose(localizer.scores_[i], expected, rtol=1e-5)
    assert all(len(units) == 5 for _, units in localizer.units_.items())  # count is per site kind
    frame = localizer.scores_frame()
    assert set(frame.label) == {"a", "b", "c"} and frame.selected.sum() == 15


def test_a_callable_score_and_its_errors(lm, three):
    def spread(stats, design):
        values = np.concatenate([stats.get("moments", "a", s).mean.cpu().numpy() for s in ["layers.0.residual",
                                                                                            "layers.1.residual"]])
        return Scores(values, ("a",))

    localizer = Localizer("residual", score=spread, count=3).fit(lm, three)
    assert localizer.get_params()["score"] == "spread" and len(localizer.units_) == 3
    with pytest.raises(NeurolocError, match="unknown score"):
        get_score("nope")
    with pytest.raises(NeurolocError, match="does not take a groups design"):
        Localizer("residual", score="welch", design="groups").fit(lm, three)


# ------------------------------------------------------------------------------ statistics protocol
def test_token_stats_on_mlp_gate_match_a_direct_computation(lm, three):
    localizer = Localizer("mlp_gate", score="lape", pooling="tokens", design="groups", percent=10,
                          batch_size=5).fit(lm, three)
    for label in "abc":
        for layer in range(2):
            positive, tokens, sums = 0, 0, 0.0
            for text in TEXTS[label]:
                ids = encode(lm.tokenizer, [text], bos="prepend").input_ids[0]
                with record(lm.layout, [Site(layer, "mlp_gate")], stop_early=False) as got, torch.no_grad():
                    run_forward(lm.model, input_ids=torch.tensor([ids]))
                gate = got[f"layers.{layer}.mlp_gate"][0][1:]  # the text's own tokens: not the prepended BOS
                positive = positive + (gate > 0).sum(0)
                tokens += gate.shape[0]
                sums = sums + gate.double().sum(0)
            stat = localizer.stats_.get("tokens", label, f"layers.{layer}.mlp_gate")
            assert stat.n == tokens
            np.testing.assert_array_equal(stat.positive.numpy(), positive.numpy())
            np.testing.assert_allclose(stat.sum.numpy(), sums.numpy(), rtol=1e-5, atol=1e-6)
    assert localizer.scores_.shape == (3, 2 * 48)


def test_mlp_gate_is_act_of_gate_projection(lm):
    ids = torch.tensor([encode(lm.tokenizer, ["the quick brown fox"], bos="prepend").input_ids[0]])
    mlp = lm.model.model.layers[1].mlp
    with record(lm.layout, [Site(1, "mlp_gate"), Site(1, "mlp")], stop_early=False) as got, torch.no_grad():
        captured = {}
        handle = mlp.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
        run_forward(lm.model, input_ids=ids)
        handle.remove()
    x = captured["x"]
    torch.testing.assert_close(got["layers.1.mlp_gate"], mlp.act_fn(mlp.gate_proj(x)))
    torch.testing.assert_close(got["layers.1.mlp"], mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def test_zeroing_a_gate_unit_equals_zeroing_its_down_projection_input(lm):
    ids = torch.tensor([encode(lm.tokenizer, ["she looked elsewhere"], bos="prepend").input_ids[0]])
    gate = UnitSet.from_names(["layers.0.mlp_gate[3]", "layers.1.mlp_gate[40]"], lm.layout)
    neuron = UnitSet.from_names(["layers.0.mlp[3]", "layers.1.mlp[40]"], lm.layout)
    with torch.no_grad(), lesion(lm, gate, "zero"):
        a = lm.model(input_ids=ids).logits
    with torch.no_grad(), lesion(lm, neuron, "zero"):
        b = lm.model(input_ids=ids).logits
    with torch.no_grad():
        intact = lm.model(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, intact)


def test_fit_stats_from_merged_halves_equals_fit_on_all(lm, three):
    first = three.subset([0, 1, 4, 5, 8, 9])
    second = three.subset([2, 3, 6, 7, 10, 11])
    for score, pooling in (("one_vs_rest_welch", "last"), ("average_precision", "mean"), ("lape", "tokens")):
        design = "groups" if score == "lape" else None
        # one text per batch: every text's activations are the same in the whole run and in its half, so
        # only the merge can make a difference (padding changes float32 activations by ~1e-9)
        make = lambda: Localizer(["residual", "mlp_gate"], score=score, design=design, pooling=pooling,  # noqa: E731
                                 percent=10, batch_size=1)
        whole = make().fit(lm, three)
        parts = [make().record(lm, half) for half in (first, second)]
        restored = StatsStore()
        restored.load_state_dict(parts[0].state_dict())
        merged = make().fit_stats(restored.merge(parts[1]))
        if score == "average_precision":  # rows arrive in another order: AP does not care
            np.testing.assert_allclose(merged.scores_, whole.scores_, rtol=1e-6)
        else:
            np.testing.assert_allclose(merged.scores_, whole.scores_, rtol=1e-7, atol=1e-9)
        assert merged.units_ == whole.units_


def test_stats_protocol_roundtrip_merge_and_device():
    rng = np.random.default_rng(3)
    a, b = torch.tensor(rng.normal(size=(5, 4))), torch.tensor(rng.normal(size=(3, 4)))
    for make, add in ((lambda: TokenStats(4), lambda s, x: s.update(x.shape[0], (x > 0).sum(0), x.sum(0), x.clamp(min=0).sum(0))),
                      (lambda: Rows(4), lambda s, x: s.update(x))):
        left, right, whole = make(), make(), make()
        add(left, a)
        add(right, b)
        add(whole, a)
        add(whole, b)
        copy = make()
        copy.load_state_dict(left.state_dict())
        copy.merge(right).to("cpu")
        for key, value in whole.state_dict().items():
            torch.testing.assert_close(copy.state_dict()[key].double(), value.double())
    store = StatsStore(rows_limit_bytes=100)
    with pytest.raises(NeurolocError, match="restrict --site"):
        store.update("rows", "a", "layers.0.mlp", torch.zeros(10, 4))


def test_sites_side_by_side_equal_sites_one_by_one():
    """`update_sites` keeps several sites in one block; reading splits it into exactly what per-site
    updates give, and a store that was read, saved or resumed goes on accumulating correctly."""
    rng = np.random.default_rng(4)
    sites, widths = ["layers.0.mlp", "layers.1.mlp", "layers.1.residual"], [3, 5, 2]
    batches = [torch.tensor(rng.normal(size=(n, sum(widths))), dtype=torch.float32) for n in (4, 1, 6)]

    def per_site(store, kind, label, values):
        for site, piece in zip(sites, values.split(widths, dim=1)):
            if kind == "tokens":
                store.update(kind, label, site, values.shape[0], (piece > 0).sum(0), piece.double().sum(0),
                             piece.double().clamp(min=0).sum(0))
            else:
                store.update(kind, label, site, piece)

    def side_by_side(store, kind, label, values):
        if kind == "tokens":
            store.update_sites(kind, label, sites, widths, values.shape[0], (values > 0).sum(0), values.double().sum(0),
                               values.double().clamp(min=0).sum(0))
        else:
            store.update_sites(kind, label, sites, widths, values)

    expected, blocked = StatsStore(), StatsStore()
    for kind in ("moments", "tokens", "rows"):
        for i, values in enumerate(batches):
            per_site(expected, kind, "a", values)
            side_by_side(blocked, kind, "a", values)
            if i == 0:  # read in the middle (as a checkpoint does): the block splits, then regroups
                assert blocked.count("a", kind) == values.shape[0]
    resumed = StatsStore()
    resumed.load_state_dict(blocked.state_dict())
    side_by_side(resumed, "moments", "a", batches[0])
    per_site(expected, "moments", "a", batches[0])
    assert sorted(resumed.state_dict()) == sorted(expected.state_dict())
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key].double(), value.double(), rtol=1e-12, atol=1e-12)
    moments = resumed.get("moments", "a", "layers.1.mlp")
    everything = torch.cat([*batches, batches[0]])[:, 3:8].double()
    torch.testing.assert_close(moments.mean, everything.mean(0))  # against a direct computation
    torch.testing.assert_close(moments.variance(), everything.var(0))
    with pytest.raises(ValueError, match="side by side"):  # sites that saw different rows cannot be joined
        Moments.concat([Moments(2).update(torch.zeros(1, 2)), Moments(2)])
    # overlapping site sets (a store filled by two recordings of other sites) add up per site
    overlapping, each = StatsStore(), StatsStore()
    x, y = torch.tensor(rng.normal(size=(4, 4))), torch.tensor(rng.normal(size=(3, 4)))
    overlapping.update_sites("moments", "a", ["s1", "s2"], [2, 2], x)
    overlapping.update_sites("moments", "a", ["s2", "s3"], [2, 2], y)
    for site, piece in (("s1", x[:, :2]), ("s2", x[:, 2:]), ("s2", y[:, :2]), ("s3", y[:, 2:])):
        each.update("moments", "a", site, piece)
    assert overlapping.get("moments", "a", "s2").n == 7
    for key, value in each.state_dict().items():
        torch.testing.assert_close(overlapping.state_dict()[key], value, rtol=1e-12, atol=1e-12)


def test_save_load_multilabel_localizer(lm, three, tmp_path):
    localizer = Localizer("residual", score="one_vs_rest_welch", count=4).fit(lm, three)
    localizer.save(tmp_path)
    loaded = Localizer.load(tmp_path)
    assert loaded.units_ == localizer.units_ and loaded.design_ == localizer.design_
    np.testing.assert_allclose(loaded.scores_, localizer.scores_)
    assert loaded.get_params()["settings"]["bos"] == "prepend"


# ------------------------------------------------------------------------------------- LabeledUnits
def test_labeled_units_tables_and_persistence(lm, tmp_path):
    sets = LabeledUnits({
        "x": UnitSet.from_names(["layers.0.mlp[1]", "layers.0.mlp[2]", "layers.1.mlp[3]"], lm.layout),
        "y": UnitSet.from_names(["layers.0.mlp[2]", "layers.1.mlp[4]"], lm.layout),
    })
    assert sets.overlap().loc["x", "y"] == 1 and sets.overlap().loc["x", "x"] == 3
    assert sets.jaccard().loc["x", "y"] == pytest.approx(1 / 4)
    assert len(sets.union()) == 4
    table = sets.per_layer_counts()
    assert table[(table.label == "x") & (table.layer == 0)].n_selected.item() == 2
    sets.save(tmp_path)
    assert LabeledUnits.load(tmp_path) == sets
    with pytest.raises(NeurolocError, match="no units for label 'z'"):
        sets["z"]


def test_opt_mlp_token_statistics_with_batches():
    """OPT's MLP sees flattened (batch·tokens, width) activations: token sums must still work."""
    lm = wrap_model(tiny_model("opt"), tiny_tokenizer())
    stimuli = StimulusSet("ab", tuple(TEXTS["a"] + TEXTS["b"]), tuple("a" * 4 + "b" * 4), ("a", "b"))
    batched = Localizer("mlp", batch_size=4).fit(lm, stimuli)
    single = Localizer("mlp", batch_size=1).fit(lm, stimuli)
    np.testing.assert_allclose(batched.scores_, single.scores_, rtol=1e-4, atol=1e-6)
    for site, mean in single.means_.items():
        torch.testing.assert_close(batched.means_[site], mean, atol=1e-5, rtol=1e-5)


def test_class_frequency_follows_the_statistics_protocol():
    from neuroloc.studies.pos.key_neurons import ClassFrequency

    rng = np.random.default_rng(4)
    scores, labels = rng.normal(size=(30, 20)), rng.choice(["NOUN", "VERB"], size=30).tolist()
    whole = ClassFrequency(["NOUN", "VERB"], 20, 10).update(labels, scores)
    first = ClassFrequency(["NOUN", "VERB"], 20, 10).update(labels[:13], scores[:13])
    second = ClassFrequency(["NOUN", "VERB"], 20, 10).update(labels[13:], scores[13:])
    restored = ClassFrequency(["NOUN", "VERB"], 20, 10)
    restored.load_state_dict(first.state_dict())
    restored.to("cpu").merge(second)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value)


def test_a_neuroloc_01_output_folder_still_loads(lm, tmp_path):
    """0.1 wrote `condition|site|field` statistics, a `contrast` and no BOS policy (it used the
    tokenizer's defaults): such folders load, score the same and keep that policy for lesions."""
    stimuli = StimulusSet("ab", tuple(TEXTS["a"] + TEXTS["b"]), tuple("a" * 4 + "b" * 4), ("a", "b"))
    fitted = Localizer("residual", percent=5, bos="tokenizer").fit(lm, stimuli)
    fitted.save(tmp_path)
    info = json.loads((tmp_path / "localizer.json").read_text())
    info["params"].pop("settings"), info["params"].pop("score"), info["params"].pop("design"), info.pop("widths")
    info["params"].update(batch_size=32, max_tokens=None, progress=False, quantile=0.95)  # 0.1's parameters
    info["contrast"] = list(info.pop("design")["labels"])
    (tmp_path / "localizer.json").write_text(json.dumps(info))
    state = {k.split("|", 1)[1]: v for k, v in fitted.stats_.state_dict().items() if k.startswith("moments|")}
    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "stats.safetensors"))
    loaded = Localizer.load(tmp_path)
    np.testing.assert_array_equal(loaded.t_, fitted.t_)
    assert loaded.bos == "tokenizer" and loaded.units_ == fitted.units_


def test_completeness_follows_the_statistics_protocol():
    from neuroloc.localize.attribution import Completeness

    rng = np.random.default_rng(5)
    totals, deltas = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    whole = Completeness(["a", "b"])
    whole.update(totals, deltas)
    first, second = Completeness(["a", "b"]), Completeness(["a", "b"])
    first.update(totals[:4], deltas[:4])
    second.update(totals[4:], deltas[4:])
    restored = Completeness(["a", "b"])
    restored.load_state_dict(first.state_dict())
    restored.to("cpu").merge(second)
    assert restored.summary() == whole.summary()
