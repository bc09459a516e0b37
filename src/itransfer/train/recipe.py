"""An instruction-tuning run's explicit state, and the setup that builds (or resumes) it.

:func:`setup` turns a config into a :class:`TrainState`: the seen tasks and their training
splits, the sampler P(K) over them, the batch stream, the model, optimizer and schedule, and,
with ``resume``, everything the latest checkpoint saved (counters, sampler, stream and corpus
positions, optimizer, RNGs), restored exactly. The parts that advance the state (one step, a
checkpoint, clean-up) and the loop calling them are in :mod:`itransfer.train.loop`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, set_seed

from itransfer.config.schema import ExperimentConfig, TrainConfig
from itransfer.data.batching import TaskBatchStream
from itransfer.data.benchmark import SNIBenchmark, open_benchmark
from itransfer.data.corpus import BUNDLED_CORPUS, iter_corpus_documents
from itransfer.encoding.cache import (
    BuildProgress,
    TokenizedTrainingSet,
    open_training_set,
    seen_train_sizes,
)
from itransfer.encoding.examples import ExampleEncoder
from itransfer.errors import ConfigError, DataError
from itransfer.models.loading import LoadedModel, load_model_and_tokenizer
from itransfer.runs.identity import resume_differences
from itransfer.runs.monitor_log import LOG_FILE, read_log
from itransfer.runs.provenance import write_run_record
from itransfer.runtime.atomic_files import atomic_write_text
from itransfer.runtime.launch import agreed, check_fsdp, check_launch, make_accelerator
from itransfer.sampling import TaskSampler, build_sampler
from itransfer.train import checkpoint as ckpt
from itransfer.train.fsdp import share_tied_embeddings
from itransfer.train.resumable import ResumableSchedule
from itransfer.train.tracking import MetricSink, check_sinks_available, open_sinks
from itransfer.train.unsupervised import UnsupervisedBatches
from itransfer.train.weights import load_weights, model_fingerprint

logger = logging.getLogger(__name__)



@dataclass
class Throughput:
    """Examples and real (non-pad) tokens since the last logged row."""

    started: float = field(default_factory=time.perf_counter)
    examples: int = 0
    tokens: int = 0

    def add(self, examples: int, tokens: int) -> None:
        self.examples += examples
        self.tokens += tokens

    def rates(self) -> dict[str, float]:
        """samples/s and tokens/s over the window, then a new window starts."""
        elapsed = time.perf_counter() - self.started
        measured = {
            "samples_per_s": self.examples / elapsed, "tokens_per_s": self.tokens / elapsed
        }
        self.restart()
        return measured

    def restart(self) -> None:
        self.started, self.examples, self.tokens = time.perf_counter(), 0, 0

    def leave_out(self, seconds: float) -> None:
        """Time spent on something else than training (a probe) does not count in the rates."""
        self.started += seconds


@dataclass
class TrainState:
    """Everything an instruction-tuning run holds between two steps.

    The counters, sampler, batch stream, corpus position, optimizer, scheduler and RNGs are
    what a checkpoint saves; the rest is rebuilt from the config by :func:`setup`.
    """

    config: ExperimentConfig
    out_dir: Path
    accelerator: Accelerator
    task_names: list[str]
    total_it_steps: int
    sampler: TaskSampler
    stream: TaskBatchStream
    unsupervised: UnsupervisedBatches | None
    examples: TokenizedTrainingSet
    model: torch.nn.Module  # as accelerate prepared it (DDP/FSDP-wrapped under several processes)
    tokenizer: Any
    architecture: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    fingerprint: dict[str, Any]
    sinks: list[MetricSink] = field(default_factory=list)
    it_step: int = 0  # instruction-tuning steps done
    optimizer_step: int = 0  # also counts the unsupervised steps
    log: list[dict[str, Any]] = field(default_factory=list)
    last_task_losses: dict[int, float] = field(default_factory=dict)
    last_saved: Path | None = None  # the newest checkpoint written, of either kind
    saved_step: int | None = None  # the step of the newest trajectory checkpoint
    resumable_step: int | None = None  # the step of the newest resumable checkpoint
    resume_schedule: ResumableSchedule = field(default_factory=ResumableSchedule)
    # A signal (SIGINT, SIGTERM, SIGUSR1) asked this process to stop at the next step boundary,
    # and the main process's clock says a resumable checkpoint is due; each step sums both
    # requests over the processes, so all of them stop or save after the same step.
    stop_signal: int | None = None
    stop_agreed: bool = False  # some process was asked to stop, as of the last step
    save_requested: bool = False
    save_agreed: bool = False  # a resumable checkpoint is due after the last step
    throughput: Throughput = field(default_factory=Throughput)

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    @property
    def checkpoints_dir(self) -> Path:
        """The trajectory: weights-only checkpoints, for evaluation."""
        return self.out_dir / ckpt.TRAJECTORY_DIR

    @property
    def resume_dir(self) -> Path:
        """The rolling resumable checkpoints (weights, optimizer, RNGs)."""
        return self.out_dir / ckpt.RESUME_DIR

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak learning rate, then linear decay to 0 (Appendix B)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = total_steps - step
        return max(0.0, remaining / max(1, total_steps - warmup_steps))

    return factor


# --- setup ---------------------------------------------------------------------------------


def setup(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    tokenizing: BuildProgress | None = None,
) -> TrainState:
    """Build the run's state: data, sampler, model, optimizer; with ``resume``, restore the
    latest checkpoint under ``out_dir`` exactly. The main process opens the metric sinks.
    ``tokenizing`` sees the tokenized training set's build, when this process builds it."""
    train = config.train
    accelerator = accelerator or make_accelerator(
        mixed_precision="no" if train.precision == "fp32" else train.precision
    )
    _check_launch(config, accelerator)
    out_dir = Path(out_dir)
    # Every draw below (model init, batches, dropout) follows from this seed, in this order.
    set_seed(config.seed)

    # The seen tasks, their training-set sizes (after the data limit) and the sampler over them.
    benchmark, task_names, task_sizes, unlimited_sizes = _seen_task_sizes(config)
    total_it_steps = planned_steps(train, task_sizes, unlimited_sizes)
    sampler = build_sampler(
        train.sampler, task_sizes, total_steps=total_it_steps, batch_size=train.batch_size
    )

    # The model, the text each example becomes, and the batches: by P(K), grouped by length.
    loaded = load_model_and_tokenizer(
        config.model.name_or_path,
        architecture=config.model.architecture,
        trust_remote_code=config.model.trust_remote_code,
    )
    examples, stream = _instruction_batches(config, loaded, benchmark, task_names, task_sizes,
                                            sampler, tokenizing)
    unsupervised = _unsupervised_batches(config, loaded.tokenizer, loaded.architecture)
    model = loaded.model
    optimizer, scheduler = _optimizer_and_schedule(config, model, total_it_steps)

    # The fingerprint and resumed weights concern the whole model, before DDP/FSDP wrap (and
    # FSDP shards) it; the optimizer state is loaded after, each rank taking its part.
    fingerprint = model_fingerprint(model, config.model.name_or_path)
    start = _resume_point(out_dir, model, fingerprint, config, accelerator.num_processes) \
        if resume else ResumePoint()
    if accelerator.distributed_type == DistributedType.FSDP:
        share_tied_embeddings(model)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = TrainState(
        config=config, out_dir=out_dir, accelerator=accelerator, task_names=task_names,
        total_it_steps=total_it_steps, sampler=sampler, stream=stream,
        unsupervised=unsupervised, examples=examples, model=model, tokenizer=loaded.tokenizer,
        architecture=loaded.architecture, optimizer=optimizer, scheduler=scheduler,
        fingerprint=fingerprint,
    )
    _start_from(state, start)
    if state.is_main_process:
        _open_outputs(state)
    return state


def _instruction_batches(
    config: ExperimentConfig, loaded: LoadedModel, benchmark: SNIBenchmark, task_names: list[str],
    task_sizes: Sequence[int], sampler: TaskSampler, tokenizing: BuildProgress | None,
) -> tuple[TokenizedTrainingSet, TaskBatchStream]:
    """The tokenized training examples and the stream of batches drawn from them."""
    # Tokenized once into an Arrow cache on disk that every process maps (built on first use).
    examples = open_training_set(
        _encoder(config, loaded.tokenizer, loaded.architecture), benchmark.index, task_names,
        config.data.splits, config.seed, progress=tokenizing,
    )
    stream = TaskBatchStream(
        task_sizes,
        sampler,
        batch_size=config.train.batch_size,
        seed=config.seed,
        length_of=examples.length,
        window_batches=config.train.length_window_batches,
    )
    return examples, stream


@dataclass(frozen=True)
class ResumePoint:
    """Where a ``--resume`` run continues from (nothing: a fresh run)."""

    checkpoint: Path | None = None  # the checkpoint its state is restored from
    saved: dict[str, Any] = field(default_factory=dict)  # that checkpoint's trainer state
    # A run killed before its first resumable checkpoint: its newest trajectory checkpoint
    # (weights only), which the run replays up to from step 0.
    replayed: Path | None = None


def _resume_point(
    out_dir: Path, model: torch.nn.Module, fingerprint: dict[str, Any],
    config: ExperimentConfig, world: int,
) -> ResumePoint:
    """Find the checkpoint ``out_dir``'s run continues from, check it belongs to this run and
    load its weights into ``model`` (still unwrapped)."""
    latest = ckpt.resume_checkpoint(out_dir)
    if latest is not None:
        saved = ckpt.read_state(latest)
        check_compatible(latest, saved, fingerprint, config, world)
        load_weights(model, latest)
        return ResumePoint(checkpoint=latest, saved=saved)
    replayed = ckpt.latest_checkpoint(out_dir / ckpt.TRAJECTORY_DIR)
    if replayed is not None:
        # Killed before its first resumable checkpoint: its trajectory checkpoints hold weights
        # only, so the run starts again from step 0 (the same run: checked like a resume) and
        # rewrites each of them identically on the way.
        check_compatible(replayed, ckpt.read_state(replayed), fingerprint, config, world)
    return ResumePoint(replayed=replayed)


def _start_from(state: TrainState, start: ResumePoint) -> None:
    """Restore the resumed state, or say that the run replays, or refuse to start a fresh run
    over another run's checkpoints."""
    if start.checkpoint is not None:
        _restore(state, start.checkpoint, start.saved)
    elif start.replayed is not None:
        logger.warning(
            "%s has no resumable checkpoint (trajectory checkpoints hold weights only): "
            "restarting from step 0; the replay rewrites them identically up to step %d",
            state.out_dir, ckpt.checkpoint_step(start.replayed))
    elif agreed(PartialState(), lambda: _holds_checkpoints(state)):
        # Every process raises: one that went on alone would wait for the others forever.
        raise ConfigError(
            f"{state.out_dir} already holds checkpoints; pass --resume to continue that run "
            "or choose another --out"
        )


def _holds_checkpoints(state: TrainState) -> bool:
    return bool(ckpt.list_checkpoints(state.checkpoints_dir)
                or ckpt.list_checkpoints(state.resume_dir))


def planned_steps(
    train: TrainConfig, task_sizes: Sequence[int], unlimited_sizes: Sequence[int]
) -> int:
    """The number of instruction-tuning steps a run takes: its LR schedule's length and the
    ``total_steps`` its sampler's schedule (reverse annealing, UniMax's budget) spans.

    ``task_sizes`` are the seen tasks' training-set sizes after the per-task data limit,
    ``unlimited_sizes`` the same before it. An explicit ``train.steps`` wins. Otherwise
    ``train.epochs`` passes of ``train.batch_size`` examples over

    * ``budget: epochs``: the run's own training data, so a data limit shortens the run
      (limit 10 on the full SNI: about a thousand steps, against ~300k without a limit);
    * ``budget: steps``: the data without the limit, so every limit trains as many steps as the
      unlimited model, re-drawing its (limited) instances as often as that takes.
    """
    if train.steps is not None:
        return train.steps
    examples = sum(task_sizes) if train.budget == "epochs" else sum(unlimited_sizes)
    return math.ceil(train.epochs * examples / train.batch_size)


def instruction_tuning_steps(config: ExperimentConfig) -> int:
    """:func:`planned_steps` of ``config``, from its benchmark alone (no model is loaded)."""
    _, _, task_sizes, unlimited_sizes = _seen_task_sizes(config)
    return planned_steps(config.train, task_sizes, unlimited_sizes)


def _seen_task_sizes(
    config: ExperimentConfig,
) -> tuple[SNIBenchmark, list[str], list[int], list[int]]:
    """The benchmark, its seen tasks, and their training-set sizes after and before the
    per-task data limit."""
    benchmark, task_names = _seen_tasks(config)
    task_sizes, unlimited_sizes = seen_train_sizes(
        benchmark.index, task_names, config.data.splits
    )
    return benchmark, task_names, task_sizes, unlimited_sizes


def _check_launch(config: ExperimentConfig, accelerator: Accelerator) -> None:
    """Fail on every process, before any work, when the run cannot go as configured."""
    train = config.train
    check_launch(accelerator)
    check_fsdp(accelerator)
    world = accelerator.num_processes
    check_sinks_available(wandb_project=train.wandb_project)
    if train.batch_size % (world * train.gradient_accumulation):
        raise ConfigError(
            f"train.batch_size={train.batch_size} must be divisible by processes ({world}) × "
            f"train.gradient_accumulation ({train.gradient_accumulation})"
        )


def _seen_tasks(config: ExperimentConfig) -> tuple[SNIBenchmark, list[str]]:
    """The benchmark (its index and selection; no task file is parsed) and its seen tasks."""
    benchmark = open_benchmark(config.data, config.seed)
    task_names = list(benchmark.selection.seen)
    if not task_names:
        raise DataError(benchmark.tasks_dir, "no seen (training) tasks in this selection")
    return benchmark, task_names


def _encoder(config: ExperimentConfig, tokenizer: Any, architecture: str) -> ExampleEncoder:
    return ExampleEncoder.for_config(config, tokenizer, architecture)  # type: ignore[arg-type]


def _optimizer_and_schedule(
    config: ExperimentConfig, model: torch.nn.Module, total_it_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    train = config.train
    mix_every = train.mixing.every
    # The schedule runs over optimizer steps, unsupervised ones included.
    total_optimizer_steps = total_it_steps + (total_it_steps // mix_every if mix_every else 0)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    # Not passed through accelerator.prepare: its scheduler wrapper steps once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(train.warmup_steps, total_optimizer_steps)
    )
    return optimizer, scheduler


def _open_outputs(state: TrainState) -> None:
    """The run record, the log so far (a resumed run's, up to its checkpoint) and the sinks."""
    config, out_dir = state.config, state.out_dir
    write_run_record(out_dir, config, seed=config.seed)
    atomic_write_text(out_dir / LOG_FILE, "".join(json.dumps(row) + "\n" for row in state.log))
    state.sinks = open_sinks(
        tensorboard=config.train.tensorboard, wandb_project=config.train.wandb_project,
        out_dir=out_dir, config=config.model_dump(mode="json"), task_names=state.task_names,
    )


def _unsupervised_batches(
    config: ExperimentConfig, tokenizer: Any, architecture: str
) -> UnsupervisedBatches | None:
    mixing = config.train.mixing
    if not mixing.every:
        return None
    source = BUNDLED_CORPUS if mixing.source == "bundled" else mixing.source
    return UnsupervisedBatches(
        lambda: iter_corpus_documents(source, seed=config.seed),
        tokenizer,
        architecture,
        batch_size=config.train.batch_size,
        max_length=mixing.max_length,
        seed=config.seed,
    )


def _restore(state: TrainState, checkpoint: Path, saved: dict[str, Any]) -> None:
    """Everything but the weights (loaded before accelerate wrapped the model).

    A finished run's final trajectory checkpoint has no optimizer or RNG state, and needs none:
    no step is left to take."""
    resumable = ckpt.is_resumable(checkpoint)
    if resumable:
        ckpt.load_optimizer_state(state.model, state.optimizer, checkpoint)
    state.scheduler.load_state_dict(saved["scheduler"])
    state.sampler.load_state_dict(saved["sampler"])
    state.stream.load_state_dict(saved["stream"])
    if state.unsupervised is not None:
        state.unsupervised.load_state_dict(saved["unsupervised"])
    if resumable:
        ckpt.restore_rng_state(ckpt.read_rank_rng(checkpoint, state.accelerator.process_index))
    state.it_step, state.optimizer_step = saved["it_step"], saved["optimizer_step"]
    if checkpoint.parent == state.checkpoints_dir:  # already in the trajectory
        state.last_saved, state.saved_step = checkpoint, state.it_step
    state.log = read_log(state.out_dir, up_to_step=state.it_step)
    logger.info("resumed from %s at step %d", checkpoint, state.it_step)


def check_compatible(
    checkpoint: Path, saved: dict[str, Any], fingerprint: dict[str, Any],
    config: ExperimentConfig, world: int,
) -> None:
    """Refuse to resume a checkpoint of another model, config or number of processes."""
    if saved.get("model") != fingerprint:
        raise ckpt.CheckpointError(
            f"{checkpoint} belongs to another model ({saved.get('model')}); this config "
            f"builds {fingerprint}"
        )
    differing = resume_differences(saved.get("config", {}), config)
    if differing:
        raise ckpt.CheckpointError(
            f"{checkpoint} was written with a different config ({', '.join(differing)} differ); "
            "resume with the run's own config.yaml"
        )
    if saved.get("world_size") != world:
        raise ckpt.CheckpointError(
            f"{checkpoint} was written by {saved.get('world_size')} processes; resuming with "
            f"{world} would draw different batches per process"
        )


def append_log(state: TrainState, row: dict[str, Any]) -> None:
    """A row into the run's log, and into ``train_log.jsonl`` from the main process."""
    state.log.append(row)
    if state.is_main_process:
        with (state.out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
