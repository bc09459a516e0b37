"""``itransfer configs``: list the shipped experiment configs and copy one to start your own
(torchtune's ``tune ls`` / ``tune cp``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from itransfer.config.packaged import copy_config, packaged_configs

configs_app = typer.Typer(
    help="The experiment configs shipped with itransfer: run one by name "
         "(itransfer run paper/sec4_sampling --scale tiny --out runs/x), or copy it to edit.",
    no_args_is_help=True,
)


@configs_app.command("list")
def list_configs() -> None:
    """Every shipped config: the name to pass to `itransfer run` or `--config`, and its title."""
    table = Table("name", "description", box=None, pad_edge=False)
    for config in packaged_configs():
        table.add_row(config.name, config.description)
    Console(soft_wrap=True).print(table)


@configs_app.command("copy")
def copy(
    name: str = typer.Argument(..., help="A name from `itransfer configs list`."),
    destination: Path = typer.Argument(..., help="A file to write, or a folder to write into."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a shipped config to DESTINATION, to edit and run as your own."""
    target = copy_config(name, destination, force=force)
    Console(stderr=True).print(f"wrote {target}", highlight=False)
