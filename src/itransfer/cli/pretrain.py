"""``itransfer pretrain``: rebuild the embedded tiny LM-adapted T5 (or a variant of it)."""

from __future__ import annotations

import dataclasses
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
    if architecture not in ("seq2seq", "causal"):
        raise typer.BadParameter("must be seq2seq or causal", param_hint="--architecture")
    if corpus is not None and hf_corpus is not None:
        raise typer.BadParameter("give --corpus or --hf-corpus, not both")
    other_family_steps = {
        "seq2seq": [("--steps", steps)],
        "causal": [("--steps-span", steps_span), ("--steps-prefix", steps_prefix)],
    }
    for flag, value in other_family_steps[architecture]:
        if value is not None:
            raise typer.BadParameter(f"{flag} does not apply to --architecture {architecture}")
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
    # torch loads only when pre-training
    if architecture == "causal":
        from itransfer.train.pretrain_causal import CAUSAL_PHASE, CausalPretrainConfig
        from itransfer.train.pretrain_causal import pretrain_causal as run_pretrain

        causal_config = dataclasses.replace(CausalPretrainConfig(), **overrides)
        phases = {CAUSAL_PHASE: ("causal LM", causal_config.steps)}
        config: object = causal_config
    else:
        from itransfer.train.pretrain import PretrainConfig
        from itransfer.train.pretrain import pretrain as run_pretrain

        seq2seq_config = dataclasses.replace(PretrainConfig(), **overrides)
        phases = {"span_corruption": ("span corruption", seq2seq_config.steps_span),
                  "prefix_lm": ("prefix LM", seq2seq_config.steps_prefix)}
        config = seq2seq_config

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

        out_dir = run_pretrain(config, out, progress=on_step)
    stderr.print(f"wrote {out_dir} (load it with load_model_and_tokenizer({str(out_dir)!r}))")
