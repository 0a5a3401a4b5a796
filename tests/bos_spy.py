"""A spy on the one encoding path (`neuroloc.text.encoding.encode`): every text any stage of a study runs
through the model is encoded there, so recording the `bos` of every call shows whether the run settings'
BOS policy reached every forward pass."""

from __future__ import annotations

import sys

import pytest

DEFAULTED = "<default>"  # a call that left `bos` to encode's own default


def spy_bos(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace `encode` in `neuroloc.text.encoding` and in every neuroloc module that imported it; returns the
    list that each call's `bos` is appended to (`DEFAULTED` when the caller did not pass one)."""
    from neuroloc.text import encoding

    original = encoding.encode
    calls: list[str] = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("bos", DEFAULTED))
        return original(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("neuroloc") and getattr(module, "encode", None) is original:
            monkeypatch.setattr(module, "encode", spy)
    return calls
