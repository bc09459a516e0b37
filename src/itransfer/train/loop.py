"""Instruction tuning (§2.3, Appendix B): multi-task training of a pretrained LM, in one loop.

One process (CPU or one GPU)::

    itransfer train --out runs/it --set model.name_or_path=itransfer:tiny-t5

Several GPUs on one node (DDP), or FSDP through an ``accelerate config`` file::

    accelerate launch --num_processes 8 -m itransfer train --config my.yaml --out runs/it

Two nodes: the same command on each, with ``--num_machines 2 --machine_rank {0,1}
--main_process_ip HOST --main_process_port 29500``.

The loop in :func:`instruction_tune` calls parts over one explicit state (torchtune's
recipe shape): :func:`itransfer.train.recipe.setup` builds or resumes it (the per-task data
limit shapes the task sizes the sampler sees there), then every knob of the paper is one
visible line of the loop: the task sampler P(K) draws each batch's tasks, one unsupervised step
follows every ``mixing.every`` instruction-tuning steps, the trajectory's weights are saved every
``checkpoint_every`` steps, and the resumable state (weights, optimizer, data positions, RNGs)
every ``save_every_minutes`` / ``save_every_steps`` and when a signal stops the run. The parts
(a step, logging, a checkpoint, clean-up) follow it.

``batch_size`` is the global batch: each optimizer step consumes
exactly ``batch_size`` examples whatever the number of processes and accumulation steps, and
the loss is normalised by the batch's total target tokens so the gradient does not depend on
how the batch was split.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError

from itransfer.config.schema import ExperimentConfig
from itransfer.data.contexts import warn_inputs_cut
from itransfer.encoding.examples import EncodedExample, collate, count_targets, target_mask
from itransfer.encoding.token_losses import token_losses
from itransfer.errors import TrainingStopped
from itransfer.runs.probe import Monitor
from itransfer.runtime.stopping import StopRequest, stop_requested_on_signal
from itransfer.sampling import plot_sampling_schedule
from itransfer.train import checkpoint as ckpt
from itransfer.train.fsdp import full_state_dict
from itransfer.train.monitoring import MonitorHook
from itransfer.train.recipe import TrainState, append_log, setup
from itransfer.train.resumable import ResumableSchedule

logger = logging.getLogger(__name__)

# (done, total, row): a logged training row per step, and {"phase": "tokenizing"} with the
# instances done while the tokenized training set is built (first use only).
ProgressCallback = Callable[[int, int, dict[str, Any]], None]


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


def instruction_tune(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    accelerator: Accelerator | None = None,
    stop_after: int | None = None,
    stop: StopRequest | None = None,
    clock: Callable[[], float] = time.monotonic,
    monitor: Monitor | None = None,
) -> TrainResult:
    """Instruction-tune ``config.model`` on the seen tasks; checkpoints go to ``out_dir``.

    ``stop_after`` ends the run after that many instruction-tuning steps as if interrupted
    (a resumable checkpoint is saved), which is how the tests check that resuming is exact.
    ``stop`` is a request an outer command already watches (else this call installs the signal
    handlers itself); ``clock`` times ``train.save_every_minutes`` (tests inject one).
    ``monitor`` probes transfer when due, changing nothing (:mod:`itransfer.train.monitoring`).
    """
    train = config.train
    state = setup(config, out_dir, resume=resume, accelerator=accelerator,
                  tokenizing=None if progress is None else (
                      lambda done, total: progress(done, total, {"phase": "tokenizing"})))
    state.resume_schedule = ResumableSchedule(
        every_steps=train.save_every_steps, every_minutes=train.save_every_minutes, clock=clock
    )
    hook = MonitorHook.for_run(monitor, config)  # does nothing without a monitor
    try:
        with stop_requested_on_signal(stop) as request:
            hook.begin(state)  # a fresh run's step-0 probe
            state.throughput.restart()
            state.resume_schedule.restart()
            while state.it_step < state.total_it_steps:
                # 1. a batch of instruction-tuning examples, tasks drawn by P(K) at this step
                state.stop_signal = request.signal
                state.save_requested = state.is_main_process and state.resume_schedule.time_is_up()
                row = train_step(state)
                # 2. unsupervised mixing (§5.2): one raw-text step every `mixing.every` IT steps
                if train.mixing.every and state.it_step % train.mixing.every == 0:
                    row["unsupervised_loss"] = unsupervised_step(state)
                # 3. logging and progress
                log_step(state, row, progress)
                hook.after_step(state)  # before the checkpoints: a resumed run keeps its row
                # 4. the trajectory: weights every `checkpoint_every` steps
                if train.checkpoint_every and state.it_step % train.checkpoint_every == 0:
                    save_checkpoint(state)
                if state.it_step == state.total_it_steps:
                    break  # finished: the final checkpoint follows, nothing is left to resume
                # 5. the resumable state: on its schedule, and before stopping
                if save_resumable_or_stop(state, stop_after):
                    break
    finally:
        cleanup(state)  # the sinks close on Ctrl-C and errors too
    if state.it_step == state.total_it_steps:
        if state.saved_step != state.it_step:
            save_checkpoint(state)
        drop_resumable(state)
    return _finish(state)


def save_resumable_or_stop(state: TrainState, stop_after: int | None) -> bool:
    """Save the resumable state when it is due or the run stops here; True when it stops
    after ``stop_after`` steps, :class:`TrainingStopped` when a signal stops it."""
    stopping = state.stop_agreed or (stop_after is not None and state.it_step >= stop_after)
    if stopping or state.save_agreed or state.resume_schedule.step_is_due(state.it_step):
        save_resumable(state)
    if state.stop_agreed:
        # Another process may have got the signal; a scheduler sends SIGTERM.
        raise TrainingStopped(
            f"{StopRequest(state.stop_signal).name}: stopped at step "
            f"{state.it_step} and saved a resumable checkpoint; resume with --resume",
            state.stop_signal or signal.SIGTERM)
    return stopping


def _finish(state: TrainState) -> TrainResult:
    inputs_cut = state.examples.inputs_cut_by_task(state.task_names, state.stream.task_sizes)
    budget = state.config.model.max_source_length
    warn_inputs_cut("instruction tuning", inputs_cut, budget)
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
    # Per-task loss sums, per-task counts, how many processes were asked to stop, whether the
    # main process's clock asks for a resumable checkpoint, and the total NLL, reduced in one
    # collective (the requests cost no extra round trip).
    sums = torch.zeros(2 * num_tasks + 3, dtype=torch.float64, device=accelerator.device)
    _accumulate_gradients(state, local, local_tasks, sums, world, global_targets)
    if state.train.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), state.train.max_grad_norm)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    task_losses = _reduce_step_sums(state, sums)
    return StepStats(
        loss=float(sums[-1]) / global_targets,
        examples=len(examples),
        target_tokens=global_targets,
        source_tokens=sum(len(e.source_ids) for e in examples),
        task_losses=task_losses,
    )


def _accumulate_gradients(
    state: TrainState, local: list[EncodedExample], local_tasks: list[int] | None,
    sums: torch.Tensor, world: int, global_targets: int,
) -> None:
    """Backward over this process's examples in ``gradient_accumulation`` micro-batches
    (gradients synchronised on the last only), adding each task's per-example losses and
    counts and the total NLL into ``sums``."""
    accelerator, model = state.accelerator, state.model
    causal = state.architecture == "causal"
    num_tasks = len(state.task_names)
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


def _reduce_step_sums(state: TrainState, sums: torch.Tensor) -> dict[int, float]:
    """Sum ``sums`` over the processes, in place, with this process's stop and save requests in
    it (one collective), set what the processes agreed on, and return the step's mean loss per
    task."""
    num_tasks = len(state.task_names)
    stop_slot, save_slot = 2 * num_tasks, 2 * num_tasks + 1
    sums[stop_slot] = 0.0 if state.stop_signal is None else 1.0
    sums[save_slot] = 1.0 if state.save_requested else 0.0
    sums[:] = state.accelerator.reduce(sums, reduction="sum")
    state.stop_agreed = bool(sums[stop_slot] > 0)
    state.save_agreed = bool(sums[save_slot] > 0)
    counts = sums[num_tasks : 2 * num_tasks]
    return {
        int(task): float(sums[task] / counts[task]) for task in torch.nonzero(counts).flatten()
    }


def log_step(state: TrainState, row: dict[str, Any], progress: ProgressCallback | None) -> None:
    """Every ``log_every`` steps (and the last) the row gets lr and throughput and goes to the
    log, its file and the sinks; the progress callback sees every step (main process only)."""
    if state.it_step % state.train.log_every == 0 or state.it_step == state.total_it_steps:
        row |= {"lr": state.scheduler.get_last_lr()[0], **state.throughput.rates()}
        append_log(state, row)
        if state.is_main_process:
            for sink in state.sinks:
                sink.log(row, state.sampler.weights(state.it_step), state.last_task_losses)
    if progress is not None and state.is_main_process:
        progress(state.it_step, state.total_it_steps, row)


# --- checkpoint and clean-up ---------------------------------------------------------------


def save_checkpoint(state: TrainState) -> Path:
    """Write the trajectory checkpoint ``checkpoints/step-<it_step>/``: the weights and the
    state evaluation reads, no optimizer (every process takes part)."""
    final = _write_checkpoint(state, state.checkpoints_dir, keep=state.train.keep_checkpoints,
                              resumable=False)
    state.saved_step = state.it_step
    return final


def save_resumable(state: TrainState) -> Path:
    """Write ``resume/step-<it_step>/``: the weights, optimizer, data positions and RNGs that
    ``--resume`` continues exactly from; only the newest few are kept."""
    final = _write_checkpoint(state, state.resume_dir, keep=ckpt.RESUMABLE_KEPT, resumable=True)
    state.resumable_step = state.it_step
    state.resume_schedule.restart()
    return final


def drop_resumable(state: TrainState) -> None:
    """A finished run keeps its trajectory only: nothing is left to resume."""
    if state.is_main_process and state.resume_dir.exists():
        shutil.rmtree(state.resume_dir)
    state.accelerator.wait_for_everyone()


def _write_checkpoint(
    state: TrainState, directory: Path, *, keep: int | None, resumable: bool
) -> Path:
    """Stage a checkpoint of this step in ``directory`` and commit it, or, when a write fails
    (a full disk), remove the staging folder and raise one :class:`CheckpointError` on every
    process, the previous checkpoint untouched."""
    accelerator, model, step = state.accelerator, state.model, state.it_step
    main = state.is_main_process
    # At a trajectory step the weights are on disk already: link them instead (all processes
    # decide alike, so the collective below is skipped by all or by none).
    weights_from = state.last_saved if resumable and state.saved_step == step else None
    state_dict = None if weights_from else full_state_dict(accelerator, model)  # FSDP: collective
    optimizer_state = (ckpt.gather_optimizer_state(model, state.optimizer)  # likewise
                       if resumable else None)
    staging = ckpt.staging_dir(directory, step)
    failure: str | None = None
    try:
        if main:
            if resumable and keep is not None and keep > 1:
                ckpt.prune(directory, keep - 1)  # room for the new one, the newest kept
            ckpt.begin(directory, step)
    except OSError as exc:
        failure = ckpt.write_failure(exc, staging)
    accelerator.wait_for_everyone()
    try:
        if resumable and failure is None:
            ckpt.write_rank_rng(staging, accelerator.process_index)
        if main and failure is None:
            if weights_from is not None:
                ckpt.link_files(weights_from, staging)
            else:
                accelerator.unwrap_model(model).save_pretrained(
                    staging, state_dict=state_dict, safe_serialization=True
                )
                state.tokenizer.save_pretrained(staging)
            if optimizer_state is not None:
                ckpt.write_optimizer(staging, optimizer_state)
            ckpt.write_state(staging, _trainer_state(state))
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        failure = failure or ckpt.write_failure(exc, staging)
    failures = [message for message in _gathered(accelerator, failure) if message]
    if failures:
        if main:
            ckpt.abort(directory, step)
        accelerator.wait_for_everyone()
        raise ckpt.CheckpointError(failures[0])
    final = directory / ckpt.checkpoint_name(step)
    if main:
        final = ckpt.commit(directory, step, keep=keep)
    accelerator.wait_for_everyone()
    state.last_saved = final
    return final


def _gathered(accelerator: Accelerator, message: str | None) -> list[str | None]:
    """Every process's ``message``, so that all of them fail together or none does."""
    if accelerator.num_processes == 1:
        return [message]
    return list(gather_object([message]))


def _trainer_state(state: TrainState) -> dict[str, Any]:
    return {
        "it_step": state.it_step,
        "optimizer_step": state.optimizer_step,
        "total_it_steps": state.total_it_steps,
        "world_size": state.accelerator.num_processes,
        # what wrote it (FSDP, MULTI_GPU: DDP, ...); weights and optimizer state are whole and
        # keyed by name either way, so it does not bind the resume
        "distributed_type": state.accelerator.distributed_type.value,
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
