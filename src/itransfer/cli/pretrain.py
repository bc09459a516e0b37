"""``itransfer pretrain``: rebuild the embedded tiny LM-adapted T5 (or a variant of it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

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
    from itransfer.train.pretrain import PretrainStep

stderr = Console(stderr=True)


def pretrain(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the checkpoint to.", callback=folder_not_file
    ),
    architecture: str = typer.Option(
        "seq2seq", "--architecture",
        help="seq2seq: a tiny LM-adapted T5 (itransfer:tiny-t5); causal: a tiny Llama-shaped "
             "LM with tiny-t5's tokenizer (itransfer:tiny-llama).",
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
    seed: int = typer.Option(0, help="Seed of the initialisation, the masking and the data order."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: min(2, cores))."),
) -> None:
    """Pre-train the embedded default model from scratch on a text corpus.

    seq2seq (default): train a tokenizer, then a tiny T5 with span corruption and then prefix LM
    (t5-lm-adapt); with no other options this reproduces ``itransfer:tiny-t5``. causal: a tiny
    Llama-shaped LM with next-token prediction, reusing tiny-t5's tokenizer; with no other
    options this reproduces ``itransfer:tiny-llama``. Each has a RECIPE.md beside its weights.
    """
    _check_flags(architecture, corpus, hf_corpus,
                 {"--steps": steps, "--steps-span": steps_span, "--steps-prefix": steps_prefix})
    overrides: dict[str, object] = {"seed": seed}
    if corpus is not None:
        overrides["corpus"] = str(corpus)
    if hf_corpus is not None:
        overrides["corpus"] = f"hf:{hf_corpus}"
    for name, value in (
        ("steps_span", steps_span), ("steps_prefix", steps_prefix), ("steps", steps),
        ("batch_size", batch_size), ("lr", lr), ("num_threads", threads),
    ):
        if value is not None:
            overrides[name] = value
    config, phases, run_pretrain = _recipe(architecture, overrides)
    with _phase_bars(phases) as on_step:
        out_dir = run_pretrain(config, out, progress=on_step)
    stderr.print(f"wrote {out_dir} (load it with load_model_and_tokenizer({str(out_dir)!r}))")


# The step options of each architecture: the other's are refused, not ignored.
STEP_FLAGS = {"seq2seq": ("--steps-span", "--steps-prefix"), "causal": ("--steps",)}


def _check_flags(
    architecture: str, corpus: Path | None, hf_corpus: str | None,
    step_flags: dict[str, int | None],
) -> None:
    if architecture not in STEP_FLAGS:
        raise typer.BadParameter("must be seq2seq or causal", param_hint="--architecture")
    if corpus is not None and hf_corpus is not None:
        raise typer.BadParameter("give --corpus or --hf-corpus, not both")
    other = "causal" if architecture == "seq2seq" else "seq2seq"
    for flag in STEP_FLAGS[other]:
        if step_flags[flag] is not None:
            raise typer.BadParameter(f"{flag} does not apply to --architecture {architecture}")


# A pre-training phase's name -> (its progress bar's label, its steps).
Phases = dict[str, tuple[str, int]]


def _recipe(
    architecture: str, overrides: dict[str, object]
) -> tuple[object, Phases, Callable[..., Path]]:
    """The architecture's recipe config with ``overrides``, its phases, and the function that
    runs it."""
    # torch loads only when pre-training
    if architecture == "causal":
        from itransfer.train.pretrain_causal import (
            CAUSAL_PHASE,
            CausalPretrainConfig,
            pretrain_causal,
        )

        causal_config = dataclasses.replace(CausalPretrainConfig(), **overrides)
        return (causal_config, {CAUSAL_PHASE: ("causal LM", causal_config.steps)},
                pretrain_causal)
    from itransfer.train.pretrain import PretrainConfig, pretrain

    seq2seq_config = dataclasses.replace(PretrainConfig(), **overrides)
    phases = {"span_corruption": ("span corruption", seq2seq_config.steps_span),
              "prefix_lm": ("prefix LM", seq2seq_config.steps_prefix)}
    return seq2seq_config, phases, pretrain


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
