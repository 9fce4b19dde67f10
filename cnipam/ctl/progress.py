"""A progress bar for large migrations, on stderr so stdout stays the report.

Only when there are more than THRESHOLD items and stderr is a terminal: a small
migration is over before a bar would be read, and a bar in a log file is noise. The
readers and the import each run as one call (the import must be one transaction), so
the bar advances a phase at a time, and item by item where the CLI loops itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

THRESHOLD = 1000


class Phases:
    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self._progress: Progress | None = None
        if total > THRESHOLD and sys.stderr.isatty():
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
        self._task: TaskID | None = None

    def __enter__(self) -> Phases:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        """One step of the migration; its bar is full when the step returns."""
        if self._progress is None:
            yield
            return
        self._task = self._progress.add_task(description, total=self.total)
        yield
        self._progress.update(self._task, completed=self.total)

    def advance(self, count: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)
