"""`mean`: replace the selected units by their mean on a reference text set (`means=`, per site name
one value per hooked coordinate; the localizer stores them for its target condition)."""

from __future__ import annotations

from .value import Value


class Mean(Value):
    """Replace by the stored unit means: `value` with the localizer's means as its data."""

    name = "mean"
    data = "means"
    usage = "mean"
