"""The demo's lesion tables on SmolLM2, with reuse (packed prefixes, trunks below the lesion) and without.

Independent expectation: the plain path (`evaluate_conditions(..., reuse=False)`: no packing, no trunk
cache, every text through every layer) on the same model object; the demo's tables are BLiMP and
SyntaxGym accuracies and perplexity (`evaluate_blimp`, `evaluate_syntaxgym`, `evaluate_perplexity`),
here on a few phenomena, suites and sentences so that the test stays within about a minute.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroloc import UnitSet, lesion, load_model
from neuroloc.evaluate.benchmark import Benchmark
from neuroloc.evaluate.blimp import evaluate_blimp, load_blimp
from neuroloc.evaluate.conditions import Condition, evaluate_conditions
from neuroloc.evaluate.perplexity import evaluate_perplexity, load_texts
from neuroloc.evaluate.syntaxgym import evaluate_syntaxgym
from neuroloc.settings import RunSettings

DATA = Path(os.environ.get("NEUROLOC_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
pytestmark = [pytest.mark.smollm2, pytest.mark.skipif(not (DATA / "blimp").is_dir(), reason="no ../shared/data")]

PHENOMENA = ["anaphor_number_agreement", "determiner_noun_agreement_1", "irregular_past_participle_adjectives",
             "wh_questions_object_gap"]
SUITES = ["center_embed.json", "mvrr.json", "number_src.json", "subordination.json"]


def demo_benchmarks(settings: RunSettings) -> list[Benchmark]:
    pairs = load_blimp(DATA / "blimp", limit=3, phenomena=PHENOMENA)
    suites = [DATA / "syntaxgym" / name for name in SUITES if (DATA / "syntaxgym" / name).is_file()]
    texts = load_texts(DATA / "ud" / "en_ewt-ud-dev.conllu", limit=8)
    run = {"batch_size": settings.batch_size, "bos": settings.bos}
    return [Benchmark("blimp", "blimp", lambda m, t: evaluate_blimp(m, t, pairs, **run)),
            Benchmark("syntaxgym", "syntaxgym", lambda m, t: evaluate_syntaxgym(m, t, suites, limit=2, **run)),
            Benchmark("perplexity", "ud", lambda m, t: evaluate_perplexity(m, t, texts, name="ud", **run))]


def random_units(lm, layers: range, kinds: tuple[str, ...], fraction: float, seed: int) -> UnitSet:
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for site in lm.layout.sites():
        width = lm.layout.width(site.kind)
        chosen = site.layer in layers and site.kind in kinds
        masks[site] = (torch.rand(width, generator=generator) < fraction) if chosen else torch.zeros(width, dtype=torch.bool)
    return UnitSet(masks, model=lm.identity)


def test_demo_tables_with_reuse_equal_the_plain_path(caplog):
    lm = load_model("smollm2", dtype="float32")
    n = lm.layout.n_layers
    benchmarks = demo_benchmarks(RunSettings(batch_size=16))
    upper = random_units(lm, range(n // 2, n), ("residual",), 0.02, seed=0)  # like language units: the upper half
    first = random_units(lm, range(0, 1), ("mlp",), 0.05, seed=2)  # layer 0: nothing below it to reuse
    conditions = [Condition("intact"),
                  Condition("upper", lambda: lesion(lm, upper, "zero")),
                  Condition("layer 0", lambda: lesion(lm, first, "zero"))]
    with caplog.at_level(logging.INFO, logger="neuroloc.evaluate.conditions"):
        reused = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=2**30)
    plain = evaluate_conditions(lm, conditions, benchmarks, cache_bytes=2**30, reuse=False)
    resumed = re.search(r"(\d+) passes resumed", caplog.text)
    assert resumed and int(resumed.group(1)) > 0  # the upper lesions started from stored trunks
    for condition, a, b in zip(conditions, reused, plain):
        assert a[["benchmark", "subset", "metric"]].equals(b[["benchmark", "subset", "metric"]]), condition.name
        accuracy = (a.metric == "accuracy").to_numpy()
        assert (a.value.to_numpy()[accuracy] == b.value.to_numpy()[accuracy]).all(), condition.name
        logprob = (a.metric == "mean_logprob").to_numpy()
        np.testing.assert_allclose(a.value.to_numpy()[logprob], b.value.to_numpy()[logprob], atol=1e-4,
                                   err_msg=condition.name)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-4, err_msg=condition.name)  # perplexity too
    intact, lesioned = plain[0], plain[1]
    assert not np.allclose(intact.value, lesioned.value, rtol=1e-3)  # the lesions act
