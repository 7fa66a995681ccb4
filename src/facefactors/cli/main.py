"""Entry point of the `facefactors` command.

Each command group lives in its own module and exposes a ``typer.Typer`` called ``app``;
``main()`` turns a :class:`~facefactors.utils.errors.UserError` into one red line and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from facefactors.cli import demo as demo_cli
from facefactors.cli import evaluate as evaluate_cli
from facefactors.cli import info as info_cli
from facefactors.cli import ufe as ufe_cli
from facefactors.cli import vae as vae_cli
from facefactors.cli import world as world_cli
from facefactors.utils.errors import UserError

app = typer.Typer(
    name="facefactors",
    help="Disentangled face representations: learn, measure, compose and edit faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("info")(info_cli.info)
app.command("demo")(demo_cli.demo)
# The name for the UFE's prediction heads (`facefactors predict`); the same command as `ufe predict`.
app.command("predict", help="Per-attribute class probabilities of a UFE run's prediction heads for each image (= `ufe predict`).")(ufe_cli.predict)
app.add_typer(world_cli.app, name="world", help="The procedural face world: make, show and check data sets.")
app.add_typer(evaluate_cli.app, name="evaluate", help="Evaluate features or a run: metrics.json, report.md, report.html.")
app.add_typer(ufe_cli.app, name="ufe", help="Universal Face Encoder: train, predict, compose, experiments.")
app.add_typer(vae_cli.app, name="vae", help="VAE family: train, traverse, attribute vectors, experiments.")

console = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        # Usage errors (an unknown option, a missing argument) print themselves and carry their
        # exit code: click's ClickException, or typer's own copy of it since typer stopped
        # depending on click (0.2x), so the test is by shape, not by class.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
