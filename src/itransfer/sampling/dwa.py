"""Dynamic Weight Averaging (Liu et al., 2019) recast as a task sampler."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BeforeValidator

from itransfer.errors import ConfigError
from itransfer.sampling.base import (
    SamplerConfig,
    TaskSampler,
    integer_at_least,
    number_at_least,
    register_sampler,
)
from itransfer.sampling.rates import loss_ratio_rates, proportional_rates, uniform_rates

Base = Literal["proportional", "uniform"]


def _known_base(base: Any) -> Any:
    if base not in get_args(Base):
        raise ValueError(f"must be one of {', '.join(get_args(Base))}")
    return base


class DWAConfig(SamplerConfig):
    name: Literal["dwa"] = "dwa"
    temperature: Annotated[float, number_at_least(0.0)] = 1.0
    window: Annotated[int, integer_at_least(1)] = 50
    base: Annotated[Base, BeforeValidator(_known_base)] = "proportional"


@register_sampler("dwa", config=DWAConfig)
class DWASampler(TaskSampler):
    """Sample tasks more whose loss has been falling slowly, or rising, lately.

    Definition. Each task k keeps the mean losses of the last ``2W`` optimizer steps at which
    it was observed (``W = window``; steps where the task was absent do not count). Its loss
    ratio is ``r_k = mean(latest W) / mean(the W before those)``, and ``r_k = 1`` while the
    task has fewer than ``2W`` observations (or a zero denominator). Then::

        p_k = b_k * exp(r_k / T) / sum_j b_j * exp(r_j / T)

    with ``T = temperature`` (1 in the paper's Appendix B) and ``b`` the ``base`` distribution.

    Why a base distribution. Liu et al. multiply each task's loss by ``K * softmax(r / T)_k``
    while every task sees the same amount of data. Here tasks are sampled proportionally to
    their size by default, and sampling with ``p_k ∝ n_k * w_k`` has the same expected gradient
    as proportional sampling with loss weights ``w_k``; so ``base="proportional"`` (default) is
    DWA applied on top of the paper's default P(K). It starts exactly proportional (all
    ``r_k = 1``), and T → ∞ recovers proportional. ``base="uniform"`` gives the plain softmax
    ``p = softmax(r / T)``, which is close to uniform for T ≥ 1 since ratios stay near 1.

    Memory is bounded at ``2W`` floats per task; the history is part of :meth:`state_dict`, so
    resuming reproduces the weights exactly.
    """

    def __init__(
        self,
        config: DWAConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        super().__init__(config, task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.temperature = config.temperature
        self.window = config.window
        self.base = config.base
        self._base_rates = (
            proportional_rates(self.task_sizes)
            if self.base == "proportional"
            else uniform_rates(self.num_tasks)
        )
        self._loss_history: list[deque[float]] = [
            deque(maxlen=2 * self.window) for _ in range(self.num_tasks)
        ]
        self._last_observed_step: int | None = None

    def loss_ratios(self) -> np.ndarray:
        """r_k for every task, from the losses observed so far."""
        ratios = np.ones(self.num_tasks, dtype=np.float64)
        for task, history in enumerate(self._loss_history):
            if len(history) < 2 * self.window:
                continue
            losses = np.fromiter(history, dtype=np.float64, count=len(history))
            earlier = losses[: self.window].mean()
            if earlier > 0:
                ratios[task] = losses[self.window :].mean() / earlier
        return ratios

    def weights(self, step: int) -> np.ndarray:
        self._check_step(step)
        return loss_ratio_rates(self._base_rates, self.loss_ratios(), self.temperature)

    def observe_losses(self, step: int, task_losses: Mapping[int, float]) -> None:
        step = self._check_step(step)
        if self._last_observed_step is not None and step <= self._last_observed_step:
            # Observing a step twice (e.g. replaying it after resume) would skew the ratios.
            raise ValueError(
                f"sampler 'dwa': losses for step {step} arrive after step "
                f"{self._last_observed_step}; steps must increase"
            )
        checked = {}
        for task, loss in task_losses.items():
            if not 0 <= int(task) < self.num_tasks:
                raise ValueError(
                    f"sampler 'dwa': task index {task} is outside 0..{self.num_tasks - 1}"
                )
            if not (math.isfinite(loss) and loss >= 0):
                raise ValueError(f"sampler 'dwa': loss of task {task} at step {step} is {loss!r}")
            checked[int(task)] = float(loss)
        for task, loss in checked.items():
            self._loss_history[task].append(loss)
        self._last_observed_step = step

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            window=self.window,
            last_observed_step=self._last_observed_step,
            loss_history=[list(history) for history in self._loss_history],
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("window") != self.window:
            raise ConfigError(
                f"checkpointed 'dwa' state has window {state.get('window')!r}, "
                f"but the config sets window {self.window}"
            )
        self._loss_history = [
            deque((float(loss) for loss in history), maxlen=2 * self.window)
            for history in state["loss_history"]
        ]
        last_step = state.get("last_observed_step")
        self._last_observed_step = None if last_step is None else int(last_step)
