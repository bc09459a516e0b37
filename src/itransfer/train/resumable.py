"""When a run writes its resumable checkpoint, and what its checkpoints cost on disk.

The trajectory (``train.checkpoint_every``) keeps model weights only; the optimizer state that
resuming needs goes into a rolling resumable checkpoint written every
``train.save_every_minutes`` (default 30) and/or ``train.save_every_steps``, and whenever a
signal stops the run (:mod:`itransfer.train.checkpoint` has the layout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from itransfer.train.checkpoint import RESUMABLE_KEPT

ADAMW_STATES_PER_PARAMETER = 2  # exp_avg and exp_avg_sq, each as large as the weights


@dataclass
class ResumableSchedule:
    """Whether a resumable checkpoint is due.

    The time is read on the main process only (before each step); the loop sends its answer
    with the step's loss reduction, as it does a stop request, so that every process saves after
    the same step. ``clock`` is injectable so tests need not sleep.
    """

    every_steps: int | None = None
    every_minutes: float | None = None
    clock: Callable[[], float] = time.monotonic
    last_saved_at: float = field(default=0.0, init=False)

    def restart(self) -> None:
        """Start counting from now (the run started, or a resumable checkpoint was written)."""
        self.last_saved_at = self.clock()

    def time_is_up(self) -> bool:
        if self.every_minutes is None:
            return False
        return self.clock() - self.last_saved_at >= 60 * self.every_minutes

    def step_is_due(self, step: int) -> bool:
        return self.every_steps is not None and step % self.every_steps == 0


@dataclass(frozen=True)
class CheckpointDiskUsage:
    """Bytes a run's checkpoints take, from the model's parameter count (fp32 weights and
    AdamW state; the tokenizer and JSON state are a few MB)."""

    num_parameters: int
    trajectory_checkpoints: int
    bytes_per_value: int = 4

    @property
    def weights(self) -> int:
        """One weights-only (trajectory) checkpoint."""
        return self.bytes_per_value * self.num_parameters

    @property
    def optimizer(self) -> int:
        return ADAMW_STATES_PER_PARAMETER * self.weights

    @property
    def resumable(self) -> int:
        """One resumable checkpoint: weights and optimizer state."""
        return self.weights + self.optimizer

    @property
    def trajectory(self) -> int:
        """The trajectory, which is what a finished run keeps."""
        return self.trajectory_checkpoints * self.weights

    @property
    def peak_while_training(self) -> int:
        """The trajectory and the resumable checkpoints kept (the older of the two goes before
        a new one is written)."""
        return self.trajectory + RESUMABLE_KEPT * self.resumable

    @property
    def trajectory_with_optimizer(self) -> int:
        """The same trajectory with the optimizer state in every checkpoint (as before)."""
        return self.trajectory_checkpoints * self.resumable

    def lines(self) -> list[str]:
        """A few lines for a bench or a log, in GB (10^9 bytes)."""

        def gb(value: int) -> str:
            return f"{value / 1e9:.1f} GB"

        n = self.trajectory_checkpoints
        return [
            f"parameters: {self.num_parameters / 1e6:.1f}M; weights {gb(self.weights)}, "
            f"AdamW state {gb(self.optimizer)} per checkpoint",
            f"trajectory of {n}: {n} x {gb(self.weights)} = {gb(self.trajectory)} "
            f"(with the optimizer in each, as before: {n} x {gb(self.resumable)} = "
            f"{gb(self.trajectory_with_optimizer)})",
            f"while training: + {RESUMABLE_KEPT} resumable x {gb(self.resumable)} = at most "
            f"{gb(self.peak_while_training)}; a finished run keeps the trajectory only",
        ]
