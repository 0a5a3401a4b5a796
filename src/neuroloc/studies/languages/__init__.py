"""Multilingual neurons: language-specific units by LAPE (Tang et al., 2024) and the language-specific /
-related / -agnostic split (Zhang et al., 2025) read from a fitted Localizer, their deactivation matrix and
output-language steering. Counting runs through the core (`Recorder`, `StatsStore` token statistics) and
selection through the registered scores `lape` and `specific_related` (`neuroloc.localize`)."""

from .deactivation import (DEACTIVATION_COLUMNS, Deactivation, deactivation_conditions, deactivation_matrix,
                           deactivation_summary, deactivation_table, mean_nll, score_condition)
from .selection import CATEGORIES, SELECTION_SCORES, LanguageSelection, overlap_table
from .steering import (STEERING_COLUMNS, Steering, check_mode, generate, generate_condition, language_identifier,
                       prompt_prefix, steer, steering_conditions, steering_pairs, steering_tables)
from .tables import category_units, language_units, per_layer_distribution, scores_table

__all__ = [
    "CATEGORIES", "DEACTIVATION_COLUMNS", "SELECTION_SCORES", "STEERING_COLUMNS", "Deactivation", "LanguageSelection",
    "Steering", "category_units", "check_mode", "deactivation_conditions", "deactivation_matrix",
    "deactivation_summary", "deactivation_table", "generate", "generate_condition", "language_identifier",
    "language_units", "mean_nll", "overlap_table", "per_layer_distribution", "prompt_prefix", "score_condition",
    "scores_table", "steer", "steering_conditions", "steering_pairs", "steering_tables",
]
