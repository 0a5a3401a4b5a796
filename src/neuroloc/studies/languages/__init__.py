"""Multilingual neurons: language-specific units by LAPE (Tang et al., 2024) and the language-specific /
-related / -agnostic split (Zhang et al., 2025), their deactivation matrix and output-language steering."""

from .counting import ActivationCounts, count_language
from .deactivation import DEACTIVATION_COLUMNS, deactivation_matrix, deactivation_summary, mean_nll
from .selection import (CATEGORIES, LanguageSelection, activation_probability, categorize, lape, normalized_entropy,
                        overlap_table, probability_bar, specific_related, zhang_scores)
from .steering import STEERING_COLUMNS, generate, language_identifier, prompt_prefix, steer
from .tables import category_units, language_units, per_layer_distribution, scores_table

METHODS = ("lape", "specific-related")

__all__ = [
    "CATEGORIES", "DEACTIVATION_COLUMNS", "METHODS", "STEERING_COLUMNS", "ActivationCounts", "LanguageSelection",
    "activation_probability", "categorize", "category_units", "count_language", "deactivation_matrix",
    "deactivation_summary", "generate", "language_identifier", "language_units", "lape", "mean_nll",
    "normalized_entropy", "overlap_table", "per_layer_distribution", "probability_bar", "prompt_prefix",
    "scores_table", "specific_related", "steer", "zhang_scores",
]
