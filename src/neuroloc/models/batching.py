"""Automatic micro-batching: halve the batch when the accelerator runs out of memory, and say so.

Every per-batch forward in neuroloc (the Recorder's, the scorer's) is a pure function of the items of
the batch, and padding and batch size never change an answer, so a batch that does not fit can be
split and retried. `MicroBatcher.map(items, forward)` walks `items` in chunks of the current batch
size; on an out-of-memory error it frees the cache, halves the size, retries the same items, and keeps
the smaller size for the rest of the run (and for later calls on the same batcher).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from ..errors import NeurolocError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/MPS/XPU out-of-memory errors (torch.OutOfMemoryError or the older RuntimeError text)."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class MicroBatcher:
    """Run a per-batch function over items in batches that shrink (by halves) to what fits in memory.

    `notify(message)` is told each time the batch halves (default: a logging warning), e.g. the CLI's
    console; `halvings` lists (old, new) sizes, for manifests.
    """

    def __init__(self, batch_size: int, *, what: str = "batch",
                 notify: Callable[[str], None] | None = None) -> None:
        if batch_size < 1:
            raise NeurolocError(f"batch size must be ≥ 1, got {batch_size}")
        self.batch_size = batch_size
        self.what = what
        self.notify = notify or log.warning
        self.halvings: list[tuple[int, int]] = []

    def map(self, items: Sequence[T], forward: Callable[[Sequence[T]], R]) -> Iterator[tuple[Sequence[T], R]]:
        """Yield (chunk, forward(chunk)) over consecutive chunks covering `items` in order."""
        start = 0
        while start < len(items):
            chunk = items[start:start + self.batch_size]
            try:
                result = forward(chunk)
            except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled
                if not is_out_of_memory(error):
                    raise
                _free_cache()
                self._halve(len(chunk), error)
                continue
            yield chunk, result
            start += len(chunk)

    def _halve(self, size: int, error: BaseException) -> None:
        if size <= 1:
            raise NeurolocError(
                f"out of memory on a single {self.what} item ({str(error).splitlines()[0][:120]}); "
                "use --max-tokens to shorten texts, a smaller --dtype, or spread the model with device_map"
            ) from None
        new = max(size // 2, 1)
        self.halvings.append((size, new))
        self.batch_size = new
        self.notify(f"out of memory at {self.what} size {size}: halving to {new} (kept for the rest of the run)")
