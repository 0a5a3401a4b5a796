"""Language units on a tiny gated model: counting against a direct computation, the deactivation matrix,
steering, the study (outputs, reused statistics, manifest), its deprecated wrapper and the CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from neuroloc import MultilingualConfig, RunOptions, RunSettings, StatsStore, run, wrap_model
from neuroloc.errors import NeurolocError
from neuroloc.evaluate.scoring import token_logprobs
from neuroloc.models.layout import Site
from neuroloc.pipelines.languages import run_languages
from neuroloc.stimuli.corpora import MultilingualCorpus
from neuroloc.studies.languages import deactivation_matrix, generate, language_identifier, prompt_prefix, steer
from neuroloc.units import LabeledUnits, UnitSet

from .tiny import tiny_model, tiny_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "She didn't know that.", "1 + 2 = 3",
         "Sentences and non-word strings contrast.", "What is 15 + 4?"]


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), copy.deepcopy(tiny_tokenizer()))


def _direct_gate(lm, text: str) -> list[torch.Tensor]:
    """act(gate_proj(x)) per layer for one unpadded text with a BOS in front, from the MLP's input."""
    inputs, outputs, handles = {}, [], []
    for layer, block in enumerate(lm.model.model.layers):
        handles.append(block.mlp.register_forward_pre_hook(lambda m, args, layer=layer: inputs.__setitem__(layer, args[0])))
    ids = torch.tensor([[lm.tokenizer.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
            for layer, block in enumerate(lm.model.model.layers):
                outputs.append(block.mlp.act_fn(block.mlp.gate_proj(inputs[layer]))[0])
    finally:
        for h in handles:
            h.remove()
    return outputs


def _counts(lm, texts, *, batch_size: int = 16, prompts=None) -> StatsStore:
    """The study's counting pass (a Localizer on token statistics) over `texts`, labelled "en"."""
    corpus = MultilingualCorpus({"en": list(texts)}, {"en": [str(i) for i in range(len(texts))]}, "test",
                                prompts=None if prompts is None else {"en": list(prompts)})
    stimuli = corpus.stimulus_set("test", response_only=prompts is not None)
    settings = RunSettings(batch_size=batch_size, progress=False)
    return MultilingualConfig().localizer(["en", "de"], settings).record(lm, stimuli)


def test_counts_equal_a_direct_computation_and_ignore_batching(lm) -> None:
    sites = lm.layout.sites("mlp_gate")
    direct = [_direct_gate(lm, t) for t in TEXTS]
    tokens = sum(d[0].shape[0] - 1 for d in direct)  # the BOS is not counted
    for batch_size in (2, 5):
        store = _counts(lm, TEXTS, batch_size=batch_size)
        assert store.count("en", "tokens") == tokens
        for site in sites:
            counts = store.get("tokens", "en", site.name)
            acts = torch.cat([d[site.layer][1:] for d in direct])
            assert torch.equal(counts.positive, (acts > 0).sum(0))
            expected = torch.where(acts > 0, acts, 0).double().sum(0) / (acts > 0).sum(0).clamp(min=1)
            torch.testing.assert_close(counts.mean_when_active(), expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(counts.activation_probability(), (acts > 0).double().mean(0))


def test_response_only_counts_the_tokens_after_the_prompt(lm) -> None:
    site = Site(1, "mlp_gate")
    prompts = ["The quick brown", "She didn't"]
    texts = [TEXTS[0], TEXTS[1]]
    store = _counts(lm, texts, prompts=prompts, batch_size=2)
    expected_positive, expected_n = 0, 0
    for prompt, text in zip(prompts, texts):
        skip = 1 + len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        acts = _direct_gate(lm, text)[1][skip:]
        expected_positive = expected_positive + (acts > 0).sum(0)
        expected_n += acts.shape[0]
    assert store.count("en", "tokens") == expected_n
    assert torch.equal(store.get("tokens", "en", site.name).positive, expected_positive)
    with pytest.raises(NeurolocError, match="not a prefix"):
        _counts(lm, texts, prompts=["Nope", "She"])


def test_counts_merge_and_round_trip(lm) -> None:
    sites = lm.layout.sites("mlp_gate")
    whole = _counts(lm, TEXTS)
    part = _counts(lm, TEXTS[:2]).merge(_counts(lm, TEXTS[2:]))
    assert part.count("en", "tokens") == whole.count("en", "tokens")
    assert all(torch.equal(part.get("tokens", "en", s.name).positive, whole.get("tokens", "en", s.name).positive)
               for s in sites)
    restored = StatsStore()
    restored.load_state_dict(whole.state_dict())
    first = sites[0].name
    assert restored.count("en", "tokens") == whole.count("en", "tokens")
    assert torch.equal(restored.get("tokens", "en", first).positive_sum, whole.get("tokens", "en", first).positive_sum)


def _nll_with_zeroed(lm, texts, zero: dict[int, list[int]]) -> float:
    """Mean NLL per token with gate units zeroed by a hand-written hook on act_fn."""
    handles = []
    for layer, units in zero.items():
        def hook(module, args, output, units=units):
            output = output.clone()
            output[..., units] = 0
            return output
        handles.append(lm.model.model.layers[layer].mlp.act_fn.register_forward_hook(hook))
    try:
        scores = token_logprobs(lm.model, lm.tokenizer, texts, batch_size=4, bos="prepend")
    finally:
        for h in handles:
            h.remove()
    return -sum(s.logprobs.sum() for s in scores) / sum(len(s) for s in scores)


def test_deactivation_matrix_against_hand_written_lesions(lm) -> None:
    layout = lm.layout
    chosen = {"en": {0: [1, 5, 7], 1: [2]}, "de": {1: [0, 3, 4, 40]}}
    units = {}
    for lang, picks in chosen.items():
        names = [f"layers.{layer}.mlp_gate[{i}]" for layer, ids in picks.items() for i in ids]
        units[lang] = UnitSet.from_names(names, layout)
    heldout = {"en": TEXTS[:3], "de": TEXTS[3:]}
    matrix = deactivation_matrix(lm, LabeledUnits(units), heldout, n_controls=2, seed=4,
                                 settings=RunSettings(batch_size=2, progress=False))
    assert len(matrix) == 2 * 2 * 3
    for lang, picks in chosen.items():
        for evaluated, texts in heldout.items():
            row = matrix[(matrix.deactivated == lang) & (matrix.evaluated == evaluated) & (matrix.condition == "target")]
            expected = _nll_with_zeroed(lm, texts, picks)
            assert row.nll.item() == pytest.approx(expected, rel=1e-5)
            assert row.perplexity_ratio.item() == pytest.approx(np.exp(row.nll.item() - _nll_with_zeroed(lm, texts, {})),
                                                                rel=1e-5)
    randoms = matrix[matrix.condition == "random"]
    assert sorted(randoms.seed.unique()) == [4, 5] and (randoms.n_units == randoms.deactivated.map({"en": 4, "de": 4})).all()


def test_language_identifier_and_prompts() -> None:
    identify = language_identifier(["en", "de", "fr", "zh"])
    assert identify("Der Hund läuft schnell über die Straße und bellt laut.") == "de"
    assert identify("Le chien court vite dans la rue et aboie fort.") == "fr"
    assert identify("狗在街上跑得很快。") == "zh"
    assert identify("   ") == ""
    assert prompt_prefix("one two three four") == "one two"
    assert prompt_prefix("狗在街上跑") == "狗在"


def test_generation_is_batch_invariant_and_steering_reports_every_pair(lm) -> None:
    prompts = ["The quick brown", "She didn't", "1 + 2"]
    together = generate(lm, prompts, max_new_tokens=5, settings=RunSettings(batch_size=3))
    alone = [generate(lm, [p], max_new_tokens=5, settings=RunSettings(batch_size=1))[0] for p in prompts]
    assert together == alone
    layout = lm.layout
    units = {"en": UnitSet.from_names(["layers.0.mlp_gate[3]", "layers.1.mlp_gate[9]"], layout),
             "de": UnitSet.from_names(["layers.1.mlp_gate[4]"], layout)}
    values = {lang: {s.name: torch.full((layout.width("mlp_gate"),), 30.0) for s in layout.sites("mlp_gate")}
              for lang in units}
    settings = RunSettings(batch_size=2, progress=False)
    results, generations = steer(lm, {"en": prompts[:2], "de": ["Die Katze"]}, units, values=values, mode="mean",
                                 n_controls=1, seed=0, max_new_tokens=4, settings=settings,
                                 identify=language_identifier(["en", "de"]))
    assert set(zip(results.source, results.target)) == {("en", "de"), ("de", "en")}
    assert sorted(results.condition.unique()) == ["none", "random", "target"]
    assert results.share_target.between(0, 1).all()
    steered = generations[(generations.condition == "target") & (generations.source == "en")].generated.tolist()
    assert steered != together[:2]  # setting units to 30 changes what the model writes
    with pytest.raises(NeurolocError, match="needs per-language unit values"):
        steer(lm, {"en": prompts}, units, mode="mean", n_controls=1, seed=0, max_new_tokens=4, settings=settings)


def _corpus() -> MultilingualCorpus:
    texts = {"en": [f"The dog {i} runs home." for i in range(12)],
             "de": [f"Der Hund {i} läuft heim." for i in range(12)],
             "fr": [f"Le chien {i} court." for i in range(12)]}
    return MultilingualCorpus(texts, {k: [str(i) for i in range(12)] for k in texts}, "test", parallel=True)


def _run(lm, out, **fields):
    config = MultilingualConfig(model="tiny", settings=RunSettings(progress=False), **fields)
    return run(config, out, lm=lm, inputs=config.prepare(_corpus()), options=RunOptions(keep_checkpoints=True))


def test_study_writes_everything_and_reuses_statistics(lm, tmp_path) -> None:
    out = tmp_path / "run"
    options = dict(score="specific_related", percent=5, n_identify=8, n_heldout=3, steer_prompts=2, steer_tokens=3)
    first = _run(lm, out, **options)
    for name in ("scores.parquet", "layers.csv", "overlap.csv", "deactivation.csv", "steering.csv", "layers.png",
                 "deactivation.png", "report.html", "manifest.json", "selection.json", "stats.safetensors"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["site"]["gated"] and manifest["counting"]["statistics_reused"] is False
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 2 * lm.layout.width("mlp_gate")
    assert {"p_en", "p_de", "p_fr", "entropy", "score", "languages", "category"} <= set(scores.columns)
    assert scores.selected.sum() == sum(first.summary["n_units"][c] for c in ("specific", "related", "agnostic"))
    loaded = LabeledUnits.load(out / "units" / "languages")
    assert loaded.labels == ["en", "de", "fr"] and loaded == first.units
    matrix = pd.read_csv(out / "deactivation.csv")
    assert set(matrix.condition) <= {"target", "random"}
    stats = StatsStore.load(out / "stats.safetensors")  # the counts behind the selection, for re-selection
    assert stats.labels("tokens") == ["de", "en", "fr"] and stats.count("en", "tokens") > 0
    second = _run(lm, out, **options)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counting"]["statistics_reused"] is True
    assert second.summary["n_units"] == first.summary["n_units"]
    other = wrap_model(tiny_model("llama", seed=1), copy.deepcopy(tiny_tokenizer()))
    counting_only = {**options, "score": "lape", "deactivation": False, "steering": False}
    run(MultilingualConfig(model="tiny", settings=RunSettings(progress=False), **counting_only), out, lm=other,
        inputs=MultilingualConfig(**counting_only).prepare(_corpus()), options=RunOptions(keep_checkpoints=True,
                                                                                          overwrite=True))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counting"]["statistics_reused"] is False  # other weights: counted afresh


def test_deprecated_run_languages_runs_the_study(lm, tmp_path) -> None:
    options = dict(percent=5, n_identify=8, n_heldout=3, steering=False)
    with pytest.warns(DeprecationWarning, match="run_languages is deprecated"):
        old = run_languages(lm, _corpus(), tmp_path / "old", method="specific-related", progress=False, **options)
    new = _run(lm, tmp_path / "new", score="specific_related", deactivation_texts=None, **{
        k: v for k, v in options.items()})
    assert old.units == new.units and old.summary == new.summary
    pd.testing.assert_frame_equal(old.deactivation, new.deactivation)


def test_non_gated_models_fall_back_to_the_post_activation(tmp_path) -> None:
    gpt2 = wrap_model(tiny_model("gpt2"), copy.deepcopy(tiny_tokenizer()))
    _run(gpt2, tmp_path, percent=5, n_identify=6, n_heldout=2, steering=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert not manifest["site"]["gated"] and "post-activation" in manifest["site"]["meaning"]


def test_cli_runs_on_a_saved_model_and_a_language_folder(lm, tmp_path) -> None:
    from neuroloc.cli import app

    model_dir, data = tmp_path / "model", tmp_path / "data"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    data.mkdir()
    for lang, texts in _corpus().texts.items():
        (data / f"{lang}.txt").write_text("\n".join(texts), encoding="utf-8")
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--languages", "en,de", "--percent", "5", "--n-identify", "6",
              "--n-heldout", "2", "--no-steering", "--dtype", "float32", "--quiet"]
    result = CliRunner().invoke(app, ["multilingual", "--corpus", str(data), *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "selection.json").read_text())["languages"] == ["en", "de"]
    # the old command, --data as the corpus and --method: deprecated, and the same run
    old = CliRunner().invoke(app, ["languages", "--data", str(data), "--method", "lape", *common,
                                   "--out", str(tmp_path / "old")])
    assert old.exit_code == 0, old.output
    assert "`neuroloc languages` is deprecated" in old.output and "--method is deprecated" in old.output
    assert LabeledUnits.load(tmp_path / "old" / "units" / "languages") == LabeledUnits.load(out / "units" / "languages")
    bad = CliRunner().invoke(app, ["multilingual", "--model", str(model_dir), "--corpus", str(data), "--languages", "en",
                                   "--out", str(tmp_path / "bad"), "--quiet"])
    assert bad.exit_code == 2 and "at least two languages" in bad.output
