"""``itransfer run`` and ``itransfer quickstart``: whole experiments, stage by stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from itransfer.cli.common import (
    SetOption,
    SniDirOption,
    config_file,
    exit_code_on_stop,
    folder_not_file,
    one_writer,
    stderr,
)
from itransfer.config.packaged import packaged_config


class RichReporter:
    """Stage lines plus one live bar for the stage in progress."""

    def __init__(self, progress: Progress) -> None:
        self.bar = progress
        self.tasks: dict[str, Any] = {}
        self.started = time.perf_counter()

    def stage(self, name: str, status: str, seconds: float | None = None) -> None:
        clock = f"[{time.perf_counter() - self.started:6.0f} s]"
        if status == "running":
            self.bar.console.print(f"{clock} {name} …", highlight=False)
        elif status == "cached":
            self.bar.console.print(f"{clock} {name}: done earlier (reused)", style="dim")
        else:
            self.bar.console.print(f"{clock} {name}: done in {seconds:.1f} s", style="green")
            for key in [key for key in self.tasks if key.startswith(name)]:
                self.bar.remove_task(self.tasks.pop(key))

    def progress(self, name: str, done: float, total: int, info: dict[str, Any]) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total)
        loss = f" loss {info['loss']:.3f}" if "loss" in info else ""
        self.bar.update(self.tasks[name], completed=done, total=total,
                        description=f"{name}{loss}")


def _run(config: Path, out: Path, scale: str | None, overrides: list[str] | None,
         store: Path | None, force: list[str] | None) -> None:
    from transformers.utils import logging as transformers_logging

    from itransfer.experiments.definition import load_experiment
    from itransfer.experiments.pipeline import run_experiment
    from itransfer.runtime.launch import make_state

    transformers_logging.disable_progress_bar()
    experiment = load_experiment(config, scale=scale, overrides=overrides)
    main = make_state().is_main_process  # under accelerate launch, one process draws
    started = time.perf_counter()
    with one_writer(out), exit_code_on_stop(), Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, transient=True, disable=not main,
    ) as bar:
        summary = run_experiment(experiment, out, store=store, force=tuple(force or ()),
                                 reporter=RichReporter(bar))
    if not main:
        return
    stderr.print(f"finished in {time.perf_counter() - started:.0f} s")
    if summary.report is not None:
        stderr.print(f"report: {summary.report}", style="bold")


def run(
    config: Path = typer.Argument(
        ..., callback=config_file,
        help="Experiment YAML: a file or a shipped name, e.g. paper/sec4_sampling "
             "(see `itransfer configs list`).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder.", callback=folder_not_file),
    scale: str | None = typer.Option(None, "--scale", help="A named scale, e.g. tiny."),
    overrides: list[str] | None = SetOption,
    sni_dir: Path | None = SniDirOption,
    store: Path | None = typer.Option(
        None, "--store", help="Stage store shared between experiments (default <out>/stages)."
    ),
    force: list[str] | None = typer.Option(
        None, "--force", help="Re-run a stage: train:LABEL, eval:LABEL or eval:LABEL@STEP."
    ),
) -> None:
    """Run an experiment: instruction tuning, evaluations, analysis and the report."""
    extra = [f"data.sni_dir={sni_dir}"] if sni_dir is not None else []
    _run(config, out, scale, [*(overrides or []), *extra], store, force)


def quickstart_config() -> Path:
    return packaged_config("quickstart")


# What `quickstart --family` changes in the quickstart's base config; the user's --set still wins.
QUICKSTART_FAMILIES: dict[str, list[str]] = {
    "seq2seq": [],  # the config as written: itransfer:tiny-t5
    # LoRA targets follow the model (`eval.lora.target_modules: auto`): q_proj, v_proj here.
    "causal": ["model.name_or_path=itransfer:tiny-llama"],
}


def quickstart_overrides(family: str, overrides: list[str] | None) -> list[str]:
    """The ``--set`` list a quickstart of ``family`` runs with (family first, user last)."""
    if family not in QUICKSTART_FAMILIES:
        raise typer.BadParameter(f"must be one of {', '.join(QUICKSTART_FAMILIES)}, "
                                 f"not {family!r}", param_hint="--family")
    return [*QUICKSTART_FAMILIES[family], *(overrides or [])]


def quickstart(
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Run folder (default runs/quickstart, with -causal and -SCALE appended for "
             "--family causal and --scale).",
        callback=folder_not_file,
    ),
    family: str = typer.Option(
        "seq2seq", "--family",
        help="seq2seq: the tiny T5 (itransfer:tiny-t5); causal: the tiny Llama-shaped LM "
             "(itransfer:tiny-llama), same tokenizer and corpus.",
    ),
    scale: str | None = typer.Option(
        None, "--scale",
        help="small: ~25 min on 2 cores, 2,000 steps and 8 checkpoints, enough for the tests "
             "behind the verdicts to say more (default: the ~6 min miniature).",
    ),
    overrides: list[str] | None = SetOption,
) -> None:
    """The main job: a miniature of the whole paper on the embedded default, on a CPU."""
    all_overrides = quickstart_overrides(family, overrides)
    if out is None:
        suffix = "".join(f"-{part}" for part in (family if family != "seq2seq" else None, scale)
                         if part is not None)
        out = Path(f"runs/quickstart{suffix}")
    _run(quickstart_config(), out, scale, all_overrides, None, None)
