"""Below-the-lesion reuse: the residual stream under the lowest edited layer, computed once per batch.

Inside `trunk_cache(lm, levels=..., max_bytes=...)`, every scoring pass on `lm.model` goes through
`TrunkCache.forward`: with the hooks now on the model leaving layers < r intact (`HookState`), the pass
starts from the highest stored level L ≤ r (the residual entering layer L, stored for this very batch)
and captures the wanted levels in (L, r] that it computes. Batches are keyed by their content (token
ids, positions, attention structure), so any benchmark that scores the same texts the same way finds
its trunk again, and a lesion study that evaluates its conditions from the least to the most invasive
computes each layer below the lesions once.

Memory is bounded by `max_bytes`: beyond it nothing more is stored (nor captured), the log says so
once, and the batches left out run from layer 0 — slower, never different. The first resumed pass of
a cache is checked against the whole model; a model whose layers cannot be resumed
(`TrunkUnsupported`) or whose check fails is run whole from then on, and the log says why.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
from typing import Callable, Iterator, Sequence

import torch

from ..models.loading import LoadedModel
from ..models.trunk import TrunkUnsupported, capture, resume

__all__ = ["TrunkCache", "active_trunk_cache", "logits_agree", "trunk_cache"]

log = logging.getLogger(__name__)

_ACTIVE: contextvars.ContextVar["TrunkCache | None"] = contextvars.ContextVar("neuroloc_trunk_cache", default=None)


def batch_key(*parts: torch.Tensor) -> str:
    """A content hash of a batch's inputs (token ids, positions, attention structure)."""
    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        tensor = part.detach().cpu().contiguous()
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def logits_agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two runs' logits agree to float noise (1e-3 in float32; bfloat16/float16 by the mean)."""
    difference = (a.float() - b.float()).abs()
    if a.dtype in (torch.float32, torch.float64):
        return bool(difference.max() <= 1e-3)
    return bool(difference.mean() <= 5e-2)


class TrunkCache:
    """Stored residual streams per batch and level for one model, within `max_bytes`."""

    def __init__(self, lm: LoadedModel, levels: Sequence[int], max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be ≥ 0, got {max_bytes}")
        self.lm, self.max_bytes = lm, max_bytes
        self.levels = sorted({int(level) for level in levels if 1 <= level <= lm.layout.n_layers})
        self.store: dict[str, dict[int, torch.Tensor]] = {}
        self.arity: int | None = None
        self.bytes = 0
        self.full = False
        self.disabled: str | None = None
        self.checked = False
        self.stats = {"resumed": 0, "whole": 0, "layers_skipped": 0}

    def forward(self, key: str, run: Callable[[], torch.Tensor], intact_layers: int) -> torch.Tensor:
        """Logits of `run()` (a forward pass of the batch `key`), skipping the stored layers below
        `intact_layers` and storing the wanted levels it computes."""
        if self.disabled or not self.levels:
            self.stats["whole"] += 1
            return run()
        stored = self.store.get(key, {})
        start = max((level for level in stored if level <= intact_layers), default=0)
        wanted = [] if self.full else [level for level in self.levels
                                       if start < level <= intact_layers and level not in stored]
        try:
            with contextlib.ExitStack() as stack:
                found = stack.enter_context(capture(self.lm.layout, wanted)) if wanted else None
                if start:
                    stack.enter_context(resume(self.lm.layout, start, stored[start], self.arity))
                logits = run()
        except TrunkUnsupported as error:
            self._disable(str(error))
            return run()
        if found is not None and found.hidden:
            self.arity = found.arity
            self._keep(key, found.hidden)
        if start:
            self.stats["resumed"] += 1
            self.stats["layers_skipped"] += start
            if not self.checked:
                self.checked = True
                whole = run()
                if not logits_agree(logits, whole):
                    self._disable("resuming from the stored residual stream changed the logits")
                    return whole
        else:
            self.stats["whole"] += 1
        return logits

    def _keep(self, key: str, hidden: dict[int, torch.Tensor]) -> None:
        for level in sorted(hidden, reverse=True):  # the highest level saves the most
            size = hidden[level].numel() * hidden[level].element_size()
            if self.bytes + size > self.max_bytes:
                if not self.full:
                    self.full = True
                    log.warning("trunk cache full (%.0f MiB of %.0f MiB): batches not stored run every layer "
                                "(raise the cache size to reuse more)", self.bytes / 2**20, self.max_bytes / 2**20)
                continue
            self.store.setdefault(key, {})[level] = hidden[level]
            self.bytes += size

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        self.store.clear()
        self.bytes = 0
        log.warning("below-the-lesion reuse is off for %s: %s; every layer is run", self.lm.layout.model_type, reason)


@contextlib.contextmanager
def trunk_cache(lm: LoadedModel, *, levels: Sequence[int], max_bytes: int) -> Iterator[TrunkCache]:
    """Store and reuse the residual stream entering each of `levels` (1..n_layers) for every scoring
    pass on `lm.model` inside the block, within `max_bytes`."""
    cache = TrunkCache(lm, levels, max_bytes)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        cache.store.clear()


def active_trunk_cache(model: torch.nn.Module) -> TrunkCache | None:
    """The trunk cache open for `model`, if any."""
    cache = _ACTIVE.get()
    return cache if cache is not None and cache.lm.model is model else None
