"""Instruction-tuning throughput: itransfer's loop vs a plain Hugging Face Seq2SeqTrainer.

Both train the same model (same initial weights) on the same SNI tasks with the same task
contexts (3 exemplars by default), batch size and number of steps, in this one process, and the
script prints samples/s, real (non-pad) tokens/s and their ratio. The HF baseline shuffles the
pooled training examples (which samples tasks proportionally to their size, like itransfer's
default sampler) and pads each batch with ``DataCollatorForSeq2Seq``.

    python bench/train_throughput.py                      # tiny default model, bundled slice, CPU
    python bench/train_throughput.py --steps 200 --sni-dir ../shared/data/sni-slice
    python bench/train_throughput.py --model t5-large-shape --device cuda --precision bf16

``--model t5-large-shape`` builds a randomly initialised model with T5-large's shape (d_model
1024, 24+24 layers) and the bundled tokenizer, so no download is needed. ``--model
tiny-llama-shape`` is a decoder-only one of the tiny T5's size (bench/decoder_shape.py): both
trainers then read source + target and score the target tokens only (the HF baseline gets
labels of -100 on the source, its model shifts them itself).

    python bench/train_throughput.py --model tiny-llama-shape --steps 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5ForConditionalGeneration,
    TrainerCallback,
)

from decoder_shape import NAME as DECODER_SHAPE
from decoder_shape import build_tiny_llama
from itransfer.config import ExperimentConfig, load_config
from itransfer.data.benchmark import open_benchmark
from itransfer.data.contexts import build_context
from itransfer.examples import ExampleEncoder
from itransfer.models import DEFAULT_MODEL, load_model_and_tokenizer, save_model
from itransfer.train.loop import instruction_tune


def build_model_dir(kind: str, workdir: Path) -> Path:
    """A model folder both trainers start from (identical weights)."""
    if kind == DECODER_SHAPE:
        return build_tiny_llama(workdir / "model")
    loaded = load_model_and_tokenizer(DEFAULT_MODEL)
    if kind == "tiny":
        model = loaded.model
    else:  # T5-large's shape, random init, the bundled tokenizer's vocabulary
        shape = T5Config(
            vocab_size=loaded.model.config.vocab_size, d_model=1024, d_kv=64, d_ff=2816,
            num_layers=24, num_decoder_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
        model = T5ForConditionalGeneration(shape)
    target = workdir / "model"
    save_model(model, loaded.tokenizer, target)
    return target


class StepClock(TrainerCallback):
    """Times steps 2..N (the first step includes one-off warm-up work in both trainers)."""

    def __init__(self) -> None:
        self.first_end: float | None = None
        self.last_end: float | None = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.steps += 1
        if self.first_end is None:
            self.first_end = now
        self.last_end = now


class CountingCollator(DataCollatorForSeq2Seq):
    """DataCollatorForSeq2Seq that also counts the real (non-pad) tokens it batches."""

    real_tokens: int = 0
    batches: int = 0
    causal: bool = False

    def __call__(self, features, return_tensors=None):
        self.batches += 1
        if self.batches > 1:  # match the timed window (steps 2..N)
            # A decoder-only row is one sequence (its labels mirror it); a seq2seq row is two.
            self.real_tokens += sum(
                len(f["input_ids"]) + (0 if self.causal else len(f["labels"])) for f in features
            )
        return super().__call__(features, return_tensors=return_tensors)


def run_hf(config: ExperimentConfig, model_dir: Path, device: str, workdir: Path) -> dict:
    from datasets import Dataset

    loaded = load_model_and_tokenizer(model_dir)
    causal = loaded.architecture == "causal"
    benchmark = open_benchmark(config.data, config.seed)
    encoder = ExampleEncoder(
        loaded.tokenizer, loaded.architecture,
        build_context(config.data.context.name, config.data.context.num_exemplars),
        max_source_length=config.model.max_source_length,
        max_target_length=config.model.max_target_length,
    )
    rows = {"input_ids": [], "labels": []}
    for name in benchmark.selection.seen:
        task = benchmark.task(name)
        for instance in benchmark.split(name).train:
            example = encoder.encode(task, instance)
            if causal:  # one sequence; the loss on the target only
                rows["input_ids"].append([*example.source_ids, *example.target_ids])
                rows["labels"].append([-100] * len(example.source_ids) + [*example.target_ids])
            else:
                rows["input_ids"].append(list(example.source_ids))
                rows["labels"].append(list(example.target_ids))
    dataset = Dataset.from_dict(rows)
    train = config.train
    args = Seq2SeqTrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=train.batch_size,
        max_steps=train.steps, learning_rate=train.learning_rate,
        warmup_steps=train.warmup_steps, lr_scheduler_type="linear", save_strategy="no",
        logging_strategy="no", report_to=[], seed=config.seed, dataloader_num_workers=0,
        use_cpu=device == "cpu", bf16=train.precision == "bf16", max_grad_norm=1.0,
        disable_tqdm=True,
    )
    collator = CountingCollator(loaded.tokenizer, model=loaded.model, label_pad_token_id=-100)
    collator.causal = causal
    clock = StepClock()
    trainer = Seq2SeqTrainer(
        model=loaded.model, args=args, train_dataset=dataset, data_collator=collator,
        callbacks=[clock],
    )
    trainer.train()
    seconds = clock.last_end - clock.first_end
    timed_steps = clock.steps - 1
    return {
        "samples_per_s": timed_steps * train.batch_size / seconds,
        "real_tokens_per_s": collator.real_tokens / seconds,
        "seconds": seconds,
        "steps_timed": timed_steps,
    }


def run_itransfer(config: ExperimentConfig, workdir: Path) -> dict:
    ends: list[float] = []
    tokens: list[int] = []

    def clock(step: int, total: int, row: dict) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
        tokens.append(row["tokens"])

    instruction_tune(config, workdir / "itransfer", progress=clock)
    seconds = ends[-1] - ends[0]
    return {
        "samples_per_s": (len(ends) - 1) * config.train.batch_size / seconds,
        "real_tokens_per_s": sum(tokens[1:]) / seconds,
        "seconds": seconds,
        "steps_timed": len(ends) - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", choices=["tiny", "t5-large-shape", DECODER_SHAPE],
                        default="tiny")
    parser.add_argument("--sni-dir", type=Path, default=None)
    parser.add_argument("--context", default="exemplars")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--max-source-length", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="itransfer-bench-"))
    try:
        model_dir = build_model_dir(
            args.model if args.model in ("tiny", DECODER_SHAPE) else "large", workdir
        )
        overrides = [
            f"model.name_or_path={model_dir}", f"train.steps={args.steps}",
            f"train.batch_size={args.batch_size}", f"data.context.name={args.context}",
            f"train.precision={args.precision}", "train.warmup_steps=10",
            f"model.max_source_length={args.max_source_length}", "train.tensorboard=false",
            "train.log_every=1000000",
        ]
        if args.sni_dir is not None:
            overrides.append(f"data.sni_dir={args.sni_dir}")
        config = load_config(None, overrides)
        ours = run_itransfer(config, workdir)
        theirs = run_hf(config, model_dir, args.device, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio_samples = ours["samples_per_s"] / theirs["samples_per_s"]
    ratio_tokens = ours["real_tokens_per_s"] / theirs["real_tokens_per_s"]
    print(f"{'':28}{'samples/s':>12}{'real tokens/s':>16}")
    print(f"{'itransfer':28}{ours['samples_per_s']:12.2f}{ours['real_tokens_per_s']:16.0f}")
    print(
        f"{'HF Trainer':28}{theirs['samples_per_s']:12.2f}"
        f"{theirs['real_tokens_per_s']:16.0f}"
    )
    print(
        f"ratio (itransfer / HF): samples/s {ratio_samples:.2f}x, "
        f"real tokens/s {ratio_tokens:.2f}x"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "itransfer": ours, "hf": theirs,
            "ratio_samples_per_s": ratio_samples, "ratio_real_tokens_per_s": ratio_tokens,
        }, indent=2))


if __name__ == "__main__":
    main()
