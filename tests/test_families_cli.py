"""Through the CLI: localize → lesion on a mixture of experts (router units, the expert lesion) and on a
hybrid (its Mamba mixer and attention heads), and `neuroloc info` listing each model's sites and the
reasons for the absent ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import UnitSet
from neuroloc.cli import app
from tests.tiny import tiny_model, tiny_tokenizer

SENTENCES = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
             "the language localizer contrasts sentences", "a dog sleeps in the sun all day",
             "what is fifteen plus four", "she did not know that the keys were there"]
NONWORDS = ["pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy",
            "whimp ne holily ree os", "sleoming rere oy pome ne", "shourn os whimp ofuke ree"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-families")
    (root / "contrast.csv").write_text("text,condition\n" + "".join(f"{t},S\n" for t in SENTENCES)
                                       + "".join(f"{t},N\n" for t in NONWORDS))
    (root / "ppl.txt").write_text("\n".join(SENTENCES) + "\n")
    for family in ("qwen3_moe", "jamba"):
        tiny_model(family).save_pretrained(root / family)
        tiny_tokenizer().save_pretrained(root / family)
    return root


@pytest.mark.parametrize("family, sites, mode", [("qwen3_moe", "router", "unroute"), ("jamba", "ssm,attn", "zero")])
def test_cli_localize_then_lesion_on_moe_and_hybrid(files, tmp_path, family, sites, mode):
    runner = CliRunner()
    model = str(files / family)
    result = runner.invoke(app, ["localize", "--model", model, "--localizer", str(files / "contrast.csv"),
                                 "--contrast", "S:N", "--site", sites, "--count", "2", "--pooling", "mean",
                                 "--batch-size", "4", "--out", str(tmp_path / "loc"), "--quiet"])
    assert result.exit_code == 0, result.output
    units = UnitSet.load(tmp_path / "loc")
    assert len(units) == 2 * len(sites.split(","))
    assert {site.kind for site, mask in units.masks.items() if mask.any()} == set(sites.split(","))
    result = runner.invoke(app, ["lesion", "--model", model, "--units", str(tmp_path / "loc"), "--mode", mode,
                                 "--benchmarks", "perplexity", "--perplexity-text", str(files / "ppl.txt"),
                                 "--controls", "1", "--batch-size", "4", "--out", str(tmp_path / "les"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "les" / "results.csv")
    values = results.pivot_table(index="metric", columns="condition", values="value")
    assert set(results.condition) == {"intact", "target", "random"}
    assert (values["target"] != values["intact"]).any()  # the lesion changed perplexity


def test_cli_info_lists_sites_and_reasons(files):
    runner = CliRunner()
    for family, present, absent in (("qwen3_moe", {"expert", "router", "attn"}, {"mlp": "mixture of experts"}),
                                    ("jamba", {"ssm", "attn", "mlp", "expert"}, {"shared_expert": "no shared expert"})):
        result = runner.invoke(app, ["info", "--model", str(files / family), "--json", "--quiet"])
        assert result.exit_code == 0, result.output
        layout = json.loads(result.output[result.output.index("{"):])["layout"]
        assert present <= set(layout["sites"])
        for kind, reason in absent.items():
            assert reason in layout["unavailable"][kind]
