"""`facefactors demo` (placeholder: filled in by the UFE issue)."""


def demo(out: str = "runs/demo") -> None:
    """The README's main job."""
    raise SystemExit("demo not built yet")
