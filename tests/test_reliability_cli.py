"""Reliability through the studies: `neuroloc localize --folds ...` against the Python `assess`, per-label
reliability against separate one-label fits, `neuroloc lesion --fold K` against a localizer fitted on the
fold's stimuli alone, and a null contrast through the command line — on a tiny model saved to disk."""

import csv
import json
from pathlib import Path

import numpy as np
import torch
import pandas as pd
import pytest
from click.testing import CliRunner

from neuroloc import Localizer, StimulusSet, UnitSet, load_model
from neuroloc.cli import app
from neuroloc.localize.reliability import ReliabilityConfig, assess
from neuroloc.settings import RunSettings
from neuroloc.stimuli.language import load_language_localizer
from neuroloc.stimuli.registry import get_stimuli
from tests.tiny import tiny_model, tiny_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fedorenko2010"
SITES = ["residual", "mlp"]
SETTINGS = RunSettings(batch_size=16, dtype="float32", progress=False)
COMMON = ["--site", "residual,mlp", "--pooling", "mean", "--dtype", "float32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", seed=3).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(model_dir):
    return load_model(str(model_dir), dtype="float32")


@pytest.fixture(scope="module")
def language():
    return load_language_localizer(DATA)


def _write(path: Path, texts, conditions, groups=None) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "condition"] + (["item"] if groups is not None else []))
        for i, (text, condition) in enumerate(zip(texts, conditions)):
            writer.writerow([text, condition] + ([groups[i]] if groups is not None else []))
    return path


@pytest.fixture(scope="module")
def paired(language, tmp_path_factory):
    """60 sentences and 60 non-word strings; sentence i and non-word i form item i (a group)."""
    sentences, nonwords = language.indices("sentences")[:60], language.indices("nonwords")[:60]
    texts = [language.texts[i] for i in sentences + nonwords]
    return _write(tmp_path_factory.mktemp("stimuli") / "paired.csv", texts, ["S"] * 60 + ["N"] * 60,
                  [f"item{i % 60}" for i in range(120)])


def _localize(model_dir, stimuli, out, *flags):
    result = CliRunner().invoke(app, ["localize", "--model", str(model_dir), "--localizer", str(stimuli),
                                      *COMMON, *flags, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _roundtrip(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def test_cli_flags_give_the_tables_of_assess(model_dir, lm, paired, tmp_path):
    out = _localize(model_dir, paired, tmp_path / "loc", "--design", "S:N", "--percent", "5", "--folds", "2",
                    "--fold-column", "item", "--permutations", "40", "--held-out-random-sets", "20", "--null", "untrained:1",
                    "--length-matched", "--seed", "4")
    stimuli = get_stimuli(str(paired), contrast=("S", "N"), group_column="item")
    config = ReliabilityConfig(folds=2, permutations=40, random_sets=20, untrained=(1,), length_matched=True, seed=4)
    found = assess(lm, stimuli, Localizer(SITES, pooling="mean", percent=5, design="S:N", settings=SETTINGS), config,
                   settings=SETTINGS)
    expected = {"reliability.csv": found.summary, "folds.csv": found.tables["folds"],
                **{f"reliability_{name}.csv": table for name, table in found.tables.items() if name != "folds"}}
    assert sorted(p.name for p in out.glob("*.csv")) == sorted(expected)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(pd.read_csv(out / name), _roundtrip(table, tmp_path / name),
                                      check_exact=False, rtol=1e-9, obj=name)
    folds = pd.read_csv(out / "folds.csv")
    assert folds.groupby("group").fold.nunique().max() == 1  # a group never spans folds
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["reliability"] == config.to_dict()
    got = manifest["results"]["reliability"]["S"]
    want = found.summary.iloc[0]
    assert got["split_half_jaccard"] == pytest.approx(want.split_half_jaccard)
    assert got["permutation_p"] == pytest.approx(want.permutation_p)
    assert (out / "reliability_split_half.png").is_file() and "Is this unit set real?" in (out / "report.html").read_text()


def test_per_label_reliability_equals_separate_one_label_fits(lm, language):
    """One-vs-rest over three labels: each label's split-half and held-out rows equal those of a contrast
    of that label against the other two merged (the same statistics, recorded separately)."""
    sentences = language.texts_of("sentences")[:40]
    texts = tuple(sentences) + tuple(language.texts_of("nonwords")[:40]) + tuple(" ".join(t.split()[::-1])
                                                                                  for t in sentences)
    labels = ("sentences",) * 40 + ("nonwords",) * 40 + ("reversed",) * 40
    config = ReliabilityConfig(permutations=0, random_sets=10, stability=(0.5,), confounds=False)
    multi = assess(lm, StimulusSet("three", texts, labels), Localizer(SITES, score="one_vs_rest_welch",
                   design="one-vs-rest", pooling="mean", percent=5, settings=SETTINGS), config, settings=SETTINGS)
    for label in ("nonwords", "sentences"):
        merged = tuple(c if c == label else "rest" for c in labels)
        single = assess(lm, StimulusSet("one", texts, merged, (label, "rest")),
                        Localizer(SITES, score="welch", pooling="mean", percent=5, settings=SETTINGS), config,
                        settings=SETTINGS)
        for name, keys in (("split_half", ["site"]), ("held_out", ["fold"]), ("stability", ["fraction"])):
            ours = multi.tables[name][multi.tables[name].label == label].drop(columns="label").reset_index(drop=True)
            theirs = single.tables[name].drop(columns="label").reset_index(drop=True)
            if name == "held_out":  # the score column is the localizer's own score: Welch t in both
                ours, theirs = ours.drop(columns=["n_train", "n_test"]), theirs.drop(columns=["n_train", "n_test"])
            pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-7, atol=1e-9, obj=f"{name} {label}")


def test_lesion_fold_lesions_exactly_the_units_of_that_fold(model_dir, lm, paired, tmp_path):
    out = _localize(model_dir, paired, tmp_path / "loc", "--design", "S:N", "--count", "6", "--folds", "2",
                    "--permutations", "0", "--no-confounds")
    folds = pd.read_csv(out / "folds.csv")
    stimuli = get_stimuli(str(paired), contrast=("S", "N"))
    for k in (0, 1):
        alone = Localizer(SITES, pooling="mean", count=6, design="S:N", settings=SETTINGS).fit(
            lm, stimuli.subset(folds.index[folds.fold == k].tolist()))
        saved = UnitSet.load(out / "folds" / f"fold-{k}")
        assert saved.names() == alone.units_.names()
    assert UnitSet.load(out / "folds" / "fold-0").names() != UnitSet.load(out / "folds" / "fold-1").names()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(stimuli.texts_of("S")[:6]) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["lesion", "--model", str(model_dir), "--units", str(out), "--fold", "1",
                                 "--benchmarks", f"perplexity:path={text}", "--controls", "1", "--dtype", "float32",
                                 "--out", str(tmp_path / "les"), "--quiet"])
    assert result.exit_code == 0, result.output
    units = json.loads((tmp_path / "les" / "manifest.json").read_text())["units"]
    assert Path(units["path"]) == out / "folds" / "fold-1"
    assert units["n_units"] == len(UnitSet.load(out / "folds" / "fold-1")) == 12  # 6 per site kind
    missing = runner.invoke(app, ["lesion", "--model", str(model_dir), "--units", str(out), "--fold", "2",
                                  "--benchmarks", f"perplexity:path={text}", "--out", str(tmp_path / "x"), "--quiet"])
    assert missing.exit_code != 0 and "--fold 2" in missing.output and "fold-0, fold-1" in missing.output


def test_null_contrast_through_the_cli_is_at_chance(model_dir, language, tmp_path):
    """80 sentences split at random into two fake conditions: split-half overlap within chance, permutation
    p not significant; the real contrast on the same model beats chance."""
    sentences = language.texts_of("sentences")[:80]
    fake = np.where(np.random.default_rng(2).permutation(80) % 2 == 0, "A", "B")
    null_file = _write(tmp_path / "null.csv", sentences, fake)
    flags = ["--percent", "10", "--folds", "2", "--permutations", "200", "--held-out-random-sets", "50", "--stability", "0.5"]
    out = _localize(model_dir, null_file, tmp_path / "null", "--design", "A:B", *flags)
    null = pd.read_csv(out / "reliability.csv").iloc[0]
    assert null.split_half_jaccard <= null.split_half_jaccard_chance_high and null.split_half_p_overlap > 0.05
    assert null.permutation_p > 0.05
    real_file = _write(tmp_path / "real.csv", sentences + language.texts_of("nonwords")[:80], ["S"] * 80 + ["N"] * 80)
    real = pd.read_csv(_localize(model_dir, real_file, tmp_path / "real", "--design", "S:N", *flags)
                       / "reliability.csv").iloc[0]
    assert real.split_half_jaccard > real.split_half_jaccard_chance_high and real.permutation_p < 0.01


def test_reliability_flags_are_checked_before_the_model_loads(model_dir, paired, tmp_path):
    runner = CliRunner()
    base = ["localize", "--model", "no/such-model", "--localizer", str(paired), "--out", str(tmp_path / "o"), "--quiet"]
    result = runner.invoke(app, base + ["--fold-column", "item"])
    assert result.exit_code != 0 and "--fold-column" in result.output and "--folds" in result.output
    result = runner.invoke(app, base + ["--folds", "1"])
    assert result.exit_code != 0 and "--folds" in result.output
    result = runner.invoke(app, base + ["--folds", "2", "--fold-column", "story"])
    assert result.exit_code != 0 and "'story'" in result.output and "--fold-column" in result.output
    result = runner.invoke(app, base + ["--null", "trained"])
    assert result.exit_code != 0 and "--null" in result.output


def test_multilingual_language_units_get_reliability_with_folds_over_sentences(lm, tmp_path):
    """LAPE language units with --folds 2: the folds keep a sentence and its translations together, and each
    language's split-half Jaccard equals that of two LAPE localizers fitted on the two folds' texts."""
    from neuroloc import MultilingualConfig, run
    from neuroloc.stimuli.corpora import MultilingualCorpus

    words = {"en": "the dog runs home today", "de": "der Hund läuft heute heim", "fr": "le chien court chez lui"}
    texts = {lang: [f"{w} {i} {'very ' * (i % 4)}{w.split()[i % 5]}" for i in range(30)] for lang, w in words.items()}
    corpus = MultilingualCorpus(texts, {k: [str(i) for i in range(30)] for k in texts}, "test", parallel=True)
    config = MultilingualConfig(percent=20, n_identify=26, n_heldout=2, deactivation=False, steering=False,
                                reliability=ReliabilityConfig(folds=2, random_sets=5, stability=(0.5,)),
                                settings=RunSettings(batch_size=8, dtype="float32", progress=False))
    inputs = config.prepare(corpus)
    result = run(config, tmp_path / "ml", lm=lm, inputs=inputs)
    folds = pd.read_csv(tmp_path / "ml" / "folds.csv")
    assert folds.groupby("group").fold.nunique().max() == 1 and folds.groupby("group").label.nunique().min() == 3
    split = pd.read_csv(tmp_path / "ml" / "reliability_split_half.csv")
    fits = []
    for k in (0, 1):
        alone = config.localizer(corpus.languages, config.settings)
        fits.append(alone.fit(lm, inputs.stimuli.subset(folds.index[folds.fold == k].tolist())))
    compared = 0
    for row, lang in enumerate(fits[0].labels_):
        a, b = fits[0].get_support()[row], fits[1].get_support()[row]
        got = split[(split.label == lang) & (split.site == "all")]
        assert (got.n_a.iloc[0], got.n_b.iloc[0]) == (a.sum(), b.sum())
        if (a | b).any():
            assert got.jaccard.iloc[0] == pytest.approx((a & b).sum() / (a | b).sum())
            compared += 1
    assert compared >= 2
    assert set(result.summary["reliability"]) == set(corpus.languages)
    report = (tmp_path / "ml" / "report.html").read_text()
    assert "Is this set of language units real?" in report and "split-half J" in report


def test_task_units_get_reliability_with_folds_over_facts(lm, tmp_path):
    """Task units with --folds 2: the units equal a plain run's, and each label's split-half overlap equals
    that of the same selection fitted on each fold's identification prompts alone."""
    from neuroloc import run
    from neuroloc.pipelines.task import TaskConfig
    from neuroloc.stimuli.design import Design

    rows = []
    for i in range(18):
        a, b = 2 + i, 3 + (i * 7) % 11
        split = "test" if i >= 16 else "train"
        rows += [{"prompt": f"{a} + {b} =", "answer": str(a + b), "label": "sum", "split": split},
                 {"prompt": f"Twice {a} is", "answer": str(2 * a), "label": "double", "split": split},
                 {"prompt": f"After {a} comes", "answer": str(a + 1), "label": "next", "split": split}]
    items = tmp_path / "facts.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = RunSettings(batch_size=8, dtype="float32", progress=False)
    common = dict(items=str(items), score="one_vs_rest_welch", site=("mlp",), k=6, modes=("scale:0",), n_controls=1,
                  dose=(), settings=settings, model="tiny")
    plain = run(TaskConfig(**common), tmp_path / "plain", lm=lm)
    config = TaskConfig(**common, reliability=ReliabilityConfig(folds=2, permutations=30, random_sets=5,
                                                                stability=(0.5,)))
    folded = run(config, tmp_path / "folded", lm=lm)
    assert {k: u.names() for k, u in folded.units.items()} == {k: u.names() for k, u in plain.units.items()}
    folds = pd.read_csv(tmp_path / "folded" / "folds.csv")
    ident = folded.inputs.identification
    stimuli = StimulusSet("ident", tuple(ident.prompts), tuple(ident.labels))
    fits = []
    for k in (0, 1):
        alone = config.localizer()
        alone.design = Design.one_vs_rest(ident.label_names)
        fits.append(alone.fit(lm, stimuli.subset(folds.index[folds.fold == k].tolist())))
    split = pd.read_csv(tmp_path / "folded" / "reliability_split_half.csv")
    for row, label in enumerate(fits[0].labels_):
        a, b = fits[0].get_support()[row], fits[1].get_support()[row]
        got = split[(split.label == label) & (split.site == "all")].iloc[0]
        assert (got.n_a, got.n_b, got.n_both) == (a.sum(), b.sum(), (a & b).sum())
    assert set(folded.summary["reliability"]) == {"sum", "double", "next"}
    assert "permutation_p" in folded.summary["reliability"]["sum"]
    report = (tmp_path / "folded" / "report.html").read_text()
    assert "Is this set of task units real?" in report and "split-half J" in report


def test_language_network_lesions_the_untrained_copies_own_units(tmp_path):
    """--null untrained:0 with lesion benchmarks: the untrained copy's units (the same rule fitted on the
    copy) are lesioned in the copy, beside the trained lesion, in a report table."""
    from neuroloc import run, wrap_model
    from neuroloc.evaluate.perplexity import evaluate_perplexity
    from neuroloc.models.untrained import untrained_model
    from neuroloc.pipelines.language_network import LanguageNetworkConfig
    from tests.test_run_language import write_fedorenko

    write_fedorenko(tmp_path / "fedorenko", n=24)
    text = tmp_path / "text.txt"
    text.write_text("the dog looked for the keys\nshe jumps over the fox\nwhat is the answer\n")
    lm = wrap_model(tiny_model("llama", seed=3), tiny_tokenizer())
    config = LanguageNetworkConfig(stimuli_path=str(tmp_path / "fedorenko"), sizes=(10.0,), n_controls=2,
                                   control_kinds=("random",), benchmarks=f"perplexity:path={text}",
                                   reliability=ReliabilityConfig(permutations=0, random_sets=5, stability=(0.5,),
                                                                 untrained=(0,)),
                                   settings=RunSettings(batch_size=8, progress=False), model="tiny")
    result = run(config, tmp_path / "ln", lm=lm)
    child = result.children["lesion-untrained-0"]
    fresh = untrained_model(lm, 0)
    alone = Localizer("residual", pooling="last", percent=10, settings=config.settings).fit(
        fresh, get_stimuli("language", path=str(tmp_path / "fedorenko")))
    assert child.inputs.units.names() == alone.units_.names()
    intact = child.results[(child.results.condition == "intact") & (child.results.metric == "perplexity")].value.item()
    direct = evaluate_perplexity(fresh.model, fresh.tokenizer, text.read_text().splitlines(), name="text",
                                 batch_size=8, bos="prepend")
    assert intact == pytest.approx(direct[direct.metric == "perplexity"].value.item(), rel=1e-5)
    assert (tmp_path / "ln" / "lesion-untrained-0" / "summary.csv").is_file()
    report = (tmp_path / "ln" / "report.html").read_text()
    assert "What training adds" in report and "untrained:0" in report and "Is this unit set real?" in report


def test_a_config_with_reliability_round_trips_through_its_manifest(paired):
    from neuroloc.pipelines.localize import LocalizeConfig

    config = LocalizeConfig(stimuli=str(paired), fold_column="item", seed=3,
                            reliability=ReliabilityConfig(folds=3, untrained=(0, 2), stability=(0.5,), seed=3))
    again = LocalizeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.reliability.untrained == (0, 2)
    assert LocalizeConfig.from_dict({**config.to_dict(), "reliability": None, "fold_column": None}).reliability is None


def test_reliability_runs_each_stimulus_through_the_model_once(lm, paired):
    from neuroloc.pipelines.localize import LocalizeConfig
    from tests.spies import watch_forward

    config = LocalizeConfig(stimuli=str(paired), design="S:N", site=("residual", "mlp"), pooling="mean",
                            fold_column="item", settings=SETTINGS,
                            reliability=ReliabilityConfig(folds=3, permutations=20, random_sets=5, length_matched=True))
    stimuli = config.load_inputs()
    with watch_forward(lm.model) as spy:
        result = config.run(lm, inputs=stimuli)
    assert len(spy.first_tokens) == len(stimuli) == 120
    assert set(result.reliability.tables) >= {"split_half", "held_out", "stability", "permutation", "length_matched"}


def test_an_interrupted_fold_recording_resumes_to_the_same_statistics(lm, paired, tmp_path):
    from neuroloc.interrupts import Interrupted
    from neuroloc.localize.localizer import site_kinds
    from neuroloc.record.checkpoint import Checkpoint
    from neuroloc.record.folds import record_folds
    from neuroloc.stimuli.folds import assign_folds

    stimuli = get_stimuli(str(paired), contrast=("S", "N"), group_column="item")
    assignment = assign_folds(stimuli, 2)
    settings = RunSettings(batch_size=10, dtype="float32", progress=False)

    def record(checkpoint=None):
        return record_folds(lm, stimuli, assignment, sites=lm.layout.sites(site_kinds(SITES)), pooling="mean",
                            kinds=("moments", "tokens"), n_buckets=4, rows=True, settings=settings,
                            checkpoint=checkpoint)

    whole = record()
    calls = {"n": 0}

    def stop(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupted("SIGINT")

    handle = lm.model.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with pytest.raises(Interrupted):
            record(Checkpoint(tmp_path, "key", every=1))
    finally:
        handle.remove()
    checkpoint = Checkpoint(tmp_path, "key", every=1)
    resumed = record(checkpoint)
    assert checkpoint.resumed_from == 40  # four batches of 10 were folded in before the interrupt
    for a, b in zip(whole.stores, resumed.stores):
        assert a.entries.keys() == b.entries.keys()
        for key, stat in a.entries.items():
            for name, value in stat.state_dict().items():
                assert torch.allclose(value.double(), b.entries[key].state_dict()[name].double(), rtol=1e-6,
                                      atol=1e-6), (key, name)
    assert np.array_equal(whole.rows.texts, resumed.rows.texts)
    assert torch.equal(whole.rows.values, resumed.rows.values)
