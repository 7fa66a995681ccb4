"""The one progress bar of the project: rich, with count, rate, elapsed time and ETA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``812.4 img/s``."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__()
        self.unit = unit  # shown after the rate

    def render(self, task) -> Text:
        # Average over the whole run: chunks are few and large, so rich's windowed speed is often empty.
        speed = task.completed / task.elapsed if task.elapsed else None
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"? {self.unit}/s", style="progress.data.speed")


class _Silent:
    """Same calls as rich's Progress, doing nothing (progress=False, tests, workers)."""

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool = True, unit: str = "img", stderr: bool = False, transient: bool = False) -> Iterator[Progress | _Silent]:
    """``with progress_bar() as bar: t = bar.add_task("rendering", total=n); bar.advance(t, k)``.

    ``stderr=True`` keeps stdout clean for commands whose output is data; ``transient=True``
    removes the bar when done."""
    if not enabled:
        yield _Silent()
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True) if stderr else None,
        transient=transient,
    )
    with bar:
        yield bar
