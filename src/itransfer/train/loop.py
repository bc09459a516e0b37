"""Instruction tuning (§2.3, Appendix B): multi-task training of a pretrained LM, in one loop.

One process (CPU or one GPU)::

    itransfer train --config configs/quickstart.yaml --out runs/it

Several GPUs on one node (DDP), or FSDP through an ``accelerate config`` file::

    accelerate launch --num_processes 8 -m itransfer train --config my.yaml --out runs/it

Two nodes: the same command on each, with ``--num_machines 2 --machine_rank {0,1}
--main_process_ip HOST --main_process_port 29500``.

Every knob of the paper is one visible line below: the task sampler P(K) draws each batch's
tasks, the per-task data limit shapes the task sizes it sees, one unsupervised step follows
every ``mixing.every`` instruction-tuning steps, and checkpoints are written every
``checkpoint_every`` steps. ``batch_size`` is the global batch: each optimizer step consumes
exactly ``batch_size`` examples whatever the number of processes and accumulation steps, and
the loss is normalised by the batch's total target tokens so the gradient does not depend on
how the batch was split.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from itransfer.config import ExperimentConfig
from itransfer.data.batching import TaskBatchStream
from itransfer.data.benchmark import open_benchmark
from itransfer.data.contexts import build_context, cut_summary
from itransfer.data.corpus import BUNDLED_CORPUS, iter_corpus_documents
from itransfer.errors import ConfigError, DataError
from itransfer.examples import EncodedExample, ExampleEncoder, collate, count_targets, target_mask
from itransfer.io_utils import atomic_write_text
from itransfer.launch import check_launch, make_accelerator
from itransfer.models import load_model_and_tokenizer
from itransfer.provenance import write_run_record
from itransfer.sampling import build_sampler, plot_sampling_schedule
from itransfer.token_losses import token_losses
from itransfer.train import checkpoint as ckpt
from itransfer.train.tracking import check_sinks_available, open_sinks
from itransfer.train.unsupervised import UnsupervisedBatches
from itransfer.train.weights import load_weights, model_fingerprint

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, dict[str, float]], None]
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainResult:
    out_dir: Path
    final_checkpoint: Path
    steps: int
    log: list[dict[str, Any]] = field(default_factory=list)
    task_names: list[str] = field(default_factory=list)
    final_task_losses: dict[str, float] = field(default_factory=dict)


@dataclass
class StepStats:
    """What one optimizer step measured, already summed over all processes."""

    loss: float
    examples: int
    target_tokens: int
    source_tokens: int
    task_losses: dict[int, float]


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak learning rate, then linear decay to 0 (Appendix B)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = total_steps - step
        return max(0.0, remaining / max(1, total_steps - warmup_steps))

    return factor


@contextmanager
def stop_requested_on_interrupt() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C only asks the loop to stop at the next step boundary (and save)."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no graceful stop
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def instruction_tune(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    accelerator: Accelerator | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Instruction-tune ``config.model`` on the seen tasks; checkpoints go to ``out_dir``.

    ``stop_after`` ends the run after that many instruction-tuning steps as if interrupted
    (a checkpoint is saved), which is how the tests check that resuming is exact.
    """
    train = config.train
    accelerator = accelerator or make_accelerator(
        mixed_precision="no" if train.precision == "fp32" else train.precision
    )
    check_launch(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    check_sinks_available(wandb_project=train.wandb_project)
    if train.batch_size % (world * train.gradient_accumulation):
        raise ConfigError(
            f"train.batch_size={train.batch_size} must be divisible by processes ({world}) × "
            f"train.gradient_accumulation ({train.gradient_accumulation})"
        )
    out_dir = Path(out_dir)
    checkpoints_dir = out_dir / "checkpoints"
    set_seed(config.seed)

    # --- data: the seen tasks, their training splits (after the data limit), the sampler ---
    benchmark = open_benchmark(config.data, config.seed)
    task_names = list(benchmark.selection.seen)
    if not task_names:
        raise DataError(benchmark.tasks_dir, "no seen (training) tasks in this selection")
    tasks = [benchmark.task(name) for name in task_names]
    train_sets = [benchmark.split(name).train for name in task_names]
    task_sizes = [len(instances) for instances in train_sets]
    total_it_steps = train.steps or math.ceil(train.epochs * sum(task_sizes) / train.batch_size)
    mix_every = train.mixing.every
    total_optimizer_steps = total_it_steps + (total_it_steps // mix_every if mix_every else 0)
    sampler = build_sampler(
        train.sampler, task_sizes, total_steps=total_it_steps, batch_size=train.batch_size
    )

    # --- model and the text each example becomes ---
    loaded = load_model_and_tokenizer(
        config.model.name_or_path,
        architecture=config.model.architecture,
        trust_remote_code=config.model.trust_remote_code,
    )
    model, tokenizer, architecture = loaded.model, loaded.tokenizer, loaded.architecture
    causal = architecture == "causal"
    encoder = ExampleEncoder(
        tokenizer,
        architecture,
        build_context(config.data.context.name, config.data.context.num_exemplars),
        max_source_length=config.model.max_source_length,
        max_target_length=config.model.max_target_length,
    )
    encoded: dict[tuple[int, int], EncodedExample] = {}

    def example(task: int, instance: int) -> EncodedExample:
        key = (task, instance)
        if key not in encoded:
            encoded[key] = encoder.encode(tasks[task], train_sets[task][instance])
        return encoded[key]

    stream = TaskBatchStream(
        task_sizes,
        sampler,
        batch_size=train.batch_size,
        seed=config.seed,
        length_of=lambda task, instance: len(example(task, instance)),
        window_batches=train.length_window_batches,
    )
    unsupervised = None
    if mix_every:
        source = BUNDLED_CORPUS if train.mixing.source == "bundled" else train.mixing.source
        unsupervised = UnsupervisedBatches(
            lambda: iter_corpus_documents(source, seed=config.seed),
            tokenizer,
            architecture,
            batch_size=train.batch_size,
            max_length=train.mixing.max_length,
            seed=config.seed,
        )

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    # Not passed through accelerator.prepare: its scheduler wrapper steps once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(train.warmup_steps, total_optimizer_steps)
    )
    # The fingerprint and resumed weights concern the whole model, before DDP/FSDP wrap (and
    # FSDP shards) it; the optimizer state is loaded after, each rank taking its part.
    fingerprint = model_fingerprint(model, config.model.name_or_path)
    latest = ckpt.latest_checkpoint(checkpoints_dir) if resume else None
    if latest is not None:
        state = ckpt.read_state(latest)
        _check_compatible(latest, state, fingerprint, config, world)
        load_weights(model, latest)
    model, optimizer = accelerator.prepare(model, optimizer)

    it_step, optimizer_step = 0, 0
    log: list[dict[str, Any]] = []
    if latest is not None:
        ckpt.load_optimizer_state(model, optimizer, latest)
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        stream.load_state_dict(state["stream"])
        if unsupervised is not None:
            unsupervised.load_state_dict(state["unsupervised"])
        ckpt.restore_rng_state(ckpt.read_rank_rng(latest, rank))
        it_step, optimizer_step = state["it_step"], state["optimizer_step"]
        log = _read_log(out_dir, up_to_step=it_step)
        logger.info("resumed from %s at step %d", latest, it_step)
    elif accelerator.is_main_process and ckpt.list_checkpoints(checkpoints_dir):
        raise ConfigError(
            f"{out_dir} already holds checkpoints; pass --resume to continue that run "
            "or choose another --out"
        )
    if accelerator.is_main_process:
        write_run_record(out_dir, config, seed=config.seed)
        atomic_write_text(out_dir / LOG_FILE, "".join(json.dumps(row) + "\n" for row in log))
    sinks = (
        open_sinks(
            tensorboard=train.tensorboard, wandb_project=train.wandb_project, out_dir=out_dir,
            config=config.model_dump(mode="json"), task_names=task_names,
        )
        if accelerator.is_main_process
        else []
    )

    def run_step(examples: list[EncodedExample], example_tasks: list[int] | None) -> StepStats:
        """Forward/backward over this process's share of one global batch, then one update."""
        model.train()
        local = examples[rank::world]
        local_tasks = example_tasks[rank::world] if example_tasks is not None else None
        global_targets = sum(count_targets(e, causal) for e in examples)
        num_tasks = len(task_names)
        sums = torch.zeros(2 * num_tasks + 1, dtype=torch.float64, device=accelerator.device)
        micro_size = math.ceil(len(local) / train.gradient_accumulation)
        chunks = [local[i : i + micro_size] for i in range(0, len(local), micro_size)]
        for index, chunk in enumerate(chunks):
            batch = collate(chunk, pad_token_id=tokenizer.pad_token_id, architecture=architecture)
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            last = index == len(chunks) - 1
            with accelerator.no_sync(model) if not last else nullcontext():
                with accelerator.autocast():
                    losses = token_losses(model, batch)
                mask = target_mask(batch, causal=causal)
                nll = (losses * mask).sum()
                accelerator.backward(nll * world / global_targets)
            sums[-1] += nll.detach().double()
            if local_tasks is not None:
                per_example = (losses * mask).sum(1) / mask.sum(1).clamp(min=1)
                chunk_tasks = torch.tensor(
                    local_tasks[index * micro_size : index * micro_size + len(chunk)],
                    device=accelerator.device,
                )
                sums.index_add_(0, chunk_tasks, per_example.detach().double())
                sums.index_add_(0, chunk_tasks + num_tasks, torch.ones_like(per_example).double())
        if train.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sums = accelerator.reduce(sums, reduction="sum")
        counts = sums[num_tasks : 2 * num_tasks]
        task_losses = {
            int(task): float(sums[task] / counts[task]) for task in torch.nonzero(counts).flatten()
        }
        return StepStats(
            loss=float(sums[-1]) / global_targets,
            examples=len(examples),
            target_tokens=global_targets,
            source_tokens=sum(len(e.source_ids) for e in examples),
            task_losses=task_losses,
        )

    def save(step: int) -> Path:
        state_dict = accelerator.get_state_dict(model)  # collective under FSDP: every rank
        optimizer_state = ckpt.gather_optimizer_state(model, optimizer)  # likewise
        if accelerator.is_main_process:
            ckpt.begin(checkpoints_dir, step)
        accelerator.wait_for_everyone()
        staging = ckpt.staging_dir(checkpoints_dir, step)
        ckpt.write_rank_rng(staging, rank)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(
                staging, state_dict=state_dict, safe_serialization=True
            )
            tokenizer.save_pretrained(staging)
            ckpt.write_optimizer(staging, optimizer_state)
            ckpt.write_state(
                staging,
                {
                    "it_step": it_step,
                    "optimizer_step": optimizer_step,
                    "total_it_steps": total_it_steps,
                    "world_size": world,
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(),
                    "stream": stream.state_dict(),
                    "unsupervised": unsupervised.state_dict() if unsupervised else None,
                    "model": fingerprint,
                    "config": config.model_dump(mode="json"),
                    "task_names": task_names,
                },
            )
        accelerator.wait_for_everyone()
        final = checkpoints_dir / ckpt.checkpoint_name(step)
        if accelerator.is_main_process:
            final = ckpt.commit(checkpoints_dir, step, keep=train.keep_checkpoints)
        accelerator.wait_for_everyone()
        return final

    window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
    last_saved: Path | None = None
    last_task_losses: dict[int, float] = {}
    with ExitStack() as closing, stop_requested_on_interrupt() as interrupt:
        for sink in sinks:
            closing.callback(sink.close)  # also on Ctrl-C and errors
        while it_step < total_it_steps:
            # 1. a batch of instruction-tuning examples, tasks drawn by P(K) at this step
            refs = stream.next_batch(it_step)
            stats = run_step([example(t, i) for t, i in refs], [t for t, _ in refs])
            sampler.observe_losses(it_step, stats.task_losses)  # DWA adapts; others ignore
            last_task_losses.update(stats.task_losses)
            it_step += 1
            optimizer_step += 1
            window_examples += stats.examples
            window_tokens += stats.source_tokens + stats.target_tokens
            row: dict[str, Any] = {
                "step": it_step,
                "loss": stats.loss,
                "tokens": stats.source_tokens + stats.target_tokens,  # real, non-pad
            }

            # 2. unsupervised mixing (§5.2): one raw-text step every `mix_every` IT steps
            if unsupervised is not None and it_step % mix_every == 0:
                row["unsupervised_loss"] = run_step(unsupervised.next_batch(), None).loss
                optimizer_step += 1

            # 3. logging and progress
            if it_step % train.log_every == 0 or it_step == total_it_steps:
                elapsed = time.perf_counter() - window_start
                row |= {
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": window_examples / elapsed,
                    "tokens_per_s": window_tokens / elapsed,
                }
                window_start, window_examples, window_tokens = time.perf_counter(), 0, 0
                log.append(row)
                if accelerator.is_main_process:
                    with (out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
                    for sink in sinks:
                        sink.log(row, sampler.weights(it_step), last_task_losses)
            if progress is not None and accelerator.is_main_process:
                progress(it_step, total_it_steps, row)

            # 4. the trajectory: a checkpoint every `checkpoint_every` steps
            if train.checkpoint_every and it_step % train.checkpoint_every == 0:
                last_saved = save(it_step)
            if interrupt["stop"] or (stop_after is not None and it_step >= stop_after):
                if last_saved is None or not last_saved.name.endswith(f"{it_step:07d}"):
                    last_saved = save(it_step)
                if interrupt["stop"]:
                    raise KeyboardInterrupt(f"stopped at step {it_step}; resume with --resume")
                break

    if last_saved is None or not last_saved.name.endswith(f"{it_step:07d}"):
        last_saved = save(it_step)
    if summary := cut_summary(encoder.context.inputs_cut, config.model.max_source_length):
        logger.warning("instruction tuning: %s", summary)
    if accelerator.is_main_process:
        # P(K) over the run as the sampler defines it (DWA: from its final loss history).
        plot_sampling_schedule(sampler, out_dir / "sampling_schedule.png", task_names=task_names)
    return TrainResult(
        out_dir=out_dir,
        final_checkpoint=last_saved,
        steps=it_step,
        log=log,
        task_names=task_names,
        final_task_losses={task_names[k]: v for k, v in sorted(last_task_losses.items())},
    )


def _check_compatible(
    checkpoint: Path, state: dict[str, Any], fingerprint: dict[str, Any],
    config: ExperimentConfig, world: int,
) -> None:
    if state.get("model") != fingerprint:
        raise ckpt.CheckpointError(
            f"{checkpoint} belongs to another model ({state.get('model')}); this config "
            f"builds {fingerprint}"
        )
    saved = state.get("config", {})
    current = config.model_dump(mode="json")
    differing = [
        key for key in ("seed", "data", "model")
        if saved.get(key) != current.get(key)
    ]
    saved_train = {k: v for k, v in saved.get("train", {}).items() if k not in _RESUMABLE_KEYS}
    current_train = {k: v for k, v in current["train"].items() if k not in _RESUMABLE_KEYS}
    differing += [
        f"train.{key}" for key in current_train if saved_train.get(key) != current_train[key]
    ]
    if differing:
        raise ckpt.CheckpointError(
            f"{checkpoint} was written with a different config ({', '.join(differing)} differ); "
            "resume with the run's own config.yaml"
        )
    if state.get("world_size") != world:
        raise ckpt.CheckpointError(
            f"{checkpoint} was written by {state.get('world_size')} processes; resuming with "
            f"{world} would draw different batches per process"
        )


# Settings that may change between a run and its resumption without changing its results.
_RESUMABLE_KEYS = {
    "log_every", "tensorboard", "wandb_project", "keep_checkpoints", "checkpoint_every"
}


def _read_log(out_dir: Path, *, up_to_step: int) -> list[dict[str, Any]]:
    path = out_dir / LOG_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [row for row in rows if row["step"] <= up_to_step]
