"""Scores, selection, attribution and the Localizer. Importing the package registers every built-in score
(`score_functions.SCORES`), including those defined in their own modules."""

from . import multilingual  # noqa: F401  (registers `specific_related`)
