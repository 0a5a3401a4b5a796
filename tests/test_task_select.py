"""Task-unit scores and selection in the one score registry: average precision against scikit-learn (ties
broken by scipy's Welch t), the one-vs-rest Welch t against scipy, pooled prompt rows against a direct
forward, and the culture-neuron recipe — as a table function and as the registered attribution score — on a
made-up table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score

from neuroloc.errors import NeurolocError
from neuroloc.localize.attribution_scores import CONTROL, NUISANCE
from neuroloc.localize.localizer import Localizer
from neuroloc.localize.score_functions import SCORES, Scores, get_score
from neuroloc.models.hooks import hooks
from neuroloc.models.loading import wrap_model
from neuroloc.record.collect import collect
from neuroloc.record.recorder import Recorder
from neuroloc.record.stats import StatsStore
from neuroloc.stimuli.base import StimulusSet
from neuroloc.stimuli.design import Design
from neuroloc.studies.tasks.culnig import culnig_select, label_zscores
from tests.tiny import tiny_model, tiny_tokenizer

LABELS = ["a"] * 7 + ["b"] * 5 + ["c"] * 8
SITE = "layers.0.mlp"


def direct_features(lm, prompts, sites, pooling: str = "last") -> np.ndarray:
    """Each prompt's pooled activations from a plain forward of BOS + prompt with observing hooks (no
    Recorder, no batching): (prompts, units), sites in order."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(prompt)["input_ids"]])
        seen = {}
        with torch.no_grad(), hooks(lm.layout, observe={s: (lambda v, s=s: seen.__setitem__(s, v[0])) for s in sites}):
            lm.model(ids)
        out.append(torch.cat([seen[s][-1] if pooling == "last" else seen[s].mean(0) for s in sites]).numpy())
    return np.stack(out)


def rows_store(x: np.ndarray, labels, kind: str = "rows") -> StatsStore:
    """A store holding `x` (texts, units) as one site's statistics per label."""
    store = StatsStore()
    for label in dict.fromkeys(labels):
        picked = torch.from_numpy(x[np.array(labels) == label])
        store.update(kind, label, SITE, picked)
    return store


def test_average_precision_equals_sklearn_with_ties_broken_by_welch_t() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(LABELS), 37)).astype(np.float32)
    x[:, :5] = np.round(x[:, :5])  # many ties
    x[:, 5] = 1.0  # a constant unit
    x[:7, 6] += 3.0  # a unit that separates "a"
    x[:7, 7] += 5.0  # and another one: both have AP 1
    scores = SCORES["average_precision"](rows_store(x, LABELS), Design.one_vs_rest(["a", "b", "c"]))
    for r, label in enumerate(["a", "b", "c"]):
        y = np.array(LABELS) == label
        expected = [average_precision_score(y, x[:, u]) for u in range(x.shape[1])]
        assert np.allclose(scores.values[r], expected, rtol=1e-12, atol=1e-12)
        t = stats.ttest_ind(x[y].astype(np.float64), x[~y].astype(np.float64), equal_var=False).statistic
        assert np.allclose(scores.columns["t"][r][6:], t[6:])
    assert scores.values[0, 6] == pytest.approx(1.0) and scores.values[0, 7] == pytest.approx(1.0)
    # the tie at AP = 1 goes to the larger Welch t (unit 7), not to the lower index
    assert np.flatnonzero(scores.top(0, count=1)).tolist() == [7]
    negated = SCORES["average_precision"](rows_store(x, LABELS), Design.one_vs_rest(["a", "b", "c"]), negate=True)
    y = np.array(LABELS) == "b"
    assert np.allclose(negated.values[1], [average_precision_score(y, -x[:, u]) for u in range(37)])


def test_one_vs_rest_welch_by_its_alias_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(LABELS), 9))
    t = get_score("contrast")(rows_store(x, LABELS, "moments"), Design.one_vs_rest(["a", "b", "c"])).values
    for r, label in enumerate(["a", "b", "c"]):
        y = np.array(LABELS) == label
        assert np.allclose(t[r], stats.ttest_ind(x[y], x[~y], equal_var=False).statistic)


def test_one_label_only_is_an_error() -> None:
    with pytest.raises(NeurolocError, match="both positive and negative"):
        SCORES["average_precision"](rows_store(np.zeros((3, 2), np.float32), ["a"] * 3), Design.one_vs_rest(["a"]))


def test_recorded_prompt_rows_equal_a_direct_forward() -> None:
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    prompts = ["The quick brown fox", "1 + 2 =", "She didn't know that the keys were"]
    stimuli = StimulusSet("p", tuple(prompts), ("x", "y", "x"))
    sites = lm.layout.sites("mlp")
    for pooling in ("last", "mean"):
        recorder = Recorder(lm, sites, pooling=pooling, batch_size=2, bos="prepend")
        store = collect(recorder, stimuli, kinds=("rows",))
        direct = direct_features(lm, prompts, sites, pooling)
        for label, rows in (("x", [0, 2]), ("y", [1])):
            got = torch.cat([store.get("rows", label, s.name).values() for s in sites], dim=1).numpy()
            assert np.allclose(np.sort(got, 0), np.sort(direct[rows], 0), atol=1e-5)
    with pytest.raises(NeurolocError, match="GiB"):
        collect(Recorder(lm, sites, batch_size=2, bos="prepend"), stimuli, StatsStore(rows_limit_bytes=100),
                kinds=("rows",))


# 3 labels × 8 units of mean attributions
TABLE = np.array([
    [5.0, 1.0, 0.5, 3.0, 2.0, 0.1, 4.0, -1.0],
    [1.0, 4.0, 0.5, 3.0, 2.2, 0.2, 4.0, -1.0],
    [1.0, 1.0, 3.5, 3.0, 1.8, 0.3, 4.5, -1.0],
])
CONTROL_MEANS = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -3.0])  # unit 7 stays positive only after the control
NUISANCE_MEANS = np.array([0, 0, 0, 0, 0, 0, 9.0, 0])  # unit 6 reads names: removed with the top 1/8 = 12.5 %


def test_culnig_recipe_on_a_made_up_table() -> None:
    chosen, tables = culnig_select(TABLE, ["x", "y", "z"], k=3, control=CONTROL_MEANS, nuisance=NUISANCE_MEANS,
                                   nuisance_percent=12.5)
    after = TABLE - CONTROL_MEANS
    assert np.allclose(tables["score"], after)
    assert tables["nuisance"].tolist() == [False] * 6 + [True, False]
    # by hand: x ranks 0 (5), 3 (3), then 4 and 7 tie at 2 (the lower index wins) — unit 6 excluded
    assert chosen["x"].tolist() == [0, 3, 4]
    assert chosen["y"].tolist() == [1, 3, 4]
    # z-scores across labels: population sd, a unit equal everywhere gets 0
    z = label_zscores(after)
    manual = (after[:, 0] - after[:, 0].mean()) / after[:, 0].std()
    assert np.allclose(z[:, 0], manual) and np.all(z[:, 3] == 0) and np.all(z[:, 7] == 0)
    specific, tables = culnig_select(TABLE, ["x", "y", "z"], k=3, control=CONTROL_MEANS, nuisance=NUISANCE_MEANS,
                                     nuisance_percent=12.5, z0=1.0)
    # z by hand: unit 0 (5, 1, 1) → x 1.41; unit 4 (2, 2.2, 1.8) → y 1.22; unit 5 (.1, .2, .3) → z 1.22;
    # unit 3 and unit 7 are equal everywhere (z 0)
    for r, label in enumerate(["x", "y", "z"]):
        assert all(tables["z"][r, u] >= 1.0 for u in specific[label])
    assert specific["x"].tolist() == [0] and specific["y"].tolist() == [1, 4] and specific["z"].tolist() == [2, 5]
    assert tables["selected"].sum() == 5
    with pytest.raises(NeurolocError, match="k must be"):
        culnig_select(TABLE, ["x", "y", "z"], k=0)


def _attribution_store() -> StatsStore:
    """The made-up table as recorded attributions: per label two items whose mean is the table's row (split
    over two sites of 4 units), a control set and a nuisance set."""
    store = StatsStore()
    spread = np.array([0.5, -0.25, 1.0, 0.0, 2.0, -1.0, 0.75, 0.1])
    for label, mean in [("x", TABLE[0]), ("y", TABLE[1]), ("z", TABLE[2]), (CONTROL, CONTROL_MEANS),
                        (NUISANCE, NUISANCE_MEANS)]:
        items = torch.from_numpy(np.stack([mean + spread, mean - spread]))
        store.update_sites("attribution", label, ["layers.0.mlp", "layers.1.mlp"], [4, 4], items)
    return store


@pytest.mark.parametrize("name", ["gradxact", "ig"])
def test_the_registered_attribution_score_is_the_recipe(name) -> None:
    """The registered score on recorded attributions = the recipe on the mean table; the Localizer selects
    the same units as `culnig_select` (one selection rule)."""
    store = _attribution_store()
    design = Design.one_vs_rest(["x", "y", "z"])
    scores = SCORES[name](store, design, nuisance_percent=12.5, z0=1.0)
    _, tables = culnig_select(TABLE, ["x", "y", "z"], k=3, control=CONTROL_MEANS, nuisance=NUISANCE_MEANS,
                              nuisance_percent=12.5, z0=1.0)
    assert np.allclose(scores.values, tables["score"]) and np.allclose(scores.columns["z"], tables["z"])
    localizer = Localizer("mlp", score=name, count=3, per_kind=False,
                          options={"nuisance_percent": 12.5, "z0": 1.0}).fit_stats(store, design=design)
    for r, label in enumerate(["x", "y", "z"]):
        assert localizer.units_[label].flat_mask().numpy().tolist() == tables["selected"][r].tolist()
    with pytest.raises(NeurolocError, match="takes no option negate"):
        SCORES[name](store, design, negate=True)
    with pytest.raises(NeurolocError, match="does not make"):
        Localizer("mlp", score=name).record(None, None)


def test_frequency_aggregate_counts_items_with_the_unit_on_top() -> None:
    store = StatsStore()
    top = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    store.update("attribution", "NOUN", "layers.0.mlp", torch.ones(3, 4, dtype=torch.float64), top)
    store.update("attribution", "VERB", "layers.0.mlp", torch.ones(1, 4, dtype=torch.float64),
                 torch.tensor([[0, 0, 0, 1]], dtype=torch.bool))
    scores = SCORES["gradxact"](store, Design.one_vs_rest(["NOUN", "VERB"]), aggregate="frequency")
    assert np.allclose(scores.values, [[2 / 3, 1 / 3, 2 / 3, 0], [0, 0, 0, 1]])
    assert scores.eligible.tolist() == [[True, True, True, False], [False, False, False, True]]
    # two units tie at 2/3: the lower index first; the never-top unit is never chosen
    assert np.flatnonzero(scores.top(0, count=1)).tolist() == [0]
    assert np.flatnonzero(scores.top(0, count=4)).tolist() == [0, 1, 2]


def test_scores_without_a_tiebreak_column_are_refused() -> None:
    with pytest.raises(NeurolocError, match="break ties by column 't'"):
        Scores(np.zeros((1, 3)), ("a",), tiebreak="t")


def test_unknown_score_options_are_refused() -> None:
    """An option a score does not take is an error naming it, never dropped (the Localizer, the score itself
    and a study config)."""
    from neuroloc.pipelines.localize import LocalizeConfig
    from neuroloc.pipelines.task import TaskConfig

    with pytest.raises(NeurolocError, match="score 'average_precision' takes no option absolute"):
        Localizer("mlp", score="average_precision", absolute=True).check_params()
    with pytest.raises(NeurolocError, match="takes no option bogus"):
        Localizer("mlp", score="ap", options={"bogus": 1}).check_params()
    with pytest.raises(NeurolocError, match="takes no option quantile"):
        SCORES["welch"](rows_store(np.ones((4, 2)), ["a", "a", "b", "b"], "moments"), Design.contrast("a", "b"),
                        quantile=0.5)
    with pytest.raises(NeurolocError, match="takes no option absolute"):
        LocalizeConfig(score="average_precision", absolute=True)
    with pytest.raises(NeurolocError, match="takes no option z0"):
        TaskConfig(score="contrast", z0=1.0)


def test_selection_across_site_kinds_together() -> None:
    """`per_kind=False`: the k best units over every site kind together (scipy's Welch t on the rows), where
    the default takes k of each kind."""
    rng = np.random.default_rng(3)
    labels = ["a"] * 6 + ["b"] * 7
    rows = {"layers.0.mlp": rng.normal(size=(13, 4)), "layers.0.attn": rng.normal(size=(13, 3))}
    rows["layers.0.attn"][:6] += np.array([3.0, 0.0, 1.5])
    rows["layers.0.mlp"][:6, 2] += 2.0
    store = StatsStore()
    for site, x in rows.items():
        for label in "ab":
            store.update("moments", label, site, torch.from_numpy(x[np.array(labels) == label]))
    design = Design.contrast("a", "b")
    y = np.array(labels) == "a"
    t = np.concatenate([stats.ttest_ind(rows[s][y], rows[s][~y], equal_var=False).statistic
                        for s in ("layers.0.attn", "layers.0.mlp")])  # sites in order: attn before mlp
    joint = Localizer(["mlp", "attn"], score="welch", count=3, per_kind=False).fit_stats(store, design=design)
    assert sorted(joint.units_.flat_indices().tolist()) == sorted(np.argsort(-t)[:3].tolist())
    each = Localizer(["mlp", "attn"], score="welch", count=2).fit_stats(store, design=design)
    assert each.units_.counts() == {"layers.0.attn": 2, "layers.0.mlp": 2}
    assert len(joint.units_) == 3
