"""``itransfer eval``: in-context, few-shot LoRA transfer and seen-task evaluations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from itransfer.cli.common import (
    ConfigOption,
    SetOption,
    SniDirOption,
    folder_not_file,
    launch_main_process,
    one_writer,
    resolve_config,
    stderr,
)

eval_app = typer.Typer(help="Evaluate a checkpoint; rows go to <out>/results (Parquet).")

CheckpointOption = typer.Option(
    "itransfer:tiny-t5", "--checkpoint",
    help="Model folder, training checkpoint or hub name; best-transfer:RUN is the checkpoint of "
    "the training run RUN with the lowest transfer loss its train.monitor measured.",
)
OutOption = typer.Option(
    ..., "--out", "-o", help="Run folder for results and predictions.", callback=folder_not_file
)
ForceOption = typer.Option(False, "--force", help="Re-run cells that already have results.")


def _run(
    what: str,
    checkpoint: str,
    out: Path,
    config_path: Path | None,
    overrides: list[str] | None,
    sni_dir: Path | None,
    evaluate: Callable[..., int],
    **kwargs: Any,
) -> None:
    from transformers.utils import logging as transformers_logging

    from itransfer.eval.session import open_session
    from itransfer.runs.monitor_log import resolve_checkpoint

    transformers_logging.disable_progress_bar()
    config = resolve_config(config_path, overrides, sni_dir)
    checkpoint, best = resolve_checkpoint(checkpoint)
    if best is not None and launch_main_process():  # one line per launch, not per process
        stderr.print(best.describe(), markup=False, highlight=False, soft_wrap=True)
    with one_writer(out):
        _evaluate_into(what, open_session(config, checkpoint, out), evaluate, **kwargs)


def _evaluate_into(what: str, session: Any, evaluate: Callable[..., int], **kwargs: Any) -> None:
    with Progress(
        TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=stderr,
    ) as bar:
        handle = bar.add_task(what, total=None)

        def report(_: str, done: float, total: int) -> None:
            bar.update(handle, completed=done, total=total)

        written = evaluate(session, progress=report, **kwargs)
    stderr.print(f"{written} result rows written to {session.table.root}")


@eval_app.command("icl")
def icl(
    checkpoint: str = CheckpointOption,
    out: Path = OutOption,
    context: str | None = typer.Option(None, "--context", help="Default: eval.icl_context."),
    force: bool = ForceOption,
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    sni_dir: Path | None = SniDirOption,
) -> None:
    """In-context learning: test loss and greedy generations with exemplars in the input."""
    from itransfer.eval.icl import evaluate_icl

    _run("ICL", checkpoint, out, config_path, overrides, sni_dir, evaluate_icl,
         context=context, force=force)


@eval_app.command("transfer")
def transfer(
    checkpoint: str = CheckpointOption,
    out: Path = OutOption,
    engine: str | None = typer.Option(None, "--engine", help="batched or peft."),
    force: bool = ForceOption,
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    sni_dir: Path | None = SniDirOption,
) -> None:
    """Few-shot LoRA fine-tuning on each unseen task for every k, then test loss and ROUGE-L."""
    from itransfer.errors import ConfigError
    from itransfer.eval.transfer import evaluate_transfer

    if engine not in (None, "batched", "peft"):
        raise ConfigError(f"--engine {engine}: expected batched or peft")
    _run("transfer", checkpoint, out, config_path, overrides, sni_dir, evaluate_transfer,
         engine=engine, force=force)


@eval_app.command("seen")
def seen(
    checkpoint: str = CheckpointOption,
    out: Path = OutOption,
    force: bool = ForceOption,
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    sni_dir: Path | None = SniDirOption,
) -> None:
    """Per-task train and test loss on the seen tasks, with each task's training-set size."""
    from itransfer.eval.seen import evaluate_seen

    _run("seen tasks", checkpoint, out, config_path, overrides, sni_dir, evaluate_seen,
         force=force)
