"""Micro-batching halves the batch on out-of-memory, says so, and gives the same answers."""

import logging

import numpy as np
import pytest
import torch

from neuroloc import NeurolocError, token_logprobs
from neuroloc.models.batching import MicroBatcher, is_out_of_memory
from tests.tiny import tiny_model, tiny_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "she looked for the keys", "a dog", "what is the answer",
         "pome oy ree holily shourn", "ne sleoming whimp ree rere", "os ofuke pome shourn oy", "the lazy dog"]


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_halves_until_it_fits_and_keeps_the_size():
    seen, messages = [], []

    def forward(chunk):
        if len(chunk) > 3:
            raise _oom()
        seen.append(list(chunk))
        return [x * 10 for x in chunk]

    batcher = MicroBatcher(16, notify=messages.append)
    out = [(list(c), r) for c, r in batcher.map(list(range(11)), forward)]
    assert [x for _, r in out for x in r] == [x * 10 for x in range(11)]  # every item once, in order
    assert batcher.batch_size == 2 and batcher.halvings == [(11, 5), (5, 2)]
    assert all(len(c) <= 2 for c in seen) and len(messages) == 2 and "halving to 5" in messages[0]


def test_other_errors_pass_through_and_a_single_item_that_does_not_fit_is_explained():
    with pytest.raises(ValueError):
        list(MicroBatcher(4).map([1, 2], lambda chunk: (_ for _ in ()).throw(ValueError("bad"))))
    with pytest.raises(NeurolocError, match="single"):
        list(MicroBatcher(4, notify=lambda m: None).map([1, 2], lambda chunk: (_ for _ in ()).throw(_oom())))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


class OomAbove(torch.nn.Module):
    """A model that runs out of memory on batches larger than `limit` (as a GPU would)."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.config = model, limit, model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[0] > self.limit:
            raise _oom()
        return self.model(input_ids=input_ids, **kwargs)


def test_scoring_survives_out_of_memory_with_the_same_answers(caplog):
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    plain = token_logprobs(model, tokenizer, TEXTS, batch_size=8, bos="prepend")
    with caplog.at_level(logging.WARNING, logger="neuroloc.models.batching"):
        shrunk = token_logprobs(OomAbove(model, 3), tokenizer, TEXTS, batch_size=8, bos="prepend")
    assert "out of memory at scoring batch size 8: halving to 4" in caplog.text
    for a, b in zip(plain, shrunk):
        np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_real_cuda_out_of_memory_is_halved():
    """Allocations of half the GPU per item: a batch of 4 cannot fit, a batch of 1 can."""
    per_item = torch.cuda.get_device_properties(0).total_memory // 2

    def forward(chunk):
        block = torch.empty(per_item * len(chunk), dtype=torch.uint8, device="cuda")
        del block
        return list(chunk)

    batcher = MicroBatcher(4, notify=lambda m: None)
    assert [x for _, r in batcher.map([0, 1, 2, 3, 4], forward) for x in r] == [0, 1, 2, 3, 4]
    assert batcher.batch_size == 1
