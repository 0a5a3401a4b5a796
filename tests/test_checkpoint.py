"""Checkpointed recordings: an interrupted run resumes to the statistics of an uninterrupted one, a
finished one is reused without the model, and any change of model, data or parameters starts over."""

import pytest
import torch

from neuroloc import StimulusSet
from neuroloc.models.loading import wrap_model
from neuroloc.record.checkpoint import Checkpoint, checkpoint_key, collect_resumable, model_fingerprint
from neuroloc.record.collect import collect
from neuroloc.record.recorder import Recorder
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "she looked for the keys in the drawer",
         "sentences and strings are contrasted here", "the dog jumps over the fox", "what is the answer",
         "she didn't know that the keys were there", "pome oy ree holily shourn", "ne sleoming whimp ree rere",
         "os ofuke pome shourn oy", "whimp holily ree ne os", "rere ofuke sleoming pome", "oy oy ree whimp"]
KINDS = ("moments", "tokens")


class Interrupted(Exception):
    pass


class CountingRecorder(Recorder):
    """A Recorder that counts the texts it runs and can be 'killed' after some batches."""

    def __init__(self, *args, stop_after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after, self.texts_run, self.batches = stop_after, 0, 0

    def iter_batches(self, texts, *args, **kwargs):
        for batch in super().iter_batches(texts, *args, **kwargs):
            if self.stop_after is not None and self.batches == self.stop_after:
                raise Interrupted
            self.batches += 1
            self.texts_run += len(batch.texts)
            yield batch


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def stimuli():
    return StimulusSet("toy", tuple(TEXTS), tuple(["S"] * 6 + ["N"] * 6), ("S", "N"))


def recorder(lm, **kwargs):
    return CountingRecorder(lm, lm.layout.sites(["residual", "mlp"]), batch_size=3, bos="prepend", **kwargs)


def key(lm, stimuli, **parameters):
    return checkpoint_key(model=model_fingerprint(lm.model), data=stimuli.content_hash(),
                          parameters={"pooling": "last", "kinds": KINDS, **parameters})


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:  # float32 activations in other batch compositions: equal up to rounding
        torch.testing.assert_close(sa[name].double(), sb[name].double(), rtol=1e-5, atol=1e-6, msg=name)


def test_interrupted_run_resumes_to_the_uninterrupted_statistics(lm, stimuli, tmp_path):
    whole = collect(recorder(lm), stimuli, kinds=KINDS)
    killed = recorder(lm, stop_after=2)
    with pytest.raises(Interrupted):
        collect_resumable(killed, stimuli, Checkpoint(tmp_path, key(lm, stimuli), every=1), kinds=KINDS)
    assert killed.texts_run == 6 and (tmp_path / ".checkpoints" / "stats.safetensors").is_file()

    resumed = recorder(lm)
    checkpoint = Checkpoint(tmp_path, key(lm, stimuli), every=1)
    store = collect_resumable(resumed, stimuli, checkpoint, kinds=KINDS)
    assert checkpoint.resumed_from == 6 and resumed.texts_run == 6  # only the rest was recorded
    assert store.count("S") == 6 and store.count("N") == 6
    assert_same(store, whole)

    reused = recorder(lm)  # finished: reused without running the model
    again = collect_resumable(reused, stimuli, Checkpoint(tmp_path, key(lm, stimuli)), kinds=KINDS)
    assert reused.texts_run == 0
    assert_same(again, whole)


@pytest.mark.parametrize("change", ["data", "parameters", "model"])
def test_any_input_change_invalidates_the_checkpoint(lm, stimuli, tmp_path, change):
    collect_resumable(recorder(lm), stimuli, Checkpoint(tmp_path, key(lm, stimuli)), kinds=KINDS)
    other_lm, other_stimuli, parameters = lm, stimuli, {}
    if change == "data":  # same name, one text different
        other_stimuli = StimulusSet("toy", (TEXTS[0] + " again",) + tuple(TEXTS[1:]), stimuli.conditions,
                                    stimuli.contrast)
    elif change == "parameters":
        parameters = {"pooling": "mean"}
    else:  # same architecture and name, one weight changed
        other_lm = wrap_model(tiny_model("llama"), tiny_tokenizer())
        with torch.no_grad():
            other_lm.model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    rerun = recorder(other_lm)
    checkpoint = Checkpoint(tmp_path, key(other_lm, other_stimuli, **parameters))
    collect_resumable(rerun, other_stimuli, checkpoint, kinds=KINDS)
    assert checkpoint.resumed_from == 0 and rerun.texts_run == len(TEXTS)


def test_model_fingerprint_is_content_not_name():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(tiny_model("llama", seed=1))


def test_damaged_checkpoint_is_ignored(lm, stimuli, tmp_path):
    path = tmp_path / ".checkpoints" / "stats.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    rerun = recorder(lm)
    collect_resumable(rerun, stimuli, Checkpoint(tmp_path, key(lm, stimuli)), kinds=KINDS)
    assert rerun.texts_run == len(TEXTS) and path.is_file()
