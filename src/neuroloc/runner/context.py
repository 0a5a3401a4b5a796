"""Where a study runs: its run settings, its checkpoints and its place among torchrun processes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..record.checkpoint import Checkpoint, ItemLog, checkpoint_key, model_fingerprint
from ..record.distributed import DistContext
from ..settings import RunSettings

__all__ = ["RunContext", "quiet"]


def quiet(message: str) -> None:
    """The default log: library use prints nothing."""


@dataclass
class RunContext:
    """What the runner gives a study besides the model.

    `out` is the run's output folder (None: in memory, no checkpoints); a recording's checkpoint is written
    every `every_seconds` seconds and when the run is interrupted (None or 0: no checkpoints at all), named
    with the child study's `prefix`; `dist` is this process's place in a torchrun launch; `log` prints a
    line for the user (the main rank's, unless quiet) and `warn` a warning (always; Python warnings by default).
    `every_batches` also saves every so many batches."""

    settings: RunSettings
    out: Path | None = None
    every_seconds: float | None = 60.0
    every_batches: int | None = None
    prefix: str = ""
    dist: DistContext = field(default_factory=DistContext)
    log: Callable[[str], None] = quiet
    warn: Callable[[str], None] = field(default=lambda message: warnings.warn(message, stacklevel=3))
    _fingerprints: dict = field(default_factory=dict, repr=False)

    @classmethod
    def in_memory(cls, settings: RunSettings) -> "RunContext":
        return cls(settings=settings)

    @property
    def progress(self) -> bool:
        """Progress bars: asked for, and this is the main process."""
        return self.settings.progress and self.dist.is_main

    @property
    def checkpointing(self) -> bool:
        return self.out is not None and bool(self.every_seconds or self.every_batches)

    def child(self, name: str) -> "RunContext":
        """The context of a child study: the same run, its checkpoints named after the child."""
        return replace(self, prefix=f"{self.prefix}{name}-")

    def key(self, lm: Any, **inputs: Any) -> str:
        """A content key over the model's weights and `inputs` (config identity, data hashes): checkpoints
        written for other inputs are never resumed."""
        model = lm.model
        if id(model) not in self._fingerprints:
            self._fingerprints[id(model)] = model_fingerprint(model)
        return checkpoint_key(model=self._fingerprints[id(model)], identity=lm.identity,
                              world=[self.dist.rank, self.dist.world_size], **inputs)

    def checkpoint(self, name: str, key: str) -> Checkpoint | None:
        """This process's checkpoint of one recording (None when the run keeps none)."""
        if not self.checkpointing:
            return None
        return Checkpoint(self.out, key, every=self.every_batches, every_seconds=self.every_seconds or None,
                          name=f"{self.prefix}{name}-rank{self.dist.rank}")

    def item_log(self, name: str, key: str) -> ItemLog | None:
        """This process's record of finished units of work (lesion conditions), or None."""
        if not self.checkpointing:
            return None
        return ItemLog(self.out, key, name=f"{self.prefix}{name}-rank{self.dist.rank}")
