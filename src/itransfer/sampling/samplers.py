"""Samplers whose P(K) depends only on the task sizes and the step: one small class each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import ValidationInfo, field_validator

from itransfer.sampling.base import (
    FixedSampler,
    SamplerConfig,
    TaskSampler,
    number_at_least,
    register_sampler,
)
from itransfer.sampling.rates import (
    capped_rates,
    proportional_rates,
    temperature_rates,
    uniform_rates,
    unimax_allocation,
    unimax_rates,
)

logger = logging.getLogger(__name__)


class ProportionalConfig(SamplerConfig):
    name: Literal["proportional"] = "proportional"


@register_sampler("proportional", config=ProportionalConfig)
class ProportionalSampler(FixedSampler):
    """p_k ∝ n_k, the paper's default (Wang et al., 2022).

    Sizes are counted after the per-task data limit, so a limit of 10 makes this uniform (§3.2).
    """

    def _compute_weights(self) -> np.ndarray:
        return proportional_rates(self.task_sizes)


class UniformConfig(SamplerConfig):
    name: Literal["uniform"] = "uniform"


@register_sampler("uniform", config=UniformConfig)
class UniformSampler(FixedSampler):
    """p_k = 1/K (§4, "Uniform Sampling")."""

    def _compute_weights(self) -> np.ndarray:
        return uniform_rates(self.num_tasks)


class TemperatureConfig(SamplerConfig):
    name: Literal["temperature"] = "temperature"
    temperature: Annotated[float, number_at_least(0.0)] = 1.0


@register_sampler("temperature", config=TemperatureConfig)
class TemperatureSampler(FixedSampler):
    """p_k ∝ n_k^(1/T): T=1 is proportional, large T approaches uniform."""

    def __init__(
        self,
        config: TemperatureConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        super().__init__(config, task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.temperature = config.temperature

    def _compute_weights(self) -> np.ndarray:
        return temperature_rates(self.task_sizes, self.temperature)


class CappedProportionalConfig(SamplerConfig):
    name: Literal["examples_proportional_capped"] = "examples_proportional_capped"
    # No default: T5 tuned the cap per mixture, and no value suits every task collection.
    cap: Annotated[float, number_at_least(0.0)]


@register_sampler("examples_proportional_capped", config=CappedProportionalConfig)
class CappedProportionalSampler(FixedSampler):
    """p_k ∝ min(n_k, cap): T5's examples-proportional mixing (Raffel et al., 2020)."""

    def __init__(
        self,
        config: CappedProportionalConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        super().__init__(config, task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.cap = config.cap

    def _compute_weights(self) -> np.ndarray:
        return capped_rates(self.task_sizes, self.cap)


class UniMaxConfig(SamplerConfig):
    name: Literal["unimax"] = "unimax"
    max_epochs: Annotated[float, number_at_least(0.0)] = 1.0


@register_sampler("unimax", config=UniMaxConfig)
class UniMaxSampler(FixedSampler):
    """UniMax (Chung et al., 2023): as uniform as the budget allows, at most N epochs per task.

    The budget is the number of examples the run will draw, ``total_steps * batch_size``. Tasks
    are visited from smallest to largest; each gets ``min(remaining budget / remaining tasks,
    max_epochs * n_k)`` examples and p_k is proportional to that allocation. When the budget
    exceeds ``max_epochs * sum(n_k)`` every task hits its cap and this equals proportional.
    """

    def __init__(
        self,
        config: UniMaxConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        super().__init__(config, task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.max_epochs = config.max_epochs

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
        return unimax_rates(self.task_sizes, self.budget, self.max_epochs)


class ReverseAnnealingConfig(SamplerConfig):
    name: Literal["reverse_annealing"] = "reverse_annealing"
    # Declared before max_temperature, whose check reads it.
    start_temperature: Annotated[float, number_at_least(1.0, inclusive=True)] = 1.0
    max_temperature: Annotated[float, number_at_least(1.0, inclusive=True)] = 1000.0

    @field_validator("max_temperature")
    @classmethod
    def _not_below_start(cls, max_temperature: float, info: ValidationInfo) -> float:
        start = info.data.get("start_temperature")
        if start is not None and max_temperature < start:
            raise ValueError(f"must be >= start_temperature ({start:g})")
        return max_temperature


@register_sampler("reverse_annealing", config=ReverseAnnealingConfig)
class ReverseAnnealingSampler(TaskSampler):
    """Temperature sampling whose T rises linearly over training (§4, Appendix B).

    Inspired by Choi et al. (2023): start at ``start_temperature`` (1, i.e. proportional) and
    heat linearly to ``max_temperature`` (1000 in the paper) at ``total_steps``, so
    ``T(step) = T0 + (T_max - T0) * min(step / total_steps, 1)`` and ``p_k ∝ n_k^(1/T(step))``.
    Low-resource tasks are therefore sampled more as training goes on.
    """

    def __init__(
        self,
        config: ReverseAnnealingConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        super().__init__(config, task_sizes, total_steps=total_steps, batch_size=batch_size)
        self.start_temperature = config.start_temperature
        self.max_temperature = config.max_temperature

    def temperature(self, step: int) -> float:
        """T at ``step``; held at ``max_temperature`` past ``total_steps``."""
        progress = min(self._check_step(step) / self.total_steps, 1.0)
        return self.start_temperature + (self.max_temperature - self.start_temperature) * progress

    def weights(self, step: int) -> np.ndarray:
        return temperature_rates(self.task_sizes, self.temperature(step))
