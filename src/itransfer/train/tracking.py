"""Where training metrics go besides the run's JSONL log: TensorBoard and, optionally, W&B.

Each sink gets the same logged rows (total loss, unsupervised loss, learning rate, throughput),
the last per-task losses and the sampling distribution P(K) at that step. Only the main
process opens sinks. W&B is optional: ``train.wandb_project`` turns it on, the run id is kept
in the run folder so that ``--resume`` continues the same W&B run, and ``WANDB_MODE=offline``
works as usual without network.
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from itransfer.errors import ConfigError
from itransfer.runtime.atomic_files import atomic_write_text
from itransfer.sampling.rates import effective_num_tasks

logger = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id.txt"
_ROW_KEYS = ("loss", "unsupervised_loss", "lr", "samples_per_s", "tokens_per_s")


class MetricSink(Protocol):
    def log(
        self, row: dict[str, Any], weights: np.ndarray, task_losses: dict[int, float]
    ) -> None: ...

    # Named values of one step outside the training rows (the monitor's probes).
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def sampling_summary(weights: np.ndarray) -> dict[str, float]:
    """The effective number of tasks (exp of the entropy of P(K)) and the largest weight."""
    return {"effective_num_tasks": float(effective_num_tasks(weights)),
            "max_weight": float(weights.max())}


class TensorBoardSink:
    def __init__(self, path: Path, task_names: list[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.task_names = task_names
        self.writer = SummaryWriter(str(path))
        self.writer.add_text("task_names", ", ".join(task_names))

    def log(self, row: dict[str, Any], weights: np.ndarray, task_losses: dict[int, float]) -> None:
        step = row["step"]
        for key in _ROW_KEYS:
            if key in row:
                self.writer.add_scalar(f"train/{key}", row[key], step)
        for task, loss in task_losses.items():
            self.writer.add_scalar(f"task_loss/{self.task_names[task]}", loss, step)
        for key, value in sampling_summary(weights).items():
            self.writer.add_scalar(f"sampling/{key}", value, step)
        self.writer.add_histogram("sampling/weights", weights, step)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(
        self, project: str, out_dir: Path, config: dict[str, Any], task_names: list[str]
    ) -> None:
        try:
            import wandb
        except ImportError as error:
            raise ConfigError(
                f"train.wandb_project={project!r} needs the wandb package: pip install wandb "
                "(or leave train.wandb_project unset)"
            ) from error
        self.wandb = wandb
        self.task_names = task_names
        id_file = out_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:16]
        atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(
            project=project, id=run_id, resume="allow", name=out_dir.name, dir=str(out_dir),
            config=config,
        )

    def log(self, row: dict[str, Any], weights: np.ndarray, task_losses: dict[int, float]) -> None:
        data: dict[str, Any] = {f"train/{key}": row[key] for key in _ROW_KEYS if key in row}
        data |= {f"task_loss/{self.task_names[t]}": loss for t, loss in task_losses.items()}
        data |= {f"sampling/{key}": value for key, value in sampling_summary(weights).items()}
        data["sampling/weights"] = self.wandb.Histogram(weights)
        self.run.log(data, step=row["step"])

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        # W&B refuses a step below the last logged one; a probe follows its step's row.
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def check_sinks_available(*, wandb_project: str | None) -> None:
    """Fail early, on every process, when a requested sink cannot be opened."""
    if wandb_project and not _importable("wandb"):
        raise ConfigError(
            f"train.wandb_project={wandb_project!r} needs the wandb package: pip install wandb "
            "(or leave train.wandb_project unset)"
        )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # already imported, without a module spec
        return True


def open_sinks(
    *, tensorboard: bool, wandb_project: str | None, out_dir: Path, config: dict[str, Any],
    task_names: list[str],
) -> list[MetricSink]:
    sinks: list[MetricSink] = []
    if tensorboard:
        try:
            sinks.append(TensorBoardSink(out_dir / "tensorboard", task_names))
        except ImportError:  # tensorboard is optional at run time
            logger.warning("tensorboard is not installed; no TensorBoard logs")
    if wandb_project:
        try:
            sinks.append(WandbSink(wandb_project, out_dir, config, task_names))
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
    return sinks
