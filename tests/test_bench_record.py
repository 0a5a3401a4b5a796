"""benchmarks/record.py times the path `neuroloc localize` runs (Localizer.fit), not a side path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neuroloc import Localizer, StimulusSet, wrap_model
from tests.tiny import tiny_model, tiny_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "record.py"


def test_benchmark_times_localizer_fit(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_record", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls = []
    real_fit = Localizer.fit

    def spy(self, lm, stimuli):
        calls.append((self.site, self.pooling, self.settings.batch_size, len(stimuli)))
        return real_fit(self, lm, stimuli)

    monkeypatch.setattr(Localizer, "fit", spy)
    lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
    texts = ("the quick brown fox", "she looked for the keys", "a dog", "pome oy ree", "ne sleoming whimp", "os ofuke")
    stim = StimulusSet("toy", texts, tuple("SSSNNN"), ("S", "N"))
    speed = bench.time_record(lm, stim, batch_size=4, repeats=2)
    assert speed > 0
    assert calls == [("residual", "last", 4, 6)] * 2
    tokens = sum(int(b["attention_mask"].sum()) for b in bench.batches(lm, texts, 4))
    assert tokens == sum(len(tiny_tokenizer()(t)["input_ids"]) for t in texts)
    assert bench.time_bare(lm, texts, 4, 1) > 0
