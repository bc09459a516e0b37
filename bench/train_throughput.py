"""Instruction-tuning throughput: itransfer's loop vs a plain Hugging Face Seq2SeqTrainer.

Both train the same model (same initial weights) on the same SNI tasks with the same task
contexts (3 exemplars by default), batch size and number of steps, in this one process, and the
script prints samples/s, real (non-pad) tokens/s and their ratio. The HF baseline trains on a
seeded shuffle of the pooled training examples (which samples tasks proportionally to their
size, like itransfer's default sampler), as many as its steps consume, and pads each batch with
``DataCollatorForSeq2Seq``.

    python bench/train_throughput.py                      # tiny default model, bundled slice, CPU
    python bench/train_throughput.py --steps 200 --sni-dir ../shared/data/sni-slice
    python bench/train_throughput.py --model t5-large-shape --device cuda --precision bf16

``--model t5-large-shape`` builds a randomly initialised model with T5-large's shape (d_model
1024, 24+24 layers) and the bundled tokenizer, so no download is needed. The functions here
are also the training half of ``bench/gpu_suite.py``. ``--model tiny-llama-shape`` is a
decoder-only one of the tiny T5's size (bench/decoder_shape.py): both trainers then read
source + target and score the target tokens only (the HF baseline gets labels of -100 on
the source; its model shifts them itself).

    python bench/train_throughput.py --model tiny-llama-shape --steps 40
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

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
from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.data.benchmark import open_benchmark
from itransfer.data.contexts import build_context
from itransfer.encoding.examples import EncodedExample, ExampleEncoder
from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer, save_model
from itransfer.train.loop import cleanup, optimizer_update, train_step
from itransfer.train.recipe import setup

# T5 v1.1 / LM-adapted T5-large (780M): gated-GELU, untied output layer. The vocabulary is the
# bundled tokenizer's, so nothing is downloaded. "smoke" is a shape a CPU trains in moments.
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "t5-large-shape": {"d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24,
                       "num_decoder_layers": 24, "num_heads": 16},
    "smoke-shape": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1,
                    "num_decoder_layers": 1, "num_heads": 4},
}


def shape_config(kind: str, vocab_size: int) -> T5Config:
    """A T5 config of one of :data:`MODEL_SHAPES` over ``vocab_size`` tokens."""
    return T5Config(
        vocab_size=vocab_size, **MODEL_SHAPES[kind], feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )


def build_model_dir(
    kind: str, workdir: Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
    name: str = "model",
) -> Path:
    """A model folder every trainer (and engine) starts from: identical weights, saved in
    ``dtype``. ``kind`` is "tiny" (the bundled model) or a key of :data:`MODEL_SHAPES`
    (randomly initialised, on ``device``: a GPU initialises 780M parameters in a moment)."""
    if kind == DECODER_SHAPE:
        return build_tiny_llama(workdir / name)
    loaded = load_model_and_tokenizer(DEFAULT_MODEL)
    if kind == "tiny":
        model = loaded.model
    else:
        with torch.device(device):
            model = T5ForConditionalGeneration(shape_config(kind, len(loaded.tokenizer)))
    target = workdir / name
    save_model(model.to(dtype), loaded.tokenizer, target)
    del model
    return target


def synchronize() -> None:
    """Wait for queued GPU work, so that a clock read after it measures the work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last reset, in GB (None on a CPU)."""
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def fixed_example(source_length: int, target_length: int, vocab_size: int) -> EncodedExample:
    """An example of exactly these lengths (ids drawn from the vocabulary, ending in </s>):
    every batch of it has the same shapes, which is how MFU is measured."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, vocab_size, (source_length + target_length,), generator=generator)
    source, target = ids[:source_length].tolist(), ids[source_length:].tolist()
    return EncodedExample((*source[:-1], 1), (*target[:-1], 1))


class StepClock(TrainerCallback):
    """Times steps 2..N (the first step includes one-off warm-up work in both trainers), and
    stops training at the first step that ends after ``deadline`` (a ``perf_counter`` time)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.first_end: float | None = None
        self.last_end: float | None = None
        self.steps = 0
        self.deadline = deadline
        self.cut_short = False

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        now = time.perf_counter()
        self.steps += 1
        if self.first_end is None:
            self.first_end = now
        self.last_end = now
        if self.deadline is not None and now > self.deadline and state.global_step < args.max_steps:
            control.should_training_stop = self.cut_short = True


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


def _rates(steps_timed: int, batch_size: int, tokens: int, seconds: float) -> dict[str, Any]:
    if steps_timed < 1 or seconds <= 0:
        return {"samples_per_s": None, "real_tokens_per_s": None, "seconds": seconds,
                "steps_timed": steps_timed}
    return {
        "samples_per_s": steps_timed * batch_size / seconds,
        "real_tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "steps_timed": steps_timed,
    }


def hf_rows(
    config: ExperimentConfig, tokenizer: Any, architecture: str = "seq2seq"
) -> dict[str, list[list[int]]]:
    """The examples HF's trainer gets: a seeded shuffle of the pooled training instances of the
    seen tasks (which samples tasks proportionally to their size, like itransfer's default
    sampler), cut to the ``steps x batch_size`` the run consumes, then encoded like itransfer's.
    """
    benchmark = open_benchmark(config.data, config.seed)
    encoder = ExampleEncoder(
        tokenizer, architecture,
        build_context(config.data.context.name, config.data.context.num_exemplars),
        max_source_length=config.model.max_source_length,
        max_target_length=config.model.max_target_length,
    )
    pool = [(name, index) for name in benchmark.selection.seen
            for index in range(len(benchmark.split(name).train))]
    order = random.Random(config.seed).sample(range(len(pool)), len(pool))
    needed = (config.train.steps or 1) * config.train.batch_size
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for position in order[:needed]:
        name, index = pool[position]
        example = encoder.encode(benchmark.task(name), benchmark.split(name).train[index])
        if architecture == "causal":  # one sequence; the loss on the target only
            rows["input_ids"].append([*example.source_ids, *example.target_ids])
            rows["labels"].append([-100] * len(example.source_ids) + [*example.target_ids])
        else:
            rows["input_ids"].append(list(example.source_ids))
            rows["labels"].append(list(example.target_ids))
    return rows


def run_hf(
    config: ExperimentConfig, model_dir: Path, device: str, workdir: Path, *,
    fixed: EncodedExample | None = None, deadline: float | None = None,
) -> dict[str, Any]:
    """HF ``Seq2SeqTrainer`` on the SNI examples (or on ``fixed`` repeated), timed."""
    from datasets import Dataset

    loaded = load_model_and_tokenizer(model_dir)
    train = config.train
    if fixed is None:
        rows = hf_rows(config, loaded.tokenizer, loaded.architecture)
    else:
        count = (train.steps or 1) * train.batch_size
        rows = {"input_ids": [list(fixed.source_ids)] * count,
                "labels": [list(fixed.target_ids)] * count}
    args = Seq2SeqTrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=train.batch_size,
        max_steps=train.steps, learning_rate=train.learning_rate,
        warmup_steps=train.warmup_steps, lr_scheduler_type="linear", save_strategy="no",
        logging_strategy="no", report_to=[], seed=config.seed, dataloader_num_workers=0,
        use_cpu=device == "cpu", bf16=train.precision == "bf16", max_grad_norm=1.0,
        disable_tqdm=True,
    )
    collator = CountingCollator(loaded.tokenizer, model=loaded.model, label_pad_token_id=-100)
    collator.causal = loaded.architecture == "causal"
    clock = StepClock(deadline)
    trainer = Seq2SeqTrainer(
        model=loaded.model, args=args, train_dataset=Dataset.from_dict(rows),
        data_collator=collator, callbacks=[clock],
    )
    reset_peak_memory()
    trainer.train()
    seconds = (clock.last_end or 0.0) - (clock.first_end or 0.0)
    return {**_rates(clock.steps - 1, train.batch_size, collator.real_tokens, seconds),
            "peak_memory_gb": peak_memory_gb(), "cut_short": clock.cut_short}


def run_itransfer(
    config: ExperimentConfig, workdir: Path, *, fixed: EncodedExample | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """itransfer's training step (:func:`itransfer.train.loop.train_step`: P(K), length-grouped
    batches, the update), or with ``fixed`` the same update on a batch of that example, timed.

    The recipe's parts are driven here rather than :func:`instruction_tune`, which would end by
    writing a checkpoint (9 GB of weights and AdamW state at T5-large shape) outside the timing.
    """
    state = setup(config, workdir / "itransfer")
    batch_size = config.train.batch_size
    ends: list[float] = []
    tokens: list[int] = []
    cut_short = False
    reset_peak_memory()
    try:
        while state.it_step < state.total_it_steps:
            if fixed is None:
                tokens.append(train_step(state)["tokens"])
            else:
                stats = optimizer_update(state, [fixed] * batch_size, [0] * batch_size)
                state.it_step += 1
                tokens.append(stats.source_tokens + stats.target_tokens)
            synchronize()
            ends.append(time.perf_counter())
            unfinished = state.it_step < state.total_it_steps
            if deadline is not None and ends[-1] > deadline and unfinished:
                cut_short = True
                break
    finally:
        cleanup(state)
    seconds = ends[-1] - ends[0] if ends else 0.0
    return {**_rates(len(ends) - 1, batch_size, sum(tokens[1:]), seconds),
            "peak_memory_gb": peak_memory_gb(), "cut_short": cut_short}


def throughput_config(
    model_dir: Path, *, steps: int, batch_size: int, context: str, precision: str,
    max_source_length: int, max_target_length: int = 128, sni_dir: Path | None = None,
) -> ExperimentConfig:
    """The instruction-tuning config both trainers run (no logging sinks in the timing)."""
    overrides = [
        f"model.name_or_path={model_dir}", f"train.steps={steps}",
        f"train.batch_size={batch_size}", f"data.context.name={context}",
        f"train.precision={precision}", "train.warmup_steps=10",
        f"model.max_source_length={max_source_length}",
        f"model.max_target_length={max_target_length}", "train.tensorboard=false",
        "train.log_every=1000000",
    ]
    if sni_dir is not None:
        overrides.append(f"data.sni_dir={sni_dir}")
    return load_config(None, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", choices=["tiny", *MODEL_SHAPES, DECODER_SHAPE],
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
        model_dir = build_model_dir(args.model, workdir, device=args.device)
        config = throughput_config(
            model_dir, steps=args.steps, batch_size=args.batch_size, context=args.context,
            precision=args.precision, max_source_length=args.max_source_length,
            sni_dir=args.sni_dir,
        )
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
