"""The study protocol: a frozen config plus `run(lm) -> StudyResult`; the runner does everything else.

A study declares its settings as a `StudyConfig` (fields with constraints, checked on construction; the
config *is* the manifest's `parameters`), reads and checks its inputs in `load_inputs()` before any model
loads, and computes in `compute(lm, ctx, inputs)`. Its `StudyResult` writes its own tables and figures into
a folder and contributes report sections; the runner (`neuroloc.runner.run`) owns the model, the output
folder, staging, checkpoints, the manifest, the report, timing and the launcher policy. Studies compose:
a study may run others as children (`ctx.child(name)`), whose results are written in sub-folders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config, Factory, InstanceOf, Interval, param
from ..errors import NeurolocError
from ..settings import RunSettings

if TYPE_CHECKING:  # the runner imports these when it runs; a config module stays light to import
    from ..models.loading import LoadedModel
    from ..report.html import Section
    from .context import RunContext

__all__ = ["StudyConfig", "StudyResult"]


@dataclass(frozen=True, kw_only=True)
class StudyConfig(Config):
    """What every study has: the model, the run settings and the seed; subclasses add their own fields.

    Class attributes: `command` (its name on the command line and in manifests), `title` (the report's
    heading), `shares_work` (its work is shared across torchrun processes; others refuse a launcher)."""

    command: ClassVar[str] = ""
    title: ClassVar[str] = ""
    shares_work: ClassVar[bool] = False
    bos_from_inputs: ClassVar[bool] = False  # the study may take its BOS policy from its inputs (bos None)

    model: str = param("smollm2", InstanceOf(str),
                       help="Hugging Face hub id, local model directory, .gguf file, or 'smollm2'.")
    settings: RunSettings = param(Factory(RunSettings), help="How the model is run.")
    seed: int = param(0, Interval(int, 0, None), help="Seed of everything random in the study.")

    def check(self) -> None:
        if self.settings.bos is None and not self.bos_from_inputs:
            raise NeurolocError(f"bos (--bos): `neuroloc {self.command}` needs a BOS policy (prepend, tokenizer "
                                "or none)")

    def load_inputs(self) -> Any:
        """Read and check every input the study needs (files, data, units) — before the model loads, so a
        bad input costs no model download. The default study reads nothing."""
        return None

    def compute(self, lm: "LoadedModel", ctx: "RunContext", inputs: Any) -> "StudyResult":
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    def run(self, lm: "LoadedModel", ctx: "RunContext | None" = None, inputs: Any = None) -> "StudyResult":
        """Run the study on `lm` in memory (nothing is written: `neuroloc.runner.run` writes); `inputs`
        default to `load_inputs()`. `compute` passes this config's run settings to every stage."""
        from .context import RunContext

        ctx = ctx if ctx is not None else RunContext.in_memory(self.settings)
        inputs = inputs if inputs is not None else self.load_inputs()
        started = time.perf_counter()
        result = self.compute(lm, ctx, inputs)
        result.timings.setdefault("total_s", round(time.perf_counter() - started, 1))
        return result

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (output folders, resuming): every field, with only the run
        settings that can change a result."""
        return {**self.to_dict(), "settings": self.settings.identity()}

    def derived(self, config_type: type["StudyConfig"], **fields: Any) -> "StudyConfig":
        """A child study's config sharing this one's model, run settings and seed."""
        return config_type(model=self.model, settings=self.settings, seed=self.seed, **fields)


@dataclass
class StudyResult:
    """What a study found. Subclasses add their data and override `write` (tables, figures, files into a
    folder), `sections` (report sections) and `manifest_sections` (extra manifest content: data hashes,
    sources); `summary` (headline numbers) goes into the manifest's `results`."""

    config: StudyConfig
    model: dict
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    children: dict[str, "StudyResult"] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        """Write this study's own files (not the manifest or report) into `folder`."""

    def sections(self) -> list["Section"]:
        """Report sections, in order."""
        return []

    def manifest_sections(self) -> dict[str, Any]:
        return {}

    def title(self) -> str:
        return f"{self.config.title or self.config.command} — {self.model.get('spec', 'model')}"
