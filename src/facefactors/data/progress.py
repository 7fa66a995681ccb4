"""Progress bars for data loops: the project's one bar lives in :mod:`facefactors.utils.progress`."""

from facefactors.utils.progress import RateColumn, progress_bar  # noqa: F401
