"""Interrupts that leave consistent state: SIGINT and SIGTERM end a run between two updates, never inside one.

The runner installs `interruptible()`: SIGTERM then raises `Interrupted` like SIGINT does, and while code runs
inside `protected()` (folding a batch into statistics, writing a checkpoint) the signal is held back and
raised when the block ends. Code that saves on the way out (`except Interrupted:` → checkpoint → re-raise)
therefore always saves a state that some batch boundary produced. Without the runner (plain Python use),
signals keep their defaults and `protected()` costs nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Interrupted", "interruptible", "protected"]


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop (SIGINT or SIGTERM); `signal_name` says which."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpointed: bool | None = None  # the runner says whether anything was saved to resume from


_state = {"installed": False, "depth": 0, "pending": None}


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _state["depth"]:
        _state["pending"] = name
        return
    raise Interrupted(name)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (held back inside `protected()`); the
    previous handlers come back afterwards. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    _state.update(installed=True, depth=0, pending=None)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.update(installed=False, depth=0, pending=None)


@contextlib.contextmanager
def protected() -> Iterator[None]:
    """A block that a signal never splits: an interrupt asked for inside it is raised when it ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    pending = _state["pending"]
    if pending and not _state["depth"]:
        _state["pending"] = None
        raise Interrupted(pending)
