"""Samplers whose P(K) depends only on the task sizes and the step: one small class each."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from itransfer.sampling.base import FixedSampler, TaskSampler, check_number, register_sampler
from itransfer.sampling.rates import (
    capped_rates,
    proportional_rates,
    temperature_rates,
    uniform_rates,
    unimax_allocation,
)

logger = logging.getLogger(__name__)


@register_sampler("proportional")
class ProportionalSampler(FixedSampler):
    """p_k ∝ n_k, the paper's default (Wang et al., 2022).

    Sizes are counted after the per-task data limit, so a limit of 10 makes this uniform (§3.2).
    """

    def _compute_weights(self) -> np.ndarray:
        return proportional_rates(self.task_sizes)


@register_sampler("uniform")
class UniformSampler(FixedSampler):
    """p_k = 1/K (§4, "Uniform Sampling")."""

    def _compute_weights(self) -> np.ndarray:
        return uniform_rates(self.num_tasks)


@register_sampler("temperature")
class TemperatureSampler(FixedSampler):
    """p_k ∝ n_k^(1/T): T=1 is proportional, large T approaches uniform."""

    def __init__(
        self,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.temperature = check_number(self.name, "temperature", temperature, minimum=0.0)

    def _compute_weights(self) -> np.ndarray:
        return temperature_rates(self.task_sizes, self.temperature)


@register_sampler("examples_proportional_capped")
class CappedProportionalSampler(FixedSampler):
    """p_k ∝ min(n_k, cap): T5's examples-proportional mixing (Raffel et al., 2020).

    ``cap`` has no default: T5 tuned it per mixture, and no value suits every task collection.
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
        cap: float,
    ) -> None:
        super().__init__(task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.cap = check_number(self.name, "cap", cap, minimum=0.0)

    def _compute_weights(self) -> np.ndarray:
        return capped_rates(self.task_sizes, self.cap)


@register_sampler("unimax")
class UniMaxSampler(FixedSampler):
    """UniMax (Chung et al., 2023): as uniform as the budget allows, at most N epochs per task.

    The budget is the number of examples the run will draw, ``total_steps * batch_size``. Tasks
    are visited from smallest to largest; each gets ``min(remaining budget / remaining tasks,
    max_epochs * n_k)`` examples and p_k is proportional to that allocation. When the budget
    exceeds ``max_epochs * sum(n_k)`` every task hits its cap and this equals proportional.
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
        max_epochs: float = 1.0,
    ) -> None:
        super().__init__(task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.max_epochs = check_number(self.name, "max_epochs", max_epochs, minimum=0.0)

    @property
    def budget(self) -> int:
        return self.total_steps * self.batch_size

    def _compute_weights(self) -> np.ndarray:
        allocation = unimax_allocation(self.task_sizes, self.budget, self.max_epochs)
        capped_tasks = int(np.sum(np.isclose(allocation, self.max_epochs * self.task_sizes)))
        # Worth a log line: with every task capped, UniMax silently becomes proportional.
        logger.info(
            "unimax: budget of %d examples caps %d of %d tasks at %g epochs",
            self.budget,
            capped_tasks,
            self.num_tasks,
            self.max_epochs,
        )
        return allocation / allocation.sum()


@register_sampler("reverse_annealing")
class ReverseAnnealingSampler(TaskSampler):
    """Temperature sampling whose T rises linearly over training (§4, Appendix B).

    Inspired by Choi et al. (2023): start at ``start_temperature`` (1, i.e. proportional) and
    heat linearly to ``max_temperature`` (1000 in the paper) at ``total_steps``, so
    ``T(step) = T0 + (T_max - T0) * min(step / total_steps, 1)`` and ``p_k ∝ n_k^(1/T(step))``.
    Low-resource tasks are therefore sampled more as training goes on.
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
        max_temperature: float = 1000.0,
        start_temperature: float = 1.0,
    ) -> None:
        super().__init__(task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.start_temperature = check_number(
            self.name, "start_temperature", start_temperature, minimum=1.0, inclusive=True
        )
        self.max_temperature = check_number(
            self.name,
            "max_temperature",
            max_temperature,
            minimum=self.start_temperature,
            inclusive=True,
        )

    def temperature(self, step: int) -> float:
        """T at ``step``; held at ``max_temperature`` past ``total_steps``."""
        progress = min(self._check_step(step) / self.total_steps, 1.0)
        return self.start_temperature + (self.max_temperature - self.start_temperature) * progress

    def weights(self, step: int) -> np.ndarray:
        return temperature_rates(self.task_sizes, self.temperature(step))
