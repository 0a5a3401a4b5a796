"""Interventions on units through hooks: zero, mean, scale:K, value, add[:K] — a registry of kinds.

`lesion(lm, units, "zero" | "mean" | "scale:K" | "value" | "add:K")` applies at every layer and
position of the selected units; a lesioned model is still just the model, so any benchmark can
consume it. `intervene` takes any function of (activation, mask[, context]).
"""

from .core import coordinate_mask, intervene, intervene_per_site, lesion
from .registry import INTERVENTIONS, Intervention, InterventionKind, register_intervention

__all__ = ["INTERVENTIONS", "Intervention", "InterventionKind", "coordinate_mask", "intervene",
           "intervene_per_site", "lesion", "register_intervention"]
