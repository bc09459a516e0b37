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
from itransfer.cli.configs import configs_app
from itransfer.cli.data import data_app
from itransfer.cli.evaluate import eval_app
from itransfer.cli.pretrain import pretrain
from itransfer.cli.results import results_app
from itransfer.cli.run import quickstart, run
from itransfer.cli.score import score
from itransfer.cli.train import train
from itransfer.errors import (
    LOST_PEER_EXIT_STATUS,
    ITransferError,
    lost_peer,
    lost_peer_message,
)

app = typer.Typer(
    name="itransfer",
    help="Instruction tuning as multi-task transfer (Mueller et al.): data, training, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(configs_app, name="configs")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(results_app, name="results")

# Command modules import torch and friends only inside their functions, so `--help` is quick.
app.command("pretrain")(pretrain)
app.command("train")(train)
app.command("score")(score)
app.command("run")(run)
app.command("quickstart")(quickstart)

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
        # The time without the date leaves a log line room for its message on one terminal
        # line (a warning that wraps reads as a block).
        handlers=[RichHandler(console=stderr, show_path=False, markup=False,
                              log_time_format="[%X]")],
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
    except RuntimeError as exc:
        # A lost peer is the cluster's failure, not a bug: one line, not a traceback per rank.
        if not lost_peer(exc) or "--debug" in args:
            raise
        stderr.print(f"error: {lost_peer_message(exc)}", markup=False, highlight=False,
                     style="bold red", soft_wrap=True)
        sys.exit(LOST_PEER_EXIT_STATUS)
