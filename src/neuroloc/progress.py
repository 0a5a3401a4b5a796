"""Progress bars (rich) that the CLI shows and `--quiet` or library use silences.

On a terminal a live bar is drawn on stderr; when stderr is a log file or a pipe (CI, `nohup`,
`make demo | tee`), a plain line is printed at every 10% instead, so long runs still show where they are.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Advance = Callable[[int], None]


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, *, completed: int = 0) -> Iterator[Advance]:
    """Yield `advance(n)`; reports progress on stderr when enabled, does nothing otherwise. A resumed task
    starts at `completed` of `total` and says so."""
    if not enabled:
        yield lambda n: None
        return
    console = Console(stderr=True)
    if completed:
        description = f"{description} (resuming from {completed}/{total})"
    if not console.is_terminal:
        yield _line_reporter(description, total, completed)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _line_reporter(description: str, total: int, completed: int = 0) -> Advance:
    """`advance` that prints `description: done/total (elapsed)` each time another tenth is done."""
    started = time.perf_counter()
    state = {"done": completed, "reported": completed * 10 // max(total, 1)}

    def advance(n: int) -> None:
        state["done"] += n
        tenth = state["done"] * 10 // max(total, 1)
        if tenth > state["reported"] or state["done"] >= total:
            state["reported"] = tenth
            elapsed = time.perf_counter() - started
            print(f"{description}: {state['done']}/{total} ({elapsed:.0f} s)", file=sys.stderr, flush=True)

    return advance
