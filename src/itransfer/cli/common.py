"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.errors import ConfigError, StoppedBySignal


def folder_not_file(value: Path | None) -> Path | None:
    """``--out`` callback: a folder to write into may not exist yet, but must not be a file."""
    if value is not None and value.exists() and not value.is_dir():
        raise ConfigError(f"--out {value}: is a file; --out names a folder to write into")
    return value


LOCK_FILE = ".itransfer.lock"


def launch_main_process() -> bool:
    """Whether this is the launch's main process (the only one without a launcher): the one
    that writes the run's lines and bars, read before accelerate is set up."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def one_writer(out: Path) -> Iterator[None]:
    """Hold ``<out>/.itransfer.lock`` while this command writes to ``out``.

    A second ``itransfer train``, ``eval`` or ``run`` into the same folder stops at once with
    one line instead of interleaving its logs and checkpoints with the first. The lock is an
    OS file lock (``filelock``), so a process that dies, even by SIGKILL, releases it. Under
    ``accelerate launch`` the run's main process holds it for all of its processes.
    """
    if not launch_main_process():
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"--out {out}: another itransfer process is writing there (it holds "
            f"{out / LOCK_FILE}); wait for it to finish or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def config_file(value: Path | None) -> Path | None:
    """``--config`` callback: a YAML file, or the name of a shipped config (``quickstart``)."""
    from itransfer.config.packaged import find_config

    return None if value is None else find_config(value)


ConfigOption = typer.Option(
    None, "--config", "-c", callback=config_file,
    help="YAML experiment config: a file or a shipped name (see `itransfer configs list`).",
)
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
    """A command that SIGINT, SIGTERM or SIGUSR1 stopped (its work saved) says so on one line
    and exits with 128 + the signal: 130, 143 (a scheduler's SIGTERM) or 138 (SLURM's
    ``--signal=USR1@…``), not typer's generic 130, so a job script can tell a clean stop to
    resume from a failure."""
    try:
        yield
    except StoppedBySignal as exc:
        stderr.print(str(exc), style="yellow", markup=False, highlight=False, soft_wrap=True)
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
