"""One exception type for problems the user can fix, so the CLI can print them without a traceback."""


class NeurolocError(ValueError):
    """Bad input or an impossible request; the message names the culprit and the fix."""


class MissingData(NeurolocError):
    """A data set was not found where it was looked for (a study may skip a benchmark without data)."""
