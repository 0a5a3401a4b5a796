"""Reliability of unit sets on a tiny model, against independent computations: scipy's Welch t on each
fold's stimuli, localizers fitted separately on fold subsets, exhaustive enumeration of random sets, a
brute-force loop over permuted labels, and ordinary least squares."""

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from neuroloc import Localizer, NeurolocError, Recorder, StatsStore, StimulusSet
from neuroloc.localize.confounds import length_matched, length_matched_mask, partial_correlation, token_counts
from neuroloc.localize.overlap import chance_overlap, intersection_pmf
from neuroloc.localize.permutation import _Chunk, _fdr_pass, permutation_null, permuted_labels
from neuroloc.localize.reliability import (ReliabilityConfig, assess, fold_fits, held_out, parse_null, split_half,
                                           stability)
from neuroloc.models.loading import wrap_model
from neuroloc.models.untrained import untrained_model
from neuroloc.settings import RunSettings
from neuroloc.stimuli.folds import assign_folds
from neuroloc.stimuli.language import load_language_localizer
from tests.tiny import tiny_model, tiny_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"
SITES = ["residual", "mlp"]
SETTINGS = RunSettings(batch_size=16, progress=False)


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama", seed=3), tiny_tokenizer())


@pytest.fixture(scope="module")
def stimuli():
    """80 sentences and 80 non-word strings of Fedorenko et al. (2010), each pair (same item number of
    its run file) a group."""
    full = load_language_localizer(DATA)
    sentences, nonwords = full.indices("sentences")[:80], full.indices("nonwords")[:80]
    picked = full.subset(sentences + nonwords)
    return StimulusSet("language-160", picked.texts, picked.conditions, picked.contrast,
                       groups=tuple(f"item{i % 80}" for i in range(160)))


@pytest.fixture(scope="module")
def pooled(lm, stimuli):
    """Mean-pooled activations of every text from a plain Recorder (the independent reference)."""
    return _pooled(lm, stimuli.texts, "mean")


@pytest.fixture(scope="module")
def base(lm, stimuli):
    """One recording in 2 folds (buckets for the first 25 and 50 %), rows kept, top 5 % of mean-pooled units;
    tests fit other rules on its statistics without recording again."""
    localizer = Localizer(SITES, pooling="mean", percent=5, batch_size=16)
    return localizer.fit_folds(lm, stimuli, assign_folds(stimuli, 2), settings=RunSettings(batch_size=7), rows=True,
                               fractions=[0.25, 0.5])


def _refit(base, rule, store=None):
    """`base`'s sites and design with another selection rule, fitted on `store` (default: base's statistics)."""
    return Localizer(SITES, pooling="mean", **rule).fit_stats(base.stats_ if store is None else store,
                                                             design=base.design_)


def _pooled(lm, texts, pooling):
    """Every text's pooled activations, sites side by side in the localizer's unit order (float64)."""
    recorder = Recorder(lm, lm.layout.sites(SITES), pooling=pooling, batch_size=16, bos="prepend")
    out = {}
    for batch in recorder.iter_batches(texts):
        features = torch.cat([batch.features[s] for s in recorder.sites], dim=1).double().numpy()
        for row, (text, _) in enumerate(batch.rows):
            out[text] = features[row]
    return np.stack([out[i] for i in range(len(texts))])


def _store(pooled_rows, conditions, sites, widths):
    """Moments built directly from pooled rows, one label at a time."""
    store = StatsStore()
    conditions = np.asarray(conditions)
    bounds = np.cumsum([0, *widths])
    for label in sorted(set(conditions)):
        rows = torch.from_numpy(pooled_rows[conditions == label])
        for i, site in enumerate(sites):
            store.update("moments", label, site, rows[:, bounds[i]:bounds[i + 1]])
    return store


def _jaccard(a, b):
    return (a & b).sum() / (a | b).sum()


def test_fold_statistics_equal_scipy_per_fold(lm, stimuli, pooled):
    localizer = Localizer(SITES, pooling="mean", percent=5, folds=3, batch_size=16).fit(lm, stimuli)
    folds, conditions = localizer.folds_.folds, np.asarray(stimuli.conditions)
    everything = scipy.stats.ttest_ind(pooled[conditions == "sentences"], pooled[conditions == "nonwords"],
                                       equal_var=False)
    np.testing.assert_allclose(localizer.t_, everything.statistic, rtol=1e-6)  # the fit itself: on every stimulus
    for k, fit in enumerate(fold_fits(localizer)):
        a = pooled[(folds == k) & (conditions == "sentences")]
        b = pooled[(folds == k) & (conditions == "nonwords")]
        expected = scipy.stats.ttest_ind(a, b, equal_var=False)
        np.testing.assert_allclose(fit.t_, expected.statistic, rtol=1e-6)
        np.testing.assert_allclose(fit.p_, expected.pvalue, rtol=1e-6, atol=1e-300)


def test_kept_rows_are_the_pooled_rows_in_stimulus_order(lm, stimuli, pooled, base):
    rows = base.fold_stats_.rows
    assert rows.texts.tolist() == list(range(len(stimuli)))
    np.testing.assert_allclose(rows.values.double().numpy(), pooled, rtol=1e-5, atol=1e-6)
    rebuilt = _refit(base, {"percent": 5}, rows.store(stimuli.conditions, [s.name for s in base.sites_]))
    np.testing.assert_allclose(rebuilt.t_, base.t_, rtol=1e-5)
    with pytest.raises(NeurolocError, match="run settings"):
        base.clone().fit_folds(lm, stimuli, assign_folds(stimuli, 2), settings=RunSettings(bos="none"), rows=False)
    with pytest.raises(NeurolocError, match="partial_fit"):
        Localizer(SITES, folds=2).partial_fit(lm, stimuli)


@pytest.fixture(scope="module")
def halves(lm, stimuli, base):
    """Localizers fitted separately on the stimuli of each of base's two folds (two more recordings)."""
    folds = base.folds_.folds
    return [Localizer(SITES, pooling="mean", batch_size=16).fit(lm, stimuli.subset(np.flatnonzero(folds == k)))
            for k in (0, 1)]


@pytest.mark.parametrize("rule", [dict(percent=5), dict(count=3, per_layer=True), dict(percent=20, fdr=0.2)])
def test_split_half_equals_two_independent_fits(base, halves, rule):
    localizer = _refit(base, rule)
    localizer.folds_, localizer.fold_stats_ = base.folds_, base.fold_stats_  # fold statistics do not depend on the rule
    a, b = (_refit(half, rule, half.stats_).get_support() for half in halves)
    table = split_half(localizer)
    overall = table[table.site == "all"].iloc[0]
    assert overall.n_a == a.sum() and overall.n_b == b.sum() and overall.n_both == (a & b).sum()
    assert overall.jaccard == pytest.approx(_jaccard(a, b))
    assert overall.dice == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert overall.r == pytest.approx(np.corrcoef(halves[0].t_, halves[1].t_)[0, 1])
    assert overall.r_spearman_brown == pytest.approx(2 * overall.r / (1 + overall.r))
    start = 0
    for site, width in zip(localizer.sites_, localizer.widths_):
        row = table[table.site == site.name].iloc[0]
        part = slice(start, start + width)
        assert row.n_both == (a[part] & b[part]).sum() and row.n_units == width
        start += width


def test_split_half_with_three_folds_has_every_pair_and_their_mean(lm, stimuli):
    localizer = Localizer(SITES, pooling="mean", percent=10, folds=3, batch_size=16).fit(lm, stimuli)
    table = split_half(localizer)
    overall = table[table.site == "all"]
    pairs = overall.dropna(subset=["fold_a"])
    assert sorted(zip(pairs.fold_a, pairs.fold_b)) == list(combinations(range(3), 2))
    mean = overall[overall.fold_a.isna()].iloc[0]
    assert mean.jaccard == pytest.approx(pairs.jaccard.mean())
    assert (pairs.r_spearman_brown == 3 * pairs.r / (1 + 2 * pairs.r)).all()


def test_chance_overlap_equals_exhaustive_enumeration():
    sizes, counts_a, counts_b = [5, 4], [2, 1], [3, 2]
    universe = [list(range(5)), list(range(5, 9))]
    sets_a = [set(x) | set(y) for x in combinations(universe[0], 2) for y in combinations(universe[1], 1)]
    sets_b = [set(x) | set(y) for x in combinations(universe[0], 3) for y in combinations(universe[1], 2)]
    overlaps = np.array([len(a & b) for a in sets_a for b in sets_b])
    expected = np.bincount(overlaps, minlength=4) / overlaps.size
    np.testing.assert_allclose(intersection_pmf(sizes, counts_a, counts_b), expected[:4], atol=1e-12)
    chance = chance_overlap(sizes, counts_a, counts_b, observed=2)
    jaccards = overlaps / (3 + 5 - overlaps)
    assert chance.jaccard == pytest.approx(jaccards.mean())
    assert chance.dice == pytest.approx((2 * overlaps / 8).mean())
    assert chance.p == pytest.approx((overlaps >= 2).mean())
    assert chance.jaccard_low == pytest.approx(np.quantile(jaccards, 0.025, method="inverted_cdf"))
    assert chance.jaccard_high == pytest.approx(np.quantile(jaccards, 0.975, method="inverted_cdf"))


def test_permuted_labels_respect_groups():
    codes = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    plain = permuted_labels(codes, None, 50, seed=1)
    assert (np.sort(plain, axis=1) == np.sort(codes)).all()
    assert np.array_equal(plain, permuted_labels(codes, None, 50, seed=1))
    assert len({tuple(p) for p in plain}) > 10
    pure = ["g0", "g0", "g1", "g2", "g2", "g3", "g3", "g4"]  # every group holds one label: whole groups move
    whole = permuted_labels(codes, pure, 50, seed=2)
    for row in whole:
        assert row[0] == row[1] and row[3] == row[4] and row[5] == row[6]
    mixed = ["p0", "p1", "p2", "p0", "p1", "p2", "p3", "p3"]  # pairs of one sentence and one non-word
    within = permuted_labels(codes, mixed, 50, seed=3)
    for row in within:
        for pair in ((0, 3), (1, 4), (2, 5), (6, 7)):
            assert sorted(row[list(pair)]) == sorted(codes[list(pair)])
    assert len({tuple(p) for p in within}) > 5


@pytest.mark.parametrize("groups", ["none", "pairs", "blocks"])
@pytest.mark.parametrize("rule", [dict(percent=10, fdr=0.05), dict(count=4, per_layer=True)])
def test_permutation_null_equals_brute_force(base, stimuli, groups, rule):
    """Stimuli exchangeable one by one, within (sentence, non-word) pairs, or as blocks of 10 of one label."""
    grouping = {"none": None, "pairs": stimuli.groups, "blocks": tuple(f"block{i // 10}" for i in range(160))}
    stim = StimulusSet("toy", stimuli.texts, stimuli.conditions, stimuli.contrast, groups=grouping[groups])
    localizer = _refit(base, rule)
    rows = base.fold_stats_.rows
    null = permutation_null(localizer, rows, stim, n=20, seed=5, alpha=0.05)
    labels = np.array(["sentences", "nonwords"])
    codes = (np.asarray(stim.conditions) == "nonwords").astype(int)
    expected = []
    for permuted in permuted_labels(codes, stim.groups, 20, seed=5):
        store = _store(rows.values.double().numpy(), labels[permuted], [s.name for s in base.sites_], base.widths_)
        fit = _refit(base, rule, store)
        mask = fit.get_support()
        lowest = fit.t_[mask].min() if mask.any() else np.nan
        expected.append((mask.sum(), ((fit.p_fdr_ <= 0.05) & (fit.t_ > 0)).sum(), lowest, fit.t_.max()))
    expected = np.array(expected, dtype=float)
    got = null.null
    np.testing.assert_array_equal(got.n_selected, expected[:, 0])
    np.testing.assert_array_equal(got.n_fdr, expected[:, 1])
    np.testing.assert_allclose(got.threshold, expected[:, 2], rtol=1e-8)
    np.testing.assert_allclose(got.max_score, expected[:, 3], rtol=1e-8)
    assert expected[:, 3].std() > 0 and (expected[:, 1].std() > 0 or groups == "pairs")  # not all zeros
    summary = null.summary.iloc[0]
    assert summary.n_selected == localizer.get_support().sum()
    assert summary.n_fdr == ((localizer.p_fdr_ <= 0.05) & (localizer.t_ > 0)).sum()
    assert summary.n_fwer == (localizer.t_ > np.quantile(expected[:, 3], 0.95, method="higher")).sum()
    statistic = expected[:, 0] if "fdr" in rule else expected[:, 2]
    observed = summary.n_selected if "fdr" in rule else localizer.t_[localizer.get_support()].min()
    assert summary.p == pytest.approx((1 + (statistic >= observed).sum()) / 21)


def test_fdr_pass_equals_scipy_benjamini_hochberg_per_row():
    """Rows from pure noise (few or no passing units) to strong effects (most units pass), unequal Welch df."""
    rng = np.random.default_rng(0)
    rows, units = 40, 500
    shift = np.linspace(0.0, 4.0, rows)[:, None] * (rng.random((rows, units)) < np.linspace(0, 1, rows)[:, None])
    t = rng.standard_normal((rows, units)) + shift
    t[3, :5] = np.inf  # constant units with a difference: p = 0
    share_a, share_b = rng.uniform(0.1, 2.0, (rows, units)), rng.uniform(0.1, 2.0, (rows, units))
    n_a, n_b = rng.integers(5, 30, rows).astype(float), rng.integers(5, 30, rows).astype(float)
    chunk = _Chunk(t, t, share_a, share_b, n_a, n_b)
    for q in (0.05, 0.2):
        got = _fdr_pass(chunk, q)
        for r in range(rows):
            se2 = share_a[r] + share_b[r]
            dof = se2 ** 2 / (share_a[r] ** 2 / (n_a[r] - 1) + share_b[r] ** 2 / (n_b[r] - 1))
            p = 2 * scipy.stats.t.sf(np.abs(t[r]), dof)
            np.testing.assert_array_equal(got[r], scipy.stats.false_discovery_control(p) <= q)
        assert 0 < got.sum() < got.size and not got[0].any()


def test_permutation_null_refuses_scores_not_built_from_rows(base, stimuli):
    localizer = _refit(base, {"score": "activation_probability"})
    with pytest.raises(NeurolocError, match="permutation null"):
        permutation_null(localizer, base.fold_stats_.rows, stimuli, n=5, seed=0, alpha=0.05)


def test_held_out_effect_is_that_of_the_training_fit_on_the_held_out_fold(base, stimuli, pooled):
    table = held_out(base, stimuli, draws=30, seed=0)
    folds, conditions = base.folds_.folds, np.asarray(stimuli.conditions)
    names = [s.name for s in base.sites_]
    for k in (0, 1):
        train = folds != k
        fit = _refit(base, {"percent": 5}, _store(pooled[train], conditions[train], names, base.widths_))
        mask = fit.get_support()
        a = pooled[(folds == k) & (conditions == "sentences")]
        b = pooled[(folds == k) & (conditions == "nonwords")]
        t = scipy.stats.ttest_ind(a, b, equal_var=False).statistic
        pooled_sd = np.sqrt(((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1)) / (len(a) + len(b) - 2))
        d = (a.mean(0) - b.mean(0)) / pooled_sd
        roi = scipy.stats.ttest_ind(a[:, mask].mean(1), b[:, mask].mean(1), equal_var=False).statistic
        row = table[table.fold == k].iloc[0]
        assert row.n_units == mask.sum()
        assert row.t == pytest.approx(t[mask].mean(), rel=1e-6)
        assert row.d == pytest.approx(d[mask].mean(), rel=1e-6)
        assert row.mean_difference == pytest.approx((a.mean(0) - b.mean(0))[mask].mean(), rel=1e-5)
        assert row.roi_t == pytest.approx(roi, rel=1e-4)
        assert row.t_random_low <= row.t_random <= row.t_random_high
    mean = table[table.fold.isna()].iloc[0]
    assert mean.d == pytest.approx(table.d.iloc[:2].mean()) and np.isnan(mean.p_random)


def test_stability_subset_equals_a_fit_on_the_first_stimuli(base, stimuli, pooled):
    table = stability(base, stimuli, [0.25, 0.5])
    positions, full = base.folds_.positions(), base.get_support()
    conditions = np.asarray(stimuli.conditions)
    for fraction in (0.25, 0.5):
        first = positions < fraction
        store = _store(pooled[first], conditions[first], [s.name for s in base.sites_], base.widths_)
        mask = _refit(base, {"percent": 5}, store).get_support()
        row = table[table.fraction == fraction].iloc[0]
        assert row.n_stimuli == first.sum()
        assert row.jaccard == pytest.approx(_jaccard(mask, full))
        assert row.recall == pytest.approx((mask & full).sum() / full.sum())
    assert table[table.fraction == 1.0].jaccard.iloc[0] == 1.0


def test_untrained_model_is_deterministic_per_seed(lm):
    state = torch.random.get_rng_state()
    first, again, other = untrained_model(lm, 0), untrained_model(lm, 0), untrained_model(lm, 1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global random state is untouched
    names = [n for n, p in lm.model.named_parameters() if p.std() > 0]
    for name in names:
        weights = [dict(m.model.named_parameters())[name] for m in (first, again, other, lm)]
        assert torch.equal(weights[0], weights[1])
        assert not torch.equal(weights[0], weights[2]) and not torch.equal(weights[0], weights[3])
    assert type(first.model) is type(lm.model) and first.tokenizer is lm.tokenizer
    assert first.identity["weights"] == "untrained" and first.identity["init_seed"] == 0
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert not torch.allclose(first.model(ids).logits, lm.model(ids).logits)
        assert torch.equal(first.model(ids).logits, again.model(ids).logits)


def test_token_counts_and_length_matching(lm, stimuli, base, pooled):
    counts = token_counts(lm.tokenizer, stimuli, settings=SETTINGS)
    expected = [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in stimuli.texts]
    assert counts.tolist() == expected
    conditions = np.asarray(stimuli.conditions)
    order = np.arange(len(stimuli))[::-1]
    keep = length_matched_mask(stimuli, counts, ["sentences", "nonwords"], order)
    for n in np.unique(counts):
        cells = [(conditions == label) & (counts == n) for label in ("sentences", "nonwords")]
        assert (keep & cells[0]).sum() == (keep & cells[1]).sum() == min(cells[0].sum(), cells[1].sum())
        for cell in cells:  # the kept ones come first by `order`
            if (keep & cell).any() and (~keep & cell).any():
                assert order[keep & cell].max() < order[~keep & cell].min()
    table, kept = length_matched(base, base.fold_stats_.rows, stimuli, counts, order)
    assert np.array_equal(kept, keep)
    store = _store(pooled[keep], conditions[keep], [s.name for s in base.sites_], base.widths_)
    refit = _refit(base, {"percent": 5}, store)
    row = table.iloc[0]
    assert row.n_kept == keep.sum()
    assert row.jaccard == pytest.approx(_jaccard(refit.get_support(), base.get_support()))


def test_partial_correlation_equals_least_squares():
    rng = np.random.default_rng(0)
    n = 60
    length = rng.integers(5, 20, n).astype(float)
    condition = (rng.random(n) < 0.5).astype(float)
    x = np.stack([0.3 * length + condition + rng.normal(size=n), 0.5 * length + rng.normal(size=n)], axis=1)
    got = partial_correlation(torch.from_numpy(x), torch.from_numpy(condition), torch.from_numpy(length)).numpy()
    design = np.stack([np.ones(n), condition, length], axis=1)
    for unit in range(2):
        beta, residual, *_ = np.linalg.lstsq(design, x[:, unit], rcond=None)
        sigma2 = residual[0] / (n - 3)
        t = beta[1] / np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[1, 1])
        assert got[unit] == pytest.approx(t / np.sqrt(t**2 + n - 3))


def test_parse_null():
    assert parse_null("untrained") == (0,)
    assert parse_null("untrained:1,2,3") == (1, 2, 3)
    assert ReliabilityConfig(untrained="untrained:4").untrained == (4,)
    with pytest.raises(NeurolocError, match="cannot read"):
        parse_null("shuffled")


def _fake_split(stimuli, seed):
    """Only the sentences, split at random into two fake conditions."""
    sentences = stimuli.texts_of("sentences")
    fake = np.where(np.random.default_rng(seed).permutation(len(sentences)) % 2 == 0, "A", "B")
    return StimulusSet("null", tuple(sentences), tuple(fake), ("A", "B"))


def test_fdr_units_of_random_splits_occur_at_the_permutation_null_rate(lm, stimuli):
    """Over 150 random splits of the sentences into two fake conditions, the share with any FDR-selected
    unit is what the permutation null of one split predicts (binomial test)."""
    split = _fake_split(stimuli, 0)
    localizer = Localizer(SITES, pooling="mean", percent=5, batch_size=16)
    localizer.fit_folds(lm, split, assign_folds(split, 2), settings=SETTINGS, rows=True)
    rows, names = localizer.fold_stats_.rows, [s.name for s in localizer.sites_]
    null = permutation_null(localizer, rows, split, n=300, seed=1, alpha=0.05).null
    rate = (null.n_fdr > 0).mean()
    hits = 0
    for seed in range(100, 250):
        fake = np.asarray(_fake_split(stimuli, seed).conditions)
        fit = Localizer(SITES, pooling="mean", percent=5).fit_stats(rows.store(fake, names), design=localizer.design_)
        hits += int(((fit.p_fdr_ <= 0.05) & (fit.t_ > 0)).any())
    assert 0 < rate < 0.2
    assert scipy.stats.binomtest(hits, 150, rate).pvalue > 0.001


def test_null_contrast_is_at_chance_and_the_real_contrast_is_not(lm, stimuli, tmp_path):
    """One fake split (seed 2; about 3 % of random splits show FDR units, as the test above measures)."""
    config = ReliabilityConfig(permutations=200, random_sets=50, stability=(0.5,))
    null = assess(lm, _fake_split(stimuli, 2), Localizer(SITES, pooling="mean", percent=10, batch_size=16),
                  config, settings=SETTINGS).summary.iloc[0]
    assert null.split_half_jaccard <= null.split_half_jaccard_chance_high and null.split_half_p_overlap > 0.05
    assert null.n_fdr <= null.n_fdr_null_mean + 1
    assert null.permutation_p > 0.05
    assert null.held_out_d < null.held_out_d_random + 0.2
    real = assess(lm, stimuli, Localizer(SITES, pooling="mean", percent=10, batch_size=16),
                  config.replace(untrained=(0,)), settings=SETTINGS)
    summary = real.summary.iloc[0]
    assert summary.split_half_jaccard > summary.split_half_jaccard_chance_high and summary.split_half_p_overlap < 0.01
    assert summary.permutation_p < 0.01 and summary.n_fdr > null.n_fdr
    assert summary.held_out_d > real.tables["held_out"].d_random_high.max()
    real.save(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "reliability.csv" in written and "folds.csv" in written and "reliability_permutation.csv" in written
    assert set(real.tables) >= {"split_half", "held_out", "stability", "permutation", "permutation_null",
                                "token_counts", "length_explained", "untrained", "untrained_layers"}


@pytest.fixture(scope="module")
def three_labels(stimuli):
    """Sentences, non-words and the sentences' words in reverse order: a one-vs-rest design."""
    sentences = stimuli.texts_of("sentences")[:50]
    reversed_ = [" ".join(t.split()[::-1]) for t in sentences]
    texts = tuple(sentences) + tuple(stimuli.texts_of("nonwords")[:50]) + tuple(reversed_)
    return StimulusSet("three", texts, ("sentences",) * 50 + ("nonwords",) * 50 + ("reversed",) * 50)


def test_one_vs_rest_permutation_null_equals_brute_force_per_label(lm, three_labels):
    localizer = Localizer(SITES, score="one_vs_rest_welch", design="one-vs-rest", pooling="mean", percent=10, fdr=0.05,
                          batch_size=16)
    localizer.fit_folds(lm, three_labels, assign_folds(three_labels, 2), settings=SETTINGS, rows=True)
    rows = localizer.fold_stats_.rows
    null = permutation_null(localizer, rows, three_labels, n=10, seed=2, alpha=0.05)
    assert null.summary.label.tolist() == list(localizer.labels_) == ["nonwords", "reversed", "sentences"]
    labels = np.array(sorted(set(three_labels.conditions)))
    codes = np.searchsorted(labels, three_labels.conditions)
    names = [s.name for s in localizer.sites_]
    for p, permuted in enumerate(permuted_labels(codes, None, 10, seed=2)):
        store = _store(rows.values.double().numpy(), labels[permuted], names, localizer.widths_)
        fit = localizer.clone().fit_stats(store, design=localizer.design_)
        for row, label in enumerate(fit.labels_):
            got = null.null[(null.null.label == label) & (null.null.permutation == p + 1)].iloc[0]
            assert got.n_selected == fit.get_support()[row].sum()
            assert got.max_score == pytest.approx(fit.scores_[row].max(), rel=1e-8)


def test_assess_reports_every_label_and_runs_without_rows_for_lape(lm, three_labels):
    config = ReliabilityConfig(permutations=20, random_sets=10, stability=(0.5,))
    welch = assess(lm, three_labels, Localizer(SITES, score="one_vs_rest_welch", design="one-vs-rest", pooling="mean",
                                               percent=10, batch_size=16), config, settings=SETTINGS)
    assert welch.summary.label.tolist() == ["nonwords", "reversed", "sentences"]
    for name in ("split_half", "held_out", "stability", "permutation", "length_explained"):
        assert set(welch.tables[name].label) == {"nonwords", "reversed", "sentences"}
    lape = assess(lm, three_labels, Localizer(["mlp"], score="lape", design="groups", pooling="tokens", percent=5,
                                              batch_size=16), config, settings=SETTINGS)
    assert "permutation" not in lape.tables and "length_explained" not in lape.tables
    assert set(lape.tables["split_half"].label) == {"nonwords", "reversed", "sentences"}
    assert lape.tables["held_out"].score.notna().any()
