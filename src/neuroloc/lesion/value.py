"""`value`: replace the selected units by a given value per unit (`values=`, per site name; e.g. each
unit's median on one class of stimuli), at every position."""

from __future__ import annotations

import torch

from .registry import InterventionKind


class Value(InterventionKind):
    name = "value"
    data = "values"
    usage = "value"
    token_local = True

    def edit(self, x, mask, factor, value, context):
        return torch.where(mask, value, x)
