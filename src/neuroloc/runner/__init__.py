"""The study protocol and its one runner (see `study` and `run`)."""

from .context import RunContext
from .output import OutputFolder, write_result
from .run import RunOptions, run
from .study import StudyConfig, StudyResult

__all__ = ["OutputFolder", "RunContext", "RunOptions", "StudyConfig", "StudyResult", "run", "write_result"]
