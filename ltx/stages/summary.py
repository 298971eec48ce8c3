"""The summary a run ends with: each stage, how long it took and what it did, and where the results
are. The stage lines of a long run scroll away; this table is what a user reads when it is done. It
is logged (Hydra's console and the job's .log file), laid out by rich, by the first process only."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from ltx.stages.runtime import world

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """`12.3 s` under a minute, `h:mm:ss` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass
class Stage:
    seconds: float = 0.0
    note: str = ""


@dataclass
class RunSummary:
    """Stages in the order they first ran; a stage entered again (pretraining and maps run per
    backbone) adds to its time. The total is the time since the summary was made (checks included)."""

    run_dir: Path
    stages: dict[str, Stage] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Time the block as part of stage `name`; set the yielded stage's `note` to say what it did."""
        entry = self.stages.setdefault(name, Stage())
        start = time.perf_counter()
        try:
            yield entry
        finally:
            entry.seconds += time.perf_counter() - start

    def table(self) -> str:
        """The stages as a plain-text table (no colour codes: it also goes to the .log file)."""
        table = Table(box=box.SIMPLE, show_edge=False)
        table.add_column("stage")
        table.add_column("time", justify="right")
        table.add_column("what")
        for name, entry in self.stages.items():
            table.add_row(name, duration(entry.seconds), entry.note, end_section=name == list(self.stages)[-1])
        table.add_row("total", duration(time.perf_counter() - self.started), "")
        out = Console(file=io.StringIO(), width=110, color_system=None, highlight=False)
        out.print(table)
        return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines())

    def log(self, report: Path | None = None) -> None:
        """Log the table, the run directory and the report's path (first process only)."""
        if world()[0] != 0:
            return
        lines = [f"run summary\n{self.table()}", f"results in {self.run_dir}"]
        if report is not None:
            lines.append(f"report: {report}")
        log.info("\n".join(lines))
