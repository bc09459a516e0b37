"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from itransfer.config import ExperimentConfig, load_config
from itransfer.errors import ConfigError, TrainingStopped


def folder_not_file(value: Path | None) -> Path | None:
    """``--out`` callback: a folder to write into may not exist yet, but must not be a file."""
    if value is not None and value.exists() and not value.is_dir():
        raise ConfigError(f"--out {value}: is a file; --out names a folder to write into")
    return value


ConfigOption = typer.Option(None, "--config", "-c", help="YAML experiment config.")
SetOption = typer.Option(
    None, "--set", help="Override a config value, e.g. --set data.splits.unseen_test_size=50."
)
SniDirOption = typer.Option(
    None,
    "--sni-dir",
    help="An SNI repository clone or its tasks/ folder (default: the bundled slice).",
)

stderr = Console(stderr=True)


@contextmanager
def exit_code_on_stop() -> Iterator[None]:
    """A run that SIGINT or SIGTERM stopped (its checkpoint saved) says so and exits with
    128 + the signal (143 for a scheduler's SIGTERM), not with typer's generic 130."""
    try:
        yield
    except TrainingStopped as exc:
        stderr.print(str(exc), style="yellow", markup=False, highlight=False)
        raise typer.Exit(128 + exc.signal_number) from exc


def resolve_config(
    config_path: Path | None, overrides: list[str] | None, sni_dir: Path | None
) -> ExperimentConfig:
    """Config file → ``--set`` overrides → ``--sni-dir`` (the most specific wins)."""
    extra = [f"data.sni_dir={sni_dir}"] if sni_dir is not None else []
    return load_config(config_path, [*(overrides or []), *extra])


def file_progress(description: str):
    """A ``progress`` callback for long per-file scans: a rich bar on stderr."""

    def wrap(items: Iterable[Path], total: int) -> Iterator[Path]:
        with Progress(
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        ) as progress:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)

    return wrap
