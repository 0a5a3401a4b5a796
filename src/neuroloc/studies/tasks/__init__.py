"""Task neurons (relations, knowledge, culture, skills) from labelled prompt–answer data: the culture-neuron
recipe on attribution tables, and causal tests (the class × class effect matrix, dose–response, the
general-ability guard). Units are scored by the registered scores (`localize.score_functions`)."""

from .culnig import culnig_select, label_zscores
from .effects import EFFECT_COLUMNS, GUARD_COLUMNS, dose_response, effect_matrix, general_guard, intervention_sets

__all__ = ["EFFECT_COLUMNS", "GUARD_COLUMNS", "culnig_select", "dose_response", "effect_matrix", "general_guard",
           "intervention_sets", "label_zscores"]
