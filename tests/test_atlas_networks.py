"""The atlas's pos, multilingual and task networks: parsing and validation (one clear line), their default own
benchmarks and overrides, the settings that differ, and one small end-to-end run in which a POS class, a
language and a relation enter the overlap (where they share sites) and the dissociation matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroloc import AtlasConfig, NeurolocError, RunSettings, UnitSet, atlas, wrap_model
from neuroloc.pipelines.networks import NetworkSpec, own_pair, parse_network
from neuroloc.stimuli.treebank import read_conllu
from neuroloc.units import LabeledUnits
from tests.test_atlas_benchmarks import write_pud
from tests.test_pos_pipeline import conllu_text
from tests.test_run_language import write_fedorenko
from tests.test_seams import write_data
from tests.test_task_pipeline import write_facts
from tests.tiny import tiny_model, tiny_tokenizer

SETTINGS = RunSettings(batch_size=8, progress=False)
EXTRA = "language,pos:NOUN,multilingual:fr,task:capital"


# ------------------------------------------------------------------------------------------ parsing
def test_network_names_parse():
    assert parse_network("language") == NetworkSpec("language", "localize")
    assert parse_network(" pos:NOUN ") == NetworkSpec("pos:NOUN", "pos", "NOUN")
    assert parse_network("multilingual:fr") == NetworkSpec("multilingual:fr", "multilingual", "fr")
    assert parse_network("task:capital") == NetworkSpec("task:capital", "task", "capital")
    assert own_pair("pos:NOUN:perplexity") == ("pos:NOUN", "perplexity")
    assert own_pair("task:capital:relations/capital") == ("task:capital", "relations/capital")


@pytest.mark.parametrize("fields, message", [
    ({"networks": "pos"}, "network 'pos' needs a label: give pos:NOUN"),
    ({"networks": "pos:NOUNS"}, "'NOUNS' is not a UPOS class"),
    ({"networks": "syntax:NP"}, "'syntax' is not a study of networks; use pos, multilingual, task"),
    ({"networks": "task:"}, "give one label after task:"),
    ({"networks": "multilingual:fr:en"}, "give one label after multilingual:"),
    ({"networks": "nonsense"}, "'nonsense' is not a localizer"),
    ({"networks": "pos:NOUN,pos:NOUN"}, "name each network once"),
    ({"networks": "language,task:capital", "mode": "mean"}, "do not record .*task:capital.*use zero"),
    ({"networks": "task:capital", "own": "task:capital:blimpish"}, "blimpish is not among --benchmarks"),
    ({"networks": "pos:NOUN", "pos_score": "lape"}, "the atlas's pos study: score"),
])
def test_bad_networks_are_one_line_naming_the_flag(fields, message):
    with pytest.raises(NeurolocError, match=message) as error:
        AtlasConfig(**fields)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------ own benchmarks, differs
def test_each_network_has_its_own_benchmark_by_default_and_it_joins_the_benchmarks():
    config = AtlasConfig(networks=EXTRA)
    assert config.own_benchmarks() == {"language": "blimp", "pos:NOUN": "perplexity",
                                       "multilingual:fr": "multilingual_perplexity/fr",
                                       "task:capital": "relations/capital"}
    joined = {spec.name: spec.options for spec in config.benchmark_specs()[len(config.benchmarks):]}
    assert joined == {"perplexity": {"limit": 20},
                      "multilingual_perplexity": {"limit": 20, "languages": "fr", "n_identify": 300,
                                                  "n_heldout": 100, "seed": 0},
                      "relations": {"limit": 20, "relations": "capital"}}
    full = AtlasConfig(networks=EXTRA, full=True, seed=4, task_items="facts.jsonl")
    joined = {spec.name: spec.options for spec in full.benchmark_specs()}
    assert "perplexity" in {b.name for b in full.benchmarks} and "limit" not in joined["relations"]
    assert joined["relations"]["path"] == "facts.jsonl" and joined["multilingual_perplexity"]["seed"] == 4


def test_overrides_pair_a_network_with_another_benchmark_or_column():
    config = AtlasConfig(networks=EXTRA, benchmarks="blimp;perplexity:limit=5",
                         own="language:blimp,pos:NOUN:blimp,task:capital:relations/continent,"
                             "multilingual:fr:multilingual_perplexity/en")
    assert config.own_benchmarks() == {"language": "blimp", "pos:NOUN": "blimp",
                                       "multilingual:fr": "multilingual_perplexity/en",
                                       "task:capital": "relations/continent"}
    joined = {spec.name: spec.options for spec in config.benchmark_specs()}
    assert joined["perplexity"] == {"limit": 5}  # listed: as given, not joined again
    assert joined["relations"]["relations"] == "continent" and joined["multilingual_perplexity"]["languages"] == "en"


def test_settings_a_child_cannot_take_are_listed_with_why():
    differs = pd.DataFrame(AtlasConfig(networks=EXTRA, folds=0).differs())
    assert set(zip(differs.study, differs.setting)) == {("pos", "pooling"), ("multilingual", "site"),
                                                        ("multilingual", "pooling"), ("multilingual", "size")}
    row = differs[(differs.study == "multilingual") & (differs.setting == "site")].iloc[0]
    assert (row.atlas, row.used) == ("residual", "mlp_gate") and "LAPE" in row.why
    wide = pd.DataFrame(AtlasConfig(networks=EXTRA, site="residual,mlp", pooling="mean", folds=2).differs())
    assert {("pos", "size"), ("task", "size"), ("pos", "reliability"), ("task", "reliability")} <= set(
        zip(wide.study, wide.setting))
    assert ("task", "pooling") not in set(zip(wide.study, wide.setting))  # the task study pools by mean too
    assert AtlasConfig().differs() == []


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas-networks")
    data = write_data(root / "data")
    write_fedorenko(data / "fedorenko2010")
    treebank = data / "ud" / "en_ewt-ud-dev.conllu"  # the pos study's sentences, and perplexity's texts
    treebank.write_text(conllu_text(8, 4, seed=0), encoding="utf-8")
    texts = {s.sent_id: s.text for s in read_conllu(treebank)}
    treebank.write_text("".join(f"{line}\n# text = {texts[line.split('= ')[1]]}\n" if line.startswith("# sent_id")
                                else f"{line}\n" for line in treebank.read_text().splitlines()), encoding="utf-8")
    write_pud(data)
    facts = root / "facts.jsonl"
    write_facts(facts)
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    out = root / "out"
    result = atlas(lm, networks=EXTRA.split(","), benchmarks="blimp", own="language:blimp", data=str(data),
                   percent=5.0, n_controls=2, folds=0, max_items=3, task_items=str(facts), settings=SETTINGS,
                   out=out)
    return {"result": result, "out": out, "data": data, "facts": facts}


def test_each_kind_runs_one_child_study_whose_labels_are_networks(setup):
    out, result = setup["out"], setup["result"]
    for name in ("pos/manifest.json", "pos/magnitudes.csv", "multilingual/manifest.json", "task/manifest.json",
                 "language/manifest.json", "differs.csv", "report.html"):
        assert (out / name).is_file(), name
    assert set(result.children) == {"language", "pos", "multilingual", "task"}
    assert result.networks["pos:NOUN"].units == UnitSet.load(out / "pos" / "key_neurons" / "NOUN")
    assert result.networks["multilingual:fr"].units == LabeledUnits.load(out / "multilingual" / "units" /
                                                                         "languages")["fr"]
    assert result.networks["task:capital"].units == LabeledUnits.load(out / "task" / "units")["capital"]
    pos = json.loads((out / "pos" / "manifest.json").read_text())["parameters"]
    assert pos["site"] == ["residual"] and pos["classes"] == ["NOUN"] and pos["k"] == 3  # 5% of 2 × 32 units
    # the pos study's magnitudes are the mean |activation| the magnitude controls matched
    magnitudes = pd.read_csv(out / "pos" / "magnitudes.csv")
    np.testing.assert_allclose(magnitudes.mean_abs_activation, result.networks["pos:NOUN"].magnitudes, rtol=1e-6)


def test_extra_networks_enter_the_matrix_with_their_own_benchmarks(setup):
    result = setup["result"]
    cells = result.cells
    networks = ["language", "pos:NOUN", "multilingual:fr", "task:capital"]
    columns = ["blimp", "perplexity", "multilingual_perplexity/fr", "relations/capital"]
    assert set(cells.network) == set(networks) and list(dict.fromkeys(cells.benchmark)) == columns
    rows = result.results
    for network in networks[1:]:
        conditions = rows[rows.network == network].groupby(["condition", "seed"]).ngroups
        assert conditions == 1 + 2 * 2  # target, 2 random, 2 magnitude-matched
        target = rows[(rows.network == network) & (rows.condition == "target")]
        assert (target.n_units == len(result.networks[network].units)).all()
    verdicts = result.verdicts.set_index(["network_a", "network_b"])
    assert verdicts.loc[("pos:NOUN", "task:capital"), ["benchmark_a", "benchmark_b"]].tolist() == \
        ["perplexity", "relations/capital"]
    intact = rows[(rows.condition == "intact") & (rows.benchmark == "relations")]
    assert set(intact.subset) == {"capital"} and intact.set_index("metric").value["n_items"] == 3
    cell = cells[(cells.network == "task:capital") & (cells.benchmark == "relations/capital")].iloc[0]
    target = rows[(rows.network == "task:capital") & (rows.condition == "target") & (rows.benchmark == "relations")
                  & (rows.metric == "accuracy")].value.iloc[0]
    assert cell.target == pytest.approx(target)


def test_overlap_compares_networks_on_the_same_sites_only_and_says_so(setup):
    result, out = setup["result"], setup["out"]
    pairs = set(zip(result.overlap.network_a, result.overlap.network_b))
    assert pairs == {("language", "pos:NOUN"), ("language", "task:capital"), ("pos:NOUN", "task:capital")}
    assert {f"{a}/{b}" for a, b in result.not_compared} == {"language/multilingual:fr", "pos:NOUN/multilingual:fr",
                                                           "multilingual:fr/task:capital"}
    row = result.overlap[(result.overlap.network_a == "pos:NOUN") & (result.overlap.network_b == "task:capital")]
    a, b = (result.networks[n].units.flat_mask().numpy() for n in ("pos:NOUN", "task:capital"))
    assert row.n_both.iloc[0] == int((a & b).sum()) and row.n_a.iloc[0] == a.sum()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["overlap_not_compared"]["language/multilingual:fr"] == "on different sites"
    assert {(d["study"], d["setting"]) for d in manifest["differs"]} == {
        ("pos", "pooling"), ("multilingual", "site"), ("multilingual", "pooling"), ("multilingual", "size")}
    assert manifest["networks"]["pos:NOUN"]["study"] == "pos"
    html = (out / "report.html").read_text()
    assert "Settings that differ" in html and "Not compared" in html


def test_the_joined_benchmarks_read_the_child_studies_held_out_items(setup):
    config = setup["result"].config
    specs = {spec.name: spec for spec in config.benchmark_specs()}
    texts = specs["multilingual_perplexity"].build(SETTINGS, setup["data"])
    study = config.child_config("multilingual").load_inputs()
    from neuroloc.evaluate.multilingual_perplexity import MultilingualPerplexityConfig, heldout_texts
    from neuroloc.evaluate.benchmark import BenchmarkOptions

    options = BenchmarkOptions(path=None, data_dir=Path(setup["data"]), limit=3, batch_size=8, bos="prepend")
    found, _ = heldout_texts(options, specs["multilingual_perplexity"].declared())
    assert texts.subsets == ("fr",) and found["fr"] == study.heldout.texts["fr"][:3]
    assert isinstance(specs["multilingual_perplexity"].declared(), MultilingualPerplexityConfig)
    task = config.child_config("task").load_inputs()
    from neuroloc.evaluate.relations import relation_items

    items = relation_items(BenchmarkOptions(path=str(setup["facts"]), data_dir=None, limit=3, batch_size=8,
                                            bos="prepend"), specs["relations"].declared())
    assert items.prompts == [task.test.prompts[i] for i in task.test.indices("capital")]
