"""Interventions on units through hooks: zero, mean, scale:K, value, add[:K] — a registry of kinds.

`lesion(lm, units, "zero" | "mean" | "scale:K" | "value" | "add:K")` applies at every layer of the
selected units, at every position or at `positions=` ("last", or token positions); a lesioned model is
still just the model, so any benchmark can consume it. `intervene` takes any function of (activation, mask[, context]).
"""

from .core import coordinate_mask, intervene, intervene_per_site, lesion, position_mask
from .registry import INTERVENTIONS, Intervention, InterventionKind, register_intervention

__all__ = ["INTERVENTIONS", "Intervention", "InterventionKind", "coordinate_mask", "intervene",
           "intervene_per_site", "lesion", "position_mask", "register_intervention"]
