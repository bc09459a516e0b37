"""``itransfer pretrain``: rebuild the embedded tiny LM-adapted T5 (or a variant of it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from itransfer.cli.common import folder_not_file

if TYPE_CHECKING:
    from itransfer.pretraining.seq2seq import PretrainStep

stderr = Console(stderr=True)


def pretrain(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the checkpoint to.", callback=folder_not_file
    ),
    config_path: Path | None = typer.Option(
        None, "--config", "-c", exists=True, dir_okay=False,
        help="YAML recipe settings: `architecture` (seq2seq or causal) and that recipe's "
             "fields (see itransfer.pretraining.config); default: the shipped model's.",
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a recipe setting, e.g. --set d_model=64."
    ),
    architecture: str | None = typer.Option(
        None, "--architecture",
        help="seq2seq (default): a tiny LM-adapted T5 (itransfer:tiny-t5); causal: a tiny "
             "Llama-shaped LM with tiny-t5's tokenizer (itransfer:tiny-llama).",
    ),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="A .txt file (one document a line) or a folder of them "
        "(default: the bundled SNI-inputs slice)."
    ),
    hf_corpus: str | None = typer.Option(
        None, "--hf-corpus", help="Stream a Hugging Face dataset's 'text' field instead, "
        "as NAME or NAME:CONFIG (needs the network or the datasets cache)."
    ),
    steps_span: int | None = typer.Option(None, help="Span-corruption steps (seq2seq)."),
    steps_prefix: int | None = typer.Option(
        None, help="Prefix-LM (LM adaptation) steps (seq2seq)."
    ),
    steps: int | None = typer.Option(None, help="Causal LM steps (causal)."),
    batch_size: int | None = typer.Option(None, help="Examples per step."),
    lr: float | None = typer.Option(None, help="Peak AdamW learning rate."),
    seed: int | None = typer.Option(
        None, help="Seed of the initialisation, the masking and the data order (default 0)."
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: min(2, cores))."),
) -> None:
    """Pre-train the embedded default model from scratch on a text corpus.

    seq2seq (default): train a tokenizer, then a tiny T5 with span corruption and then prefix LM
    (t5-lm-adapt); with no other options this reproduces ``itransfer:tiny-t5``. causal: a tiny
    Llama-shaped LM with next-token prediction, reusing tiny-t5's tokenizer; with no other
    options this reproduces ``itransfer:tiny-llama``. Each has a RECIPE.md beside its weights.
    Settings: --config file → --set → the flags below (the most specific wins).
    """
    if corpus is not None and hf_corpus is not None:
        raise typer.BadParameter("give --corpus or --hf-corpus, not both")
    flags = {"corpus": f"hf:{hf_corpus}" if hf_corpus is not None else (
                 None if corpus is None else str(corpus)),
             "steps_span": steps_span, "steps_prefix": steps_prefix, "steps": steps,
             "batch_size": batch_size, "lr": lr, "seed": seed, "num_threads": threads}
    config = _load(config_path, overrides or [], _architecture(architecture), flags)
    phases, run_pretrain = _recipe(config)
    with _phase_bars(phases) as on_step:
        out_dir = run_pretrain(config, out, progress=on_step)
    stderr.print(f"wrote {out_dir} (load it with load_model_and_tokenizer({str(out_dir)!r}))")


def _load(config_path: Path | None, overrides: list[str],
          architecture: Literal["seq2seq", "causal"] | None, flags: dict[str, object]
          ) -> object:
    from itransfer.errors import ConfigError
    from itransfer.pretraining.config import load_pretrain_config

    try:
        return load_pretrain_config(config_path, [*overrides, *_flag_overrides(flags)],
                                    architecture)
    except ConfigError as exc:
        raise typer.BadParameter(_flag_message(flags, str(exc))) from exc


# The flags that set a recipe field: their names in messages.
FLAG_NAMES = {"steps_span": "--steps-span", "steps_prefix": "--steps-prefix", "steps": "--steps",
              "num_threads": "--threads"}


def _architecture(value: str | None) -> Literal["seq2seq", "causal"] | None:
    if value is None or value in ("seq2seq", "causal"):
        return value  # type: ignore[return-value]
    raise typer.BadParameter("must be seq2seq or causal", param_hint="--architecture")


def _flag_overrides(flags: dict[str, object]) -> list[str]:
    """The flags given, as ``--set`` overrides (values quoted as YAML strings where needed)."""
    return [f"{name}={json.dumps(value) if isinstance(value, str) else value}"
            for name, value in flags.items() if value is not None]


def _flag_message(flags: dict[str, object], message: str) -> str:
    """A step flag of the other architecture is the one mistake a flag user makes here: name
    the flag, not only the recipe field it set."""
    for name, flag in FLAG_NAMES.items():
        if flags.get(name) is not None and f": {name}: unknown key" in message:
            return f"{flag} does not apply to this architecture's recipe ({message})"
    return message


# A pre-training phase's name -> (its progress bar's label, its steps).
Phases = dict[str, tuple[str, int]]


def _recipe(config: object) -> tuple[Phases, Callable[..., Path]]:
    """The recipe's phases and the function that runs it."""
    # torch loads only when pre-training
    from itransfer.pretraining.config import CausalPretrainConfig

    if isinstance(config, CausalPretrainConfig):
        from itransfer.pretraining.causal import CAUSAL_PHASE, pretrain_causal

        return {CAUSAL_PHASE: ("causal LM", config.steps)}, pretrain_causal
    from itransfer.pretraining.seq2seq import pretrain

    return ({"span_corruption": ("span corruption", config.steps_span),  # type: ignore[attr-defined]
             "prefix_lm": ("prefix LM", config.steps_prefix)}, pretrain)  # type: ignore[attr-defined]


@contextmanager
def _phase_bars(phases: Phases) -> Iterator[Callable[[PretrainStep], None]]:
    """One progress bar per phase, on stderr; yields the callback that advances them."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.1e}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
    ) as progress:
        tasks = {
            phase: progress.add_task(label, total=total, loss=float("nan"), lr=0.0)
            for phase, (label, total) in phases.items()
        }
        smoothed: dict[str, float] = {}

        def on_step(event: PretrainStep) -> None:
            # An exponential average: single-batch losses jump too much to read.
            previous = smoothed.get(event.phase, event.loss)
            smoothed[event.phase] = 0.95 * previous + 0.05 * event.loss
            progress.update(
                tasks[event.phase], completed=event.step,
                loss=smoothed[event.phase], lr=event.lr,
            )

        yield on_step
