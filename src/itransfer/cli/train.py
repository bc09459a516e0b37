"""``itransfer train``: instruction tuning with a live progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from itransfer.cli.common import (
    ConfigOption,
    SetOption,
    SniDirOption,
    exit_code_on_stop,
    folder_not_file,
    launch_main_process,
    one_writer,
    resolve_config,
    stderr,
)


def train(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder (checkpoints, logs, config).",
        callback=folder_not_file,
    ),
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    sni_dir: Path | None = SniDirOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
) -> None:
    """Instruction-tune a model on the seen tasks (Ctrl-C, SIGTERM or SIGUSR1 saves a resumable
    checkpoint and exits with 128 + the signal)."""
    from transformers.utils import logging as transformers_logging

    from itransfer.eval.monitor import monitor_for
    from itransfer.train.loop import instruction_tune  # torch loads only when training

    # Library progress bars (e.g. "Writing model shards") would fight with ours.
    transformers_logging.disable_progress_bar()

    config = resolve_config(config_path, overrides, sni_dir)
    monitor = monitor_for(config)  # a bad probe set fails here, before training starts
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # Under `accelerate launch` every process runs this command; only rank 0 draws.
    main_process = launch_main_process()
    with one_writer(out), Progress(*columns, console=stderr, disable=not main_process) as bar:
        handle = bar.add_task("instruction tuning", total=None, rates="")

        def report(done: int, total: int, row: dict[str, Any]) -> None:
            if "phase" in row:  # the tokenized training set being built (first use)
                bar.update(handle, completed=done, total=total,
                           description="tokenizing the training set", rates="instances")
                return
            rates = f"loss {row['loss']:.3f}"
            if "lr" in row:
                rates += f" lr {row['lr']:.2e}"
            if "samples_per_s" in row:
                rates += f" {row['samples_per_s']:.1f} samples/s"
            bar.update(handle, completed=done, total=total, description="instruction tuning",
                       rates=rates)

        with exit_code_on_stop():
            result = instruction_tune(config, out, resume=resume, progress=report,
                                      monitor=monitor)
    if main_process:
        stderr.print(f"final checkpoint: {result.final_checkpoint}")
