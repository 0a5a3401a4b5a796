"""Task neurons (relations, knowledge, culture, skills) from labelled prompt–answer data: activation
scores (average precision, Welch t), attribution with the culture-neuron recipe, and causal tests
(the class × class effect matrix, dose–response, the general-ability guard)."""

from .culnig import ATTRIBUTION_SCORES, AttributionMeans, attribution_means, culnig_select, label_zscores
from .effects import EFFECT_COLUMNS, GUARD_COLUMNS, dose_response, effect_matrix, general_guard, intervention_sets
from .scores import ACTIVATION_SCORES, activation_contrast_scores, average_precision_scores, prompt_features

__all__ = ["ACTIVATION_SCORES", "ATTRIBUTION_SCORES", "AttributionMeans", "EFFECT_COLUMNS", "GUARD_COLUMNS",
           "activation_contrast_scores", "attribution_means", "average_precision_scores", "culnig_select",
           "dose_response", "effect_matrix", "general_guard", "intervention_sets", "label_zscores", "prompt_features"]
