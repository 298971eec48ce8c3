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
from collections.abc import Iterable, Iterator
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


def track(items: Iterable[T], description: str, total: int | None = None, *,
          disable: bool | None = None) -> Iterator[T]:
    """Yield `items` while a bar shows done/total, elapsed time and ETA (`disable=None`: `quiet()`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet() if disable is None else disable) as bar:
        yield from bar.track(items, total=total, description=description)
