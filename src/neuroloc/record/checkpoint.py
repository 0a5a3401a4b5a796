"""Resumable recordings: statistics checkpointed every N batches into the output folder, atomically.

A checkpoint is one safetensors file holding a statistics object's `state_dict()` (any object with
`state_dict()` / `load_state_dict()` of tensors: `StatsStore`, a single `Moments`, …) plus the mask of
the stimuli already folded in. Its metadata carries a key: the sha256 of the run's inputs (model
weights fingerprint, stimulus content hash, every parameter that changes a statistic). A rerun with
the same key resumes from the mask (or reuses a finished recording outright); any other key discards
the file. Names never enter the key, contents do.

Use (what `Localizer.fit` / the pipelines call):

    key = checkpoint_key(model=model_fingerprint(lm.model) | lm.identity, data=stimuli.content_hash(),
                         parameters={...})
    ckpt = Checkpoint(out_dir, key, every=20)
    store = collect_resumable(recorder, stimuli, ckpt, kinds=("moments", "tokens"))
    ... write outputs ...; ckpt.remove()   # optional: drop it once the outputs are written
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..interrupts import Interrupted, protected
from ..io import atomic_path, atomic_write_text
from ..stimuli.base import StimulusSet
from .collect import add_batch
from .recorder import Recorder
from .stats import StatsStore

if TYPE_CHECKING:
    import pandas as pd

CHECKPOINT_DIR = ".checkpoints"
_DONE = "__neuroloc_done__"
_FULL_HASH_LIMIT = 2 * 10**8  # parameters; above it the fingerprint samples each tensor
log = logging.getLogger(__name__)


def checkpoint_key(**inputs: Any) -> str:
    """sha256 of the inputs as canonical JSON (sorted keys; tensors and paths as text)."""
    payload = json.dumps(inputs, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def model_fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """Content hash of a model's parameters and buffers (names, shapes, dtypes and values).

    Models up to 2·10⁸ parameters are hashed byte for byte; larger ones hash each tensor's float64
    sum, absolute sum and a strided sample of its values, which any real change of weights moves."""
    digest = hashlib.sha256()
    tensors = list(model.state_dict().items())
    full = sum(t.numel() for _, t in tensors) <= _FULL_HASH_LIMIT
    with torch.inference_mode():
        for name, tensor in tensors:
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if tensor.device.type == "meta":
                continue
            flat = tensor.detach().reshape(-1)
            if not full:
                step = max(flat.numel() // 4096, 1)
                sums = torch.stack([flat.double().sum(), flat.double().abs().sum()])
                flat = torch.cat([flat[::step].double(), sums])
            digest.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {"weights_sha256": digest.hexdigest(), "fingerprint": "full" if full else "sampled"}


class Checkpoint:
    """The checkpoint of one recording (`name`) in `out_dir/.checkpoints/`, valid only for `key`.

    It is saved every `every` batches and every `every_seconds` seconds, whichever comes first (None:
    not on that count), and once more when the recording ends or is interrupted (`collect_resumable`)."""

    def __init__(self, out_dir: str | Path, key: str, *, every: int | None = 20, every_seconds: float | None = None,
                 name: str = "stats") -> None:
        if every is not None and every < 1:
            raise ValueError(f"checkpoint interval must be ≥ 1 batch, got {every}")
        if every_seconds is not None and every_seconds <= 0:
            raise ValueError(f"checkpoint interval must be > 0 seconds, got {every_seconds}")
        self.path = Path(out_dir) / CHECKPOINT_DIR / f"{name}.safetensors"
        self.key = key
        self.every = every
        self.every_seconds = every_seconds
        self.done: torch.Tensor | None = None
        self._since_save = 0
        self._saved_at = time.monotonic()
        self.resumed_from = 0

    def restore(self, stats: Any, n_items: int) -> torch.Tensor:
        """Load a matching checkpoint into `stats` and return the done mask (all False when there is
        none, or when it was written for other inputs, which is then removed)."""
        self.done = torch.zeros(n_items, dtype=torch.bool)
        if not self.path.is_file():
            return self.done
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {k: handle.get_tensor(k) for k in handle.keys()}
        except (OSError, ValueError, RuntimeError, SafetensorError) as error:
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, error)
            self.path.unlink(missing_ok=True)
            return self.done
        done = state.pop(_DONE, None)
        if meta.get("key") != self.key or done is None or done.numel() != n_items:
            log.warning("checkpoint %s was written for other inputs (model, data or parameters): starting over",
                        self.path)
            self.path.unlink(missing_ok=True)
            return self.done
        stats.load_state_dict(state)
        self.done = done.bool()
        self.resumed_from = int(self.done.sum())
        return self.done

    @property
    def complete(self) -> bool:
        return self.done is not None and bool(self.done.all())

    def step(self, stats: Any, ids: Iterable[int]) -> None:
        """Mark `ids` as folded into `stats`; save every `every` calls."""
        assert self.done is not None, "call restore() first"
        self.done[list(ids)] = True
        self._since_save += 1
        due_batches = self.every is not None and self._since_save >= self.every
        due_time = self.every_seconds is not None and time.monotonic() - self._saved_at >= self.every_seconds
        if due_batches or due_time:
            self.save(stats)

    def save(self, stats: Any) -> None:
        """Write the statistics and the done mask atomically."""
        assert self.done is not None, "call restore() first"
        state = {k: v.detach().cpu().contiguous() for k, v in stats.state_dict().items()}
        state[_DONE] = self.done.to(torch.uint8)
        with atomic_path(self.path) as tmp:
            save_file(state, str(tmp), metadata={"key": self.key, "format": "neuroloc.Checkpoint/1"})
        self._since_save = 0
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ItemLog:
    """Results of finished units of work (e.g. lesion conditions), one parquet file each, in
    `out_dir/.checkpoints/<name>/`, valid only for `key`: a rerun with the same inputs skips the finished
    ones, any other key starts the log afresh."""

    def __init__(self, out_dir: str | Path, key: str, *, name: str) -> None:
        self.directory = Path(out_dir) / CHECKPOINT_DIR / name
        self.key = key
        stamp = self.directory / "key.txt"
        if self.directory.is_dir() and (not stamp.is_file() or stamp.read_text().strip() != key):
            log.warning("finished work in %s was done for other inputs: starting over", self.directory)
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            atomic_write_text(stamp, key)

    def _path(self, item: str) -> Path:
        return self.directory / f"{hashlib.sha256(item.encode()).hexdigest()[:24]}.parquet"

    def get(self, item: str) -> "pd.DataFrame | None":
        """The saved result of `item`, or None (never saved, or unreadable)."""
        import pandas as pd

        path = self._path(item)
        if not path.is_file():
            return None
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable result %s (%s)", path, error)
            return None

    def put(self, item: str, frame: "pd.DataFrame") -> None:
        """Save `item`'s result atomically."""
        with atomic_path(self._path(item)) as tmp:
            frame.to_parquet(tmp, index=False)

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.parquet")))

    def get_object(self, item: str) -> Any:
        """The saved Python object of a finished stage `item` (any picklable result), or None."""
        path = self._path(item).with_suffix(".pkl")
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as error:
            log.warning("ignoring unreadable result %s (%s)", path, error)
            return None

    def put_object(self, item: str, value: Any) -> None:
        """Save a finished stage's result atomically (a checkpoint of this run only: keyed, then removed)."""
        with atomic_path(self._path(item).with_suffix(".pkl")) as tmp:
            with open(tmp, "wb") as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)


def collect_resumable(recorder: Recorder, stimuli: StimulusSet, checkpoint: Checkpoint, *,
                      kinds: Sequence[str] = ("moments", "tokens"), store: StatsStore | None = None) -> StatsStore:
    """`record.collect.collect` that resumes from (and keeps) `checkpoint`: only the stimuli not yet
    folded in are recorded; a finished checkpoint is reused without running the model. An interrupt
    (`neuroloc.interrupts`) saves the statistics of every batch folded in so far before it propagates."""
    store = store if store is not None else StatsStore()
    done = checkpoint.restore(store, len(stimuli))
    pending = [i for i in range(len(stimuli)) if not done[i]]
    if checkpoint.resumed_from:
        log.warning("%s: resuming from %d/%d stimuli (checkpoint %s)", recorder.description,
                    checkpoint.resumed_from, len(stimuli), checkpoint.path)
    if pending:
        texts = [stimuli.texts[i] for i in pending]
        spans = None if stimuli.word_spans is None else [stimuli.word_spans[i] for i in pending]
        labels = [stimuli.conditions[i] for i in pending]
        count_from = None if stimuli.count_from is None else [stimuli.count_from[i] for i in pending]
        try:
            for batch in recorder.iter_batches(texts, spans, token_stats="tokens" in kinds, count_from=count_from,
                                               completed=checkpoint.resumed_from, total=len(stimuli)):
                with protected():  # a batch is folded in and marked done, or neither
                    add_batch(store, batch, labels, kinds)
                    checkpoint.step(store, [pending[j] for j in batch.texts])
        except Interrupted:
            if bool(checkpoint.done.any()):  # an interrupt before the first batch leaves nothing to resume from
                with protected():
                    checkpoint.save(store)
            raise
        with protected():
            checkpoint.save(store)
    return store
