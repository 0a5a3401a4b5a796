"""The atlas: overlap against a hand enumeration, the dissociation statistics and verdicts on results whose
answer is known, and one small end-to-end run (a lesion cell equals `neuroloc lesion`'s, CLI = API, resume)."""

from __future__ import annotations

from itertools import combinations, product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from neuroloc import AtlasConfig, LesionConfig, NeurolocError, RunSettings, UnitSet, atlas, run, wrap_model
from neuroloc.cli import app
from neuroloc.interrupts import Interrupted
from neuroloc.models.layout import Site
from neuroloc.pipelines import lesion as lesion_module
from neuroloc.studies.atlas import (chance_table, crawford_howell, dissociation_cells, dissociation_verdicts,
                                    network_overlap)
from tests.test_run_language import write_fedorenko
from tests.test_seams import write_data
from tests.tiny import tiny_model, tiny_tokenizer

BENCHMARKS = "blimp;perplexity;syntaxgym"
OWN = "language:blimp,md:perplexity,tom:syntaxgym"
SETTINGS = RunSettings(batch_size=8, progress=False)


# ------------------------------------------------------------------------------------------ overlap
def _convolve(per_site):
    """The distribution of a sum of independent counts (one {value: probability} per site)."""
    pmf = {0: 1.0}
    for site in per_site:
        new = {}
        for (i, p), (j, q) in product(pmf.items(), site.items()):
            new[i + j] = new.get(i + j, 0.0) + p * q
        pmf = new
    return pmf


def _site_pmf(width, a, b):
    """Every pair of sets of a and b units among `width`: the distribution of their shared count."""
    counts = {}
    for set_a, set_b in product(combinations(range(width), a), combinations(range(width), b)):
        shared = len(set(set_a) & set(set_b))
        counts[shared] = counts.get(shared, 0) + 1
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def test_overlap_and_its_chance_match_a_hand_enumeration():
    sites, widths = [Site(0, "residual"), Site(1, "residual")], [5, 6]
    a = np.zeros(11, dtype=bool)
    b = np.zeros(11, dtype=bool)
    a[[0, 1, 5, 6, 7]] = True       # site 0: 2 units, site 1: 3
    b[[1, 2, 6, 7]] = True          # site 0: 2, site 1: 2; shared: 1, 6, 7
    units = {"x": UnitSet.from_flat(a, sites, widths), "y": UnitSet.from_flat(b, sites, widths)}
    scores = {"x": np.arange(11.0), "y": np.arange(11.0) ** 2}
    pairs, per_site = network_overlap(units, scores)
    row = pairs.iloc[0]
    assert (row.network_a, row.network_b, row.n_a, row.n_b, row.n_both) == ("x", "y", 5, 4, 3)
    assert row.jaccard == pytest.approx(3 / 6) and row.dice == pytest.approx(2 * 3 / 9)
    pmf = _convolve([_site_pmf(5, 2, 2), _site_pmf(6, 3, 2)])
    assert row.p_overlap == pytest.approx(sum(p for k, p in pmf.items() if k >= 3))
    assert row.jaccard_chance == pytest.approx(sum(p * k / (9 - k) for k, p in pmf.items()))
    assert row.r == pytest.approx(np.corrcoef(np.arange(11.0), np.arange(11.0) ** 2)[0, 1])
    assert list(per_site.n_both) == [1, 2] and list(per_site.layer) == [0, 1]


def test_networks_on_different_sites_are_refused():
    x = UnitSet.from_flat(np.ones(4, dtype=bool), [Site(0, "residual")], [4])
    y = UnitSet.from_flat(np.ones(4, dtype=bool), [Site(0, "mlp")], [4])
    with pytest.raises(NeurolocError, match="different sites"):
        network_overlap({"x": x, "y": y}, {"x": np.zeros(4), "y": np.zeros(4)})


# ------------------------------------------------------------------------------------- dissociation
CONTROL_VALUES = [0.80, 0.82, 0.78, 0.81, 0.79]  # mean 0.80, sd 0.0158
# target values: A hurts a; B hurts b; C hurts c and a; nobody hurts the rest
TARGETS = {("A", "bench_a"): 0.50, ("B", "bench_b"): 0.50, ("C", "bench_c"): 0.50, ("C", "bench_a"): 0.55}


def synthetic_results(extra: dict | None = None) -> pd.DataFrame:
    rows = []
    benches = ["bench_a", "bench_b", "bench_c"]
    for bench in benches:
        rows.append(("", "intact", 0, bench, "overall", "accuracy", 0.80))
    for network, bench in product("ABC", benches):
        value = {**TARGETS, **(extra or {})}.get((network, bench), 0.80)
        rows.append((network, "target", 0, bench, "overall", "accuracy", value))
        for kind in ("random", "magnitude"):
            rows += [(network, kind, s, bench, "overall", "accuracy", v) for s, v in enumerate(CONTROL_VALUES)]
    return pd.DataFrame(rows, columns=["network", "condition", "seed", "benchmark", "subset", "metric", "value"])


def test_cells_are_z_against_the_controls_with_crawford_howell_p_and_bh_q():
    cells = dissociation_cells(synthetic_results(), list("ABC"), ["bench_a", "bench_b", "bench_c"],
                               ["random", "magnitude"], alpha=0.05)
    sd = np.std(CONTROL_VALUES, ddof=1)
    cell = cells[(cells.network == "A") & (cells.benchmark == "bench_a")].iloc[0]
    assert cell.z_random == pytest.approx((0.80 - 0.50) / sd) and cell.damage == pytest.approx(0.30)
    # Crawford & Howell: the case against n controls is a t on n-1 df scaled by sqrt((n+1)/n)
    assert cell.p_random == pytest.approx(stats.t.sf((0.80 - 0.50) / (sd * np.sqrt(6 / 5)), 4))
    np.testing.assert_allclose(cells.q_random, stats.false_discovery_control(cells.p_random, method="bh"))
    significant = set(zip(cells.network[cells.significant], cells.benchmark[cells.significant]))
    assert significant == set(TARGETS)


def test_identical_controls_have_no_spread_so_no_z():
    """Three control sets scoring the same accuracy (a coarse benchmark): sd exactly 0, z undefined, the cell
    not significant — not a z of 1e15 from the float mean's rounding (seen on Gemma-3-270m: BLiMP 51/67 three times)."""
    results = synthetic_results()
    same = (results.network == "A") & (results.benchmark == "bench_a") & (results.condition == "random")
    results.loc[same, "value"] = 54 / 67
    assert np.std(results.loc[same, "value"].to_numpy(), ddof=1) > 0  # what the float mean leaves
    cells = dissociation_cells(results, list("ABC"), ["bench_a", "bench_b", "bench_c"], ["random", "magnitude"],
                               alpha=0.05)
    cell = cells[(cells.network == "A") & (cells.benchmark == "bench_a")].iloc[0]
    assert cell.random_sd == 0 and np.isnan(cell.z_random) and np.isnan(cell.p_random)
    assert not cell.significant and cell.z_magnitude > 0


def test_crawford_howell_matches_the_prediction_interval_by_simulation():
    rng = np.random.default_rng(0)
    controls = rng.normal(size=(200_000, 4))
    case = rng.normal(size=200_000)
    z = (controls.mean(1) - case) / controls.std(1, ddof=1)
    assert np.mean(crawford_howell(z, np.full(z.size, 4)) <= 0.05) == pytest.approx(0.05, abs=0.003)


def test_verdicts_double_single_and_untestable():
    cells = dissociation_cells(synthetic_results(), list("ABC"), ["bench_a", "bench_b", "bench_c"],
                               ["random", "magnitude"], alpha=0.05)
    own = {"A": "bench_a", "B": "bench_b", "C": "bench_c"}
    verdicts = dissociation_verdicts(cells, own, "random").set_index(["network_a", "network_b"])
    assert verdicts.loc[("A", "B"), "verdict"] == "double"
    # C's lesion also hurts A's benchmark: only C's side holds
    assert verdicts.loc[("A", "C"), ["a_side", "b_side", "verdict"]].tolist() == [False, True, "single"]
    assert verdicts.loc[("B", "C"), "verdict"] == "double"
    # a magnitude-matched control set that hurts as much as B's units: B's cell is no longer significant
    spoiled = synthetic_results()
    spoiled.loc[(spoiled.network == "B") & (spoiled.benchmark == "bench_b") & (spoiled.condition == "magnitude"),
                "value"] = [0.50, 0.52, 0.48, 0.51, 0.49]
    cells = dissociation_cells(spoiled, list("ABC"), ["bench_a", "bench_b", "bench_c"], ["random", "magnitude"],
                               alpha=0.05)
    verdicts = dissociation_verdicts(cells, own, "random").set_index(["network_a", "network_b"])
    assert verdicts.loc[("A", "B"), "verdict"] == "single"
    same = dissociation_verdicts(cells, {"A": "bench_a", "B": "bench_a"}, "random")
    assert same.verdict.tolist() == ["untestable"] and "both networks' benchmark" in same.reason[0]


def test_a_benchmark_at_chance_is_marked_never_significant_and_untestable():
    results = synthetic_results()
    intact = results[results.condition == "intact"]
    chance_rows = [(n, c, s, "bench_a", "overall", m, v) for (n, c, s) in intact[intact.benchmark == "bench_a"][
        ["network", "condition", "seed"]].itertuples(index=False) for m, v in (("chance", 0.75), ("n_items", 40))]
    results = pd.concat([results, pd.DataFrame(chance_rows, columns=results.columns)], ignore_index=True)
    chance = chance_table(results[results.condition == "intact"], ["bench_a", "bench_b"], 0.05)
    # 32 of 40 at chance 0.75: binomial P(X >= 32) = 0.27
    assert chance.set_index("benchmark").loc["bench_a", "pvalue"] == pytest.approx(
        stats.binomtest(32, 40, 0.75, alternative="greater").pvalue)
    assert chance.above_chance.tolist()[0] is False and pd.isna(chance.above_chance.tolist()[1])
    cells = dissociation_cells(results, list("ABC"), ["bench_a", "bench_b", "bench_c"], ["random"], alpha=0.05)
    a = cells[cells.benchmark == "bench_a"]
    assert a.intact_chance.all() and not a.significant.any() and (a.z_random.iloc[0] > 5)
    verdicts = dissociation_verdicts(cells, {"A": "bench_a", "B": "bench_b"}, "random")
    assert verdicts.verdict.tolist() == ["untestable"] and "bench_a is at chance" in verdicts.reason[0]


def test_perplexity_damage_is_an_increase():
    rows = [("", "intact", 0, "perplexity", "t", "perplexity", 10.0), ("A", "target", 0, "perplexity", "t",
                                                                       "perplexity", 20.0)]
    rows += [("A", "random", s, "perplexity", "t", "perplexity", v) for s, v in enumerate([10.0, 11.0, 12.0])]
    results = pd.DataFrame(rows, columns=["network", "condition", "seed", "benchmark", "subset", "metric", "value"])
    cell = dissociation_cells(results, ["A"], ["perplexity"], ["random"], alpha=0.05).iloc[0]
    assert cell.z_random == pytest.approx((20.0 - 11.0) / 1.0) and cell.damage == pytest.approx(10.0)


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("fields, message", [
    ({"networks": "language,language"}, "name each network once"),
    ({"own": "md:blimpish"}, "blimpish is not among --benchmarks"),
    ({"own": "md"}, "NETWORK:BENCHMARK"),
    ({"n_controls": 1}, "--controls.*1 is not allowed; give an integer ≥ 2"),
    ({"networks": "nonsense"}, "'nonsense' is not a localizer"),
    ({"folds": 1}, "--folds: 1 is not allowed; give 0"),
])
def test_bad_settings_are_one_line_naming_the_flag(fields, message):
    with pytest.raises(NeurolocError, match=message):
        AtlasConfig(**fields)


def test_full_changes_only_fields_left_at_their_defaults():
    full = AtlasConfig(full=True, n_controls=4)
    assert full.n_controls == 4 and {b.name for b in full.benchmarks} == {"blimp", "syntaxgym", "perplexity",
                                                                          "reasoning", "theory_of_mind"}
    assert all(not b.options for b in full.benchmarks) and AtlasConfig(full=True).n_controls == 5


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    data = write_data(root / "data")
    write_fedorenko(data / "fedorenko2010")
    model_dir = root / "model"
    long_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    out = root / "cli"
    done = CliRunner().invoke(app, ["atlas", "--model", str(model_dir), "--data", str(data), "--benchmarks",
                                    BENCHMARKS, "--own-benchmarks", OWN, "--percent", "5", "--controls", "2",
                                    "--batch-size", "8", "--dtype", "float32", "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    return {"data": str(data), "model": str(model_dir), "out": out}


def long_model():
    """The tiny llama reading the false-belief stories whole (~220 tokens in the tiny tokenizer)."""
    model = tiny_model("llama")
    model.config.max_position_embeddings = 512  # rotary positions: no table to grow
    return model


def fresh_lm():
    return wrap_model(long_model(), tiny_tokenizer())


def api(setup, **options):
    return atlas(fresh_lm(), benchmarks=BENCHMARKS, own=OWN, data=setup["data"], percent=5.0, n_controls=2,
                 settings=SETTINGS, **options)


def test_the_cli_writes_every_table_and_figure_and_equals_the_api(setup):
    out: Path = setup["out"]
    for name in ("overlap.csv", "overlap_sites.csv", "dissociation.csv", "verdicts.csv", "chance.csv",
                 "lesion_results.csv", "layers.csv", "reliability.csv", "md/reliability_split_half.csv", "overlap.png",
                 "dissociation.png", "layers.png", "report.html", "manifest.json", "language/manifest.json",
                 "md/units.safetensors", "tom/report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "Dissociation matrix" in html and "Overlap" in html and "Dissociations" in html
    result = api(setup)
    for name, table in result.tables.items():
        written = pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])
        expected = pd.read_csv(pd.io.common.StringIO(table.to_csv(index=False)), keep_default_na=False,
                               na_values=[""])
        # the CLI loads the saved model (its attention implementation may differ): float noise only
        pd.testing.assert_frame_equal(written, expected, check_exact=False, rtol=1e-3, atol=1e-4, obj=name)
    conditions = result.results.groupby(["network", "condition", "seed"]).ngroups
    assert conditions == 1 + 3 * (1 + 2 * 2)  # intact, then per network its target and 2 seeds of 2 kinds


def test_units_and_split_half_from_the_one_fold_recording_match_separate_fits(setup, tmp_path):
    from neuroloc import LocalizeConfig, Localizer, assign_folds, get_stimuli

    plain = run(LocalizeConfig(stimuli="md", percent=5.0, model=setup["model"], settings=SETTINGS), tmp_path / "md",
                lm=fresh_lm()).localizer
    from_atlas = Localizer.load(setup["out"] / "md")
    assert from_atlas.units_ == plain.units_
    # split half by hand: the same rule fitted on each fold's stimuli alone, then their overlap
    stimuli = get_stimuli("md")
    folds = assign_folds(stimuli, 2).frame(stimuli)["fold"].to_numpy()
    halves = [Localizer("residual", percent=5.0, settings=SETTINGS).fit(fresh_lm(), stimuli.subset(
        np.flatnonzero(folds == k))) for k in (0, 1)]
    shared = int((halves[0].get_support() & halves[1].get_support()).sum())
    reliability = pd.read_csv(setup["out"] / "reliability.csv")
    row = reliability[(reliability.network == "md") & (reliability.site == "all")].iloc[0]
    assert row.n_both == shared and row.n_a == halves[0].get_support().sum()


def test_a_lesion_cell_equals_the_lesion_study(setup, tmp_path):
    config = LesionConfig(units=str(setup["out"] / "md"), benchmarks="perplexity", data=setup["data"],
                          n_controls=2, control_kinds="random,magnitude", model=setup["model"],
                          settings=SETTINGS.replace(bos=None))
    lesioned = run(config, tmp_path / "lesion", lm=fresh_lm()).results
    atlas_rows = pd.read_csv(setup["out"] / "lesion_results.csv", keep_default_na=False)
    atlas_rows = atlas_rows[(atlas_rows.network.isin(["md", ""])) & (atlas_rows.benchmark == "perplexity")]
    merged = lesioned.merge(atlas_rows, on=["condition", "seed", "benchmark", "subset", "metric"],
                            suffixes=("_lesion", "_atlas"))
    assert len(merged) == len(lesioned) == 2 * (2 + 2 * 2)  # perplexity and mean log-prob, 6 conditions
    np.testing.assert_allclose(merged.value_atlas, merged.value_lesion, rtol=1e-5)
    assert (merged.n_units_atlas == merged.n_units_lesion).all()


def test_an_interrupted_atlas_resumes_without_redoing_finished_conditions(setup, tmp_path, monkeypatch):
    real = lesion_module.evaluate_conditions
    evaluated = []

    def stop_after(n):
        def evaluate(lm, conditions, benchmarks, *, finished, **options):
            evaluated.append(len(conditions))

            def keep(i, frame):
                finished(i, frame)
                if n is not None and sum(1 for _ in tmp_path.glob("out/.checkpoints/conditions-rank0/*.parquet")) >= n:
                    raise Interrupted("SIGINT")
            return real(lm, conditions, benchmarks, finished=keep, **options)
        return evaluate

    config = AtlasConfig(model=setup["model"], data=setup["data"], networks="language,tom", benchmarks="perplexity",
                         own="language:perplexity", percent=5.0, n_controls=2, settings=SETTINGS)
    monkeypatch.setattr(lesion_module, "evaluate_conditions", stop_after(4))
    with pytest.raises(Interrupted):
        run(config, tmp_path / "out", lm=fresh_lm())
    monkeypatch.setattr(lesion_module, "evaluate_conditions", stop_after(None))
    resumed = run(config, tmp_path / "out", lm=fresh_lm())
    assert evaluated == [11, 11 - 4]  # intact + 2 networks × (target + 4 controls); 4 were saved
    whole = config.run(fresh_lm())
    pd.testing.assert_frame_equal(resumed.results, whole.results, check_exact=False, rtol=1e-6)
