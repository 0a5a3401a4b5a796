"""`add` / `add:K`: add K × a vector per site (`vectors=`, per site name; e.g. a steering vector) to
the selected units, at every position. K defaults to 1."""

from __future__ import annotations

from .registry import InterventionKind


class Add(InterventionKind):
    name = "add"
    argument = "optional"
    default = 1.0
    data = "vectors"
    usage = "add or add:K"
    token_local = True

    def edit(self, x, mask, factor, value, context):
        return x + (value * factor).masked_fill(~mask, 0)
