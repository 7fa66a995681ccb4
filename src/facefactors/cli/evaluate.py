"""`facefactors evaluate ...` commands (placeholder: filled in by the issue that builds it)."""

import typer

app = typer.Typer(no_args_is_help=True)
