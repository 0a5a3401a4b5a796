"""`mean`: replace the selected units by their mean on a reference text set (`means=`, per site name
one value per hooked coordinate; the localizer stores them for its target condition)."""

from __future__ import annotations

import torch

from .registry import InterventionKind


class Mean(InterventionKind):
    name = "mean"
    data = "means"
    usage = "mean"

    def edit(self, x, mask, factor, value, context):
        return torch.where(mask, value, x)
