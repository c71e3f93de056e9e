"""A progress bar on stderr for builds that run longer than a second.

It appears only when stderr is a terminal, so logs and pipes never see
cursor movements, and it disappears when the build ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any

SHOW_AFTER_SECONDS = 1.0


class BuildProgress:
    """A callable ``(done, total)`` that draws a Rich progress bar once a build is slow."""

    def __init__(self, *, enabled: bool, description: str = "building") -> None:
        self._enabled = enabled and sys.stderr.isatty()
        self._description = description
        self._started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            if time.monotonic() - self._started < SHOW_AFTER_SECONDS:
                return
            self._start(total)
        self._progress.update(self._task, completed=done, total=total)

    def _start(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(self._description, total=total)
        self._progress.start()

    def close(self) -> None:
        """Remove the bar from the terminal, if it was drawn."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> BuildProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
