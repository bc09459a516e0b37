"""The ``itransfer`` command line: thin wrappers that parse, load a config and call one function.

Errors caused by input (:class:`itransfer.errors.ITransferError`) are printed as one line and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from itransfer import __version__
from itransfer.cli.data import data_app
from itransfer.cli.evaluate import eval_app
from itransfer.cli.results import results_app
from itransfer.errors import ITransferError

app = typer.Typer(
    name="itransfer",
    help="Instruction tuning as multi-task transfer (Mueller et al.): data, training, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(results_app, name="results")

_optional_commands = (
    ("itransfer.cli.score", "score", "score"),
    ("itransfer.cli.pretrain", "pretrain", "pretrain"),
    ("itransfer.cli.train", "train", "train"),
    ("itransfer.cli.run", "run", "run"),
    ("itransfer.cli.run", "quickstart", "quickstart"),
)
for module_name, function_name, command_name in _optional_commands:
    # Commands of parts still being built register themselves once their module exists.
    try:
        module = __import__(module_name, fromlist=[function_name])
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        continue
    app.command(command_name)(getattr(module, function_name))

stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"itransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of input errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False, markup=False)],
        force=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="itransfer")
    except ITransferError as exc:
        if "--debug" in args:
            raise
        stderr.print(
            f"error: {exc}", markup=False, highlight=False, style="bold red", soft_wrap=True
        )
        sys.exit(2)
    except KeyboardInterrupt:
        stderr.print("interrupted", style="yellow")
        sys.exit(130)
