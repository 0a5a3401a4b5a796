"""Deprecated names of the language-network study (`neuroloc.pipelines.language_network`), kept for one
release: `LanguageConfig` and `run_language`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import NeurolocError
from ..evaluate.benchmark import Benchmark
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..runner import RunOptions, run
from ..settings import RunSettings
from ..stimuli.base import StimulusSet
from .language_network import LanguageNetworkConfig

__all__ = ["LanguageConfig", "run_language"]


@dataclass(frozen=True)
class LanguageConfig:
    """Deprecated: `LanguageNetworkConfig` (`percents` is its `sizes`)."""

    percents: Sequence[float] = (0.25, 0.5, 1.0)
    n_controls: int = 2
    mode: str = "zero"
    control_kinds: Sequence[str] = ("random", "magnitude")
    seed: int = 0
    progress: bool = True
    parameters: dict = field(default_factory=dict)
    recordings: Any = None
    align_controls: int = 10
    align_options: dict = field(default_factory=dict)


def run_language(lm: LoadedModel, stimuli: StimulusSet, benchmarks: Sequence[Benchmark], out_dir: str | Path,
                 config: LanguageConfig | None = None, *, localizer: Localizer | None = None, **options) -> Path:
    """Deprecated (use `neuroloc.run(LanguageNetworkConfig(...), out)`): the language-network study on
    in-memory stimuli and built benchmarks. Returns the report's path."""
    warnings.warn("run_language is deprecated; use neuroloc.run(neuroloc.LanguageNetworkConfig(...), out)",
                  DeprecationWarning, stacklevel=2)
    try:
        old = replace(config or LanguageConfig(), **options)
    except TypeError as error:
        raise NeurolocError(f"run_language: {error}; the options are LanguageConfig's fields") from None
    settings = localizer.settings.replace(progress=old.progress) if localizer is not None \
        else RunSettings(progress=old.progress)
    recordings = old.recordings
    new = LanguageNetworkConfig(
        model=lm.identity.get("spec", "in-memory"), settings=settings, seed=old.seed,
        site=tuple(localizer.site) if localizer is not None and not isinstance(localizer.site, str) else
        (localizer.site,) if localizer is not None else ("residual",),
        pooling=localizer.pooling if localizer is not None else "last", sizes=tuple(old.percents),
        mode=old.mode, n_controls=old.n_controls, control_kinds=tuple(old.control_kinds), benchmarks=(),
        recordings=None if recordings is None else "in memory", align_controls=old.align_controls,
        align_options=dict(old.align_options))
    if recordings is not None:
        from ..align.recordings import read_recordings

        recordings = (read_recordings(recordings, **new.align_config().read_options()), {"recordings": "in memory"})
    inputs = {"stimuli": stimuli, "benchmarks": list(benchmarks), "skipped": [], "recordings": recordings}
    run(new, out_dir, lm=lm, inputs=inputs, options=RunOptions(overwrite=True))
    return Path(out_dir) / "report.html"
