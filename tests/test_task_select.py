"""Task-unit scores and selection: average precision against scikit-learn, Welch t against scipy, pooled
prompt features against a direct forward, and the culture-neuron recipe on a made-up table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score

from neuroloc.errors import NeurolocError
from neuroloc.models.hooks import hooks
from neuroloc.models.loading import wrap_model
from neuroloc.studies.tasks.culnig import culnig_select, label_zscores
from neuroloc.studies.tasks.scores import activation_contrast_scores, average_precision_scores, prompt_features
from tests.tiny import tiny_model, tiny_tokenizer

LABELS = ["a"] * 7 + ["b"] * 5 + ["c"] * 8


def test_average_precision_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(LABELS), 37)).astype(np.float32)
    x[:, :5] = np.round(x[:, :5])  # many ties
    x[:, 5] = 1.0  # a constant unit
    x[:7, 6] += 3.0  # a unit that separates "a"
    ap = average_precision_scores(x, LABELS, ["a", "b", "c"], block=8)
    for r, label in enumerate(["a", "b", "c"]):
        y = np.array(LABELS) == label
        expected = [average_precision_score(y, x[:, u]) for u in range(x.shape[1])]
        assert np.allclose(ap[r], expected, rtol=1e-12, atol=1e-12)
    assert ap[0, 6] == pytest.approx(1.0)


def test_activation_contrast_equals_scipy_welch() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(LABELS), 9))
    t = activation_contrast_scores(x, LABELS, ["a", "b", "c"])
    for r, label in enumerate(["a", "b", "c"]):
        y = np.array(LABELS) == label
        assert np.allclose(t[r], stats.ttest_ind(x[y], x[~y], equal_var=False).statistic)


def test_one_label_only_is_an_error() -> None:
    with pytest.raises(NeurolocError, match="prompts of it and of other labels"):
        average_precision_scores(np.zeros((3, 2)), ["a"] * 3, ["a"])


def test_prompt_features_equal_a_direct_forward() -> None:
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    prompts = ["The quick brown fox", "1 + 2 =", "She didn't know that the keys were"]
    sites = lm.layout.sites("mlp")
    for pooling in ("last", "mean"):
        features = prompt_features(lm, prompts, sites, pooling=pooling, batch_size=2)
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(prompt)["input_ids"]])
            seen = {}
            with torch.no_grad(), hooks(lm.layout, observe={s: (lambda v, s=s: seen.__setitem__(s, v[0])) for s in sites}):
                lm.model(ids)
            direct = torch.cat([seen[s][-1] if pooling == "last" else seen[s].mean(0) for s in sites]).numpy()
            assert np.allclose(features[i], direct, atol=1e-5)
    with pytest.raises(NeurolocError, match="GiB"):
        prompt_features(lm, prompts, sites, max_bytes=100)


def test_culnig_recipe_on_a_made_up_table() -> None:
    # 3 labels × 8 units of mean attributions
    scores = np.array([
        [5.0, 1.0, 0.5, 3.0, 2.0, 0.1, 4.0, -1.0],
        [1.0, 4.0, 0.5, 3.0, 2.2, 0.2, 4.0, -1.0],
        [1.0, 1.0, 3.5, 3.0, 1.8, 0.3, 4.5, -1.0],
    ])
    control = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -3.0])  # unit 7 stays positive only after the control
    nuisance = np.array([0, 0, 0, 0, 0, 0, 9.0, 0])  # unit 6 reads names: removed with the top 1/8 = 12.5 %
    chosen, tables = culnig_select(scores, ["x", "y", "z"], k=3, control=control, nuisance=nuisance,
                                   nuisance_percent=12.5)
    after = scores - control
    assert np.allclose(tables["score"], after)
    assert tables["nuisance"].tolist() == [False] * 6 + [True, False]
    # by hand: x ranks 0 (5), 3 (3), then 4 and 7 tie at 2 (the lower index wins) — unit 6 excluded
    assert chosen["x"].tolist() == [0, 3, 4]
    assert chosen["y"].tolist() == [1, 3, 4]
    # z-scores across labels: population sd, a unit equal everywhere gets 0
    z = label_zscores(after)
    manual = (after[:, 0] - after[:, 0].mean()) / after[:, 0].std()
    assert np.allclose(z[:, 0], manual) and np.all(z[:, 3] == 0) and np.all(z[:, 7] == 0)
    specific, tables = culnig_select(scores, ["x", "y", "z"], k=3, control=control, nuisance=nuisance,
                                     nuisance_percent=12.5, z0=1.0)
    # z by hand: unit 0 (5, 1, 1) → x 1.41; unit 4 (2, 2.2, 1.8) → y 1.22; unit 5 (.1, .2, .3) → z 1.22;
    # unit 3 and unit 7 are equal everywhere (z 0)
    for r, label in enumerate(["x", "y", "z"]):
        assert all(tables["z"][r, u] >= 1.0 for u in specific[label])
    assert specific["x"].tolist() == [0] and specific["y"].tolist() == [1, 4] and specific["z"].tolist() == [2, 5]
    assert tables["selected"].sum() == 5
    with pytest.raises(NeurolocError, match="k must be"):
        culnig_select(scores, ["x", "y", "z"], k=0)
