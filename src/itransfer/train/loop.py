"""Instruction tuning (§2.3, Appendix B): multi-task training of a pretrained LM, in one loop.

One process (CPU or one GPU)::

    itransfer train --config configs/quickstart.yaml --out runs/it

Several GPUs on one node (DDP), or FSDP through an ``accelerate config`` file::

    accelerate launch --num_processes 8 -m itransfer train --config my.yaml --out runs/it

Two nodes: the same command on each, with ``--num_machines 2 --machine_rank {0,1}
--main_process_ip HOST --main_process_port 29500``.

The loop in :func:`instruction_tune` calls parts over one explicit state (torchtune's
recipe shape): :func:`itransfer.train.recipe.setup` builds or resumes it (the per-task data
limit shapes the task sizes the sampler sees there), then every knob of the paper is one
visible line of the loop: the task sampler P(K) draws each batch's tasks, one unsupervised step
follows every ``mixing.every`` instruction-tuning steps, and checkpoints are written every
``checkpoint_every`` steps. The parts (a step, logging, a checkpoint, clean-up) follow it.

``batch_size`` is the global batch: each optimizer step consumes
exactly ``batch_size`` examples whatever the number of processes and accumulation steps, and
the loss is normalised by the batch's total target tokens so the gradient does not depend on
how the batch was split.
"""

from __future__ import annotations

import json
import logging
import math
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from itransfer.config import ExperimentConfig
from itransfer.data.contexts import cut_details, cut_summary
from itransfer.errors import TrainingStopped
from itransfer.examples import EncodedExample, collate, count_targets, target_mask
from itransfer.sampling import plot_sampling_schedule
from itransfer.token_losses import token_losses
from itransfer.train import checkpoint as ckpt
from itransfer.train.recipe import LOG_FILE, TrainState, setup

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, dict[str, float]], None]


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_requested_on_signal() -> Iterator[dict[str, int | None]]:
    """SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends before it preempts a job)
    only ask the loop to stop at the next step boundary and save; a second Ctrl-C interrupts
    at once."""
    flag: dict[str, int | None] = {"signal": None}
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        flag["signal"] = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous[signal.SIGINT])

    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no graceful stop
        yield flag
        return
    try:
        yield flag
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


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
    state = setup(config, out_dir, resume=resume, accelerator=accelerator)
    try:
        with stop_requested_on_signal() as interrupt:
            state.throughput.restart()
            while state.it_step < state.total_it_steps:
                # 1. a batch of instruction-tuning examples, tasks drawn by P(K) at this step
                state.stop_signal = interrupt["signal"]
                row = train_step(state)
                # 2. unsupervised mixing (§5.2): one raw-text step every `mixing.every` IT steps
                if train.mixing.every and state.it_step % train.mixing.every == 0:
                    row["unsupervised_loss"] = unsupervised_step(state)
                # 3. logging and progress
                log_step(state, row, progress)
                # 4. the trajectory: a checkpoint every `checkpoint_every` steps
                if train.checkpoint_every and state.it_step % train.checkpoint_every == 0:
                    save_checkpoint(state)
                if state.stop_agreed or (stop_after is not None and state.it_step >= stop_after):
                    if state.saved_step != state.it_step:
                        save_checkpoint(state)
                    if state.stop_agreed:
                        # Another process may have got the signal; a scheduler sends SIGTERM.
                        signum = state.stop_signal or signal.SIGTERM
                        raise TrainingStopped(
                            f"{signal.Signals(signum).name}: stopped at step {state.it_step} "
                            "and saved a checkpoint; resume with --resume", signum)
                    break
    finally:
        cleanup(state)  # the sinks close on Ctrl-C and errors too
    if state.saved_step != state.it_step:
        save_checkpoint(state)
    return _finish(state)


def _finish(state: TrainState) -> TrainResult:
    encoder = state.examples.encoder
    budget = state.config.model.max_source_length
    if summary := cut_summary(encoder.context.inputs_cut, budget):
        logger.warning("instruction tuning: %s", summary)
        logger.info("instruction tuning: %s", cut_details(encoder.context.inputs_cut, budget))
    if state.is_main_process:
        # P(K) over the run as the sampler defines it (DWA: from its final loss history).
        plot_sampling_schedule(
            state.sampler, state.out_dir / "sampling_schedule.png", task_names=state.task_names
        )
    assert state.last_saved is not None  # the loop always ends with a saved checkpoint
    return TrainResult(
        out_dir=state.out_dir,
        final_checkpoint=state.last_saved,
        steps=state.it_step,
        log=state.log,
        task_names=state.task_names,
        final_task_losses={
            state.task_names[k]: v for k, v in sorted(state.last_task_losses.items())
        },
    )


# --- steps ---------------------------------------------------------------------------------


def train_step(state: TrainState) -> dict[str, Any]:
    """One instruction-tuning step: a batch whose tasks P(K) draws at this step, one update.

    Returns the step's log row (the step number after it, its loss and real tokens).
    """
    refs = state.stream.next_batch(state.it_step)
    stats = optimizer_update(
        state, [state.examples(task, instance) for task, instance in refs],
        [task for task, _ in refs],
    )
    state.sampler.observe_losses(state.it_step, stats.task_losses)  # DWA adapts; others ignore
    state.last_task_losses.update(stats.task_losses)
    state.it_step += 1
    state.optimizer_step += 1
    tokens = stats.source_tokens + stats.target_tokens  # real, non-pad
    state.throughput.add(stats.examples, tokens)
    return {"step": state.it_step, "loss": stats.loss, "tokens": tokens}


def unsupervised_step(state: TrainState) -> float:
    """One update on a batch of raw text (§5.2 mixing); returns its loss."""
    if state.unsupervised is None:
        raise ValueError("unsupervised_step needs train.mixing.every set")
    loss = optimizer_update(state, state.unsupervised.next_batch(), None).loss
    state.optimizer_step += 1
    return loss


def optimizer_update(
    state: TrainState, examples: list[EncodedExample], example_tasks: list[int] | None
) -> StepStats:
    """Forward/backward over this process's share of one global batch, then one update.

    The loss is divided by the global batch's target tokens (times the processes, which DDP
    averages over), so the gradient does not depend on how the batch was split.
    """
    accelerator, model = state.accelerator, state.model
    world, rank = accelerator.num_processes, accelerator.process_index
    causal = state.architecture == "causal"
    model.train()
    local = examples[rank::world]
    local_tasks = example_tasks[rank::world] if example_tasks is not None else None
    global_targets = sum(count_targets(e, causal) for e in examples)
    num_tasks = len(state.task_names)
    # Per-task loss sums, per-task counts, how many processes were asked to stop and the
    # total NLL, reduced in one collective (the stop request costs no extra round trip).
    sums = torch.zeros(2 * num_tasks + 2, dtype=torch.float64, device=accelerator.device)
    stop_slot = 2 * num_tasks
    micro_size = math.ceil(len(local) / state.train.gradient_accumulation)
    chunks = [local[i : i + micro_size] for i in range(0, len(local), micro_size)]
    for index, chunk in enumerate(chunks):
        batch = collate(
            chunk, pad_token_id=state.tokenizer.pad_token_id, architecture=state.architecture
        )
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
    if state.train.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), state.train.max_grad_norm)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    sums[stop_slot] = 0.0 if state.stop_signal is None else 1.0
    sums = accelerator.reduce(sums, reduction="sum")
    state.stop_agreed = bool(sums[stop_slot] > 0)
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


def log_step(state: TrainState, row: dict[str, Any], progress: ProgressCallback | None) -> None:
    """Every ``log_every`` steps (and the last) the row gets lr and throughput and goes to the
    log, its file and the sinks; the progress callback sees every step (main process only)."""
    if state.it_step % state.train.log_every == 0 or state.it_step == state.total_it_steps:
        row |= {"lr": state.scheduler.get_last_lr()[0], **state.throughput.rates()}
        state.log.append(row)
        if state.is_main_process:
            with (state.out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            for sink in state.sinks:
                sink.log(row, state.sampler.weights(state.it_step), state.last_task_losses)
    if progress is not None and state.is_main_process:
        progress(state.it_step, state.total_it_steps, row)


# --- checkpoint and clean-up ---------------------------------------------------------------


def save_checkpoint(state: TrainState) -> Path:
    """Write ``checkpoints/step-<it_step>/`` (every process takes part) and return it."""
    accelerator, model = state.accelerator, state.model
    checkpoints_dir, step = state.checkpoints_dir, state.it_step
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP: every rank
    optimizer_state = ckpt.gather_optimizer_state(model, state.optimizer)  # likewise
    if state.is_main_process:
        ckpt.begin(checkpoints_dir, step)
    accelerator.wait_for_everyone()
    staging = ckpt.staging_dir(checkpoints_dir, step)
    ckpt.write_rank_rng(staging, accelerator.process_index)
    if state.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(
            staging, state_dict=state_dict, safe_serialization=True
        )
        state.tokenizer.save_pretrained(staging)
        ckpt.write_optimizer(staging, optimizer_state)
        ckpt.write_state(staging, _trainer_state(state))
    accelerator.wait_for_everyone()
    final = checkpoints_dir / ckpt.checkpoint_name(step)
    if state.is_main_process:
        final = ckpt.commit(checkpoints_dir, step, keep=state.train.keep_checkpoints)
    accelerator.wait_for_everyone()
    state.last_saved, state.saved_step = final, step
    return final


def _trainer_state(state: TrainState) -> dict[str, Any]:
    return {
        "it_step": state.it_step,
        "optimizer_step": state.optimizer_step,
        "total_it_steps": state.total_it_steps,
        "world_size": state.accelerator.num_processes,
        "scheduler": state.scheduler.state_dict(),
        "sampler": state.sampler.state_dict(),
        "stream": state.stream.state_dict(),
        "unsupervised": state.unsupervised.state_dict() if state.unsupervised else None,
        "model": state.fingerprint,
        "config": state.config.model_dump(mode="json"),
        "task_names": state.task_names,
    }


def cleanup(state: TrainState) -> None:
    """Close the metric sinks, every one even when another fails to close."""
    sinks, state.sinks = state.sinks, []
    with ExitStack() as closing:
        for sink in sinks:
            closing.callback(sink.close)
