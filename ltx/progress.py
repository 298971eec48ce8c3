"""Progress of long loops outside Lightning (evaluation, `ltx explain`): counts, elapsed time, ETA.

Lightning draws its own bars for training and prediction (`trainer.enable_progress_bar`). These
bars go to stderr through one shared rich console, so log lines printed meanwhile (through
`console`, e.g. by rich's logging handler) appear above the bar instead of tearing it. Only the
first process draws them (under DDP every rank runs the loop). Set `LTX_QUIET=1` (CI) to switch
them off; on a non-terminal rich prints only the final state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from lightning.fabric.utilities.rank_zero import rank_zero_only
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

#: the console every bar and the CLI's log handler write to
console = Console(stderr=True)


class ConsoleHandler(logging.Handler):
    """Log lines through `console`: above a running bar, never wrapped (paths stay whole for grep);
    warnings and errors prefixed with their level."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        console.print(prefix + self.format(record), markup=False, highlight=False, soft_wrap=True)


def quiet() -> bool:
    """Whether progress bars are off: `LTX_QUIET` set to 1, true or yes, or not the first process."""
    return os.environ.get("LTX_QUIET", "").strip().lower() in {"1", "true", "yes"} or rank_zero_only.rank > 0


def _progress(disable: bool | None) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=quiet() if disable is None else disable)


def track(items: Iterable[T], description: str, total: int | None = None, *,
          disable: bool | None = None) -> Iterator[T]:
    """Yield `items` while a bar shows done/total, elapsed time and ETA (`disable=None`: `quiet()`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _progress(disable) as bar:
        yield from bar.track(items, total=total, description=description)


@contextmanager
def work_bar(total: int, description: str, *, disable: bool | None = None) -> Iterator[Callable[[int], None]]:
    """A bar over `total` units of work (e.g. finetuning steps of all instances) that the caller
    advances by n with the yielded `advance(n)`, for work that no loop of ours iterates."""
    with _progress(disable) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
