"""`zero`: set the selected units to 0 (the classic lesion)."""

from __future__ import annotations

from .registry import InterventionKind


class Zero(InterventionKind):
    name = "zero"
    usage = "zero"
    token_local = True

    def edit(self, x, mask, factor, value, context):
        return x.masked_fill(mask, 0)
