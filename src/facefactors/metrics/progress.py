"""A progress bar on stderr for the slow metric loops (rate and ETA); a no-op when disabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from facefactors.utils.progress import progress_bar as _progress_bar


@contextmanager
def progress_bar(total: int, label: str, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``step(description=None)`` that advances the bar by one."""
    with _progress_bar(enabled, unit="it", stderr=True, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda desc=None: bar.update(task, advance=1, description=desc or label)
