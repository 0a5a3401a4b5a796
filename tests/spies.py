"""Spies that watch every forward pass of a model: what each row's sequence starts with."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class ForwardSpy:
    """Records, for every forward pass of `model` that is not a cached continuation (no past key values),
    the first real token of each row (by the attention mask; the first token without one)."""

    def __init__(self) -> None:
        self.first_tokens: list[int] = []
        self.passes = 0

    def __call__(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or kwargs.get("past_key_values") is not None and _cached(kwargs["past_key_values"]):
            return
        mask = kwargs.get("attention_mask")
        self.passes += 1
        for row in range(ids.shape[0]):
            real = torch.nonzero(mask[row]).flatten() if mask is not None and mask.dim() == 2 else None
            first = int(real[0]) if real is not None and real.numel() else 0
            self.first_tokens.append(int(ids[row, first]))


def _cached(past) -> bool:
    length = getattr(past, "get_seq_length", None)
    return bool(length() if callable(length) else past)


@contextlib.contextmanager
def watch_forward(model: torch.nn.Module) -> Iterator[ForwardSpy]:
    spy = ForwardSpy()
    handle = model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        yield spy
    finally:
        handle.remove()


def assert_bos_policy(spy: ForwardSpy, policy: str, bos_id: int) -> None:
    """Every recorded sequence starts with BOS under `prepend`, and none does under `none` (texts that do
    not themselves start with the BOS token)."""
    assert spy.passes > 0, "no forward pass was watched"
    starts = set(spy.first_tokens)
    if policy == "prepend":
        assert starts == {bos_id}, f"sequences start with {sorted(starts)[:10]}, not only BOS {bos_id}"
    else:
        assert bos_id not in starts, f"{spy.first_tokens.count(bos_id)} of {len(spy.first_tokens)} sequences " \
                                     f"start with BOS under policy {policy}"
