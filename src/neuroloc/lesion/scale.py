"""`scale:K`: multiply the selected units by K (×0 suppresses, ×2 enhances)."""

from __future__ import annotations

import torch

from .registry import InterventionKind


class Scale(InterventionKind):
    name = "scale"
    argument = "required"
    usage = "scale:K (e.g. scale:2)"
    token_local = True

    def edit(self, x, mask, factor, value, context):
        return x * torch.where(mask, factor, 1.0).to(x.dtype)
