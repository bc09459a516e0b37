"""Samplers whose P(K) depends only on the task sizes and the step: one small class each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import ValidationInfo, field_validator

from itransfer.effect import AddedLater
from itransfer.sampling.base import (
    FixedSampler,
    SamplerConfig,
    TaskSampler,
    number_at_least,
    register_sampler,
)
from itransfer.sampling.rates import (
    AnnealingSchedule,
    annealed_temperature,
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
    # How T moves from start to max (see ReverseAnnealingSampler). "linear" is the literal
    # reading of Appendix B and what runs did before this key existed: at that value the keys
    # leave it out, so runs keyed and checkpointed before it are still found.
    schedule: Annotated[AnnealingSchedule, AddedLater("linear")] = "linear"

    @field_validator("max_temperature")
    @classmethod
    def _not_below_start(cls, max_temperature: float, info: ValidationInfo) -> float:
        start = info.data.get("start_temperature")
        if start is not None and max_temperature < start:
            raise ValueError(f"must be >= start_temperature ({start:g})")
        return max_temperature


@register_sampler("reverse_annealing", config=ReverseAnnealingConfig)
class ReverseAnnealingSampler(TaskSampler):
    """Temperature sampling p_k ∝ n_k^(1/T(step)) whose T heats over training (§4, Appendix B).

    §4: Reverse Annealing, "inspired by Choi et al. (2023), ... initializes P(K) to the
    proportional distribution and gradually heats the temperature of the distribution during
    training, up to some max temperature T". Appendix B: "we begin with an initial temperature
    of 1 and linearly increase that temperature up to 1,000". T runs from ``start_temperature``
    (1: proportional) at step 0 to ``max_temperature`` at ``total_steps`` and holds there;
    ``schedule`` says how (:func:`~itransfer.sampling.rates.annealed_temperature`):

    - ``linear`` (default, the literal reading): T linear in the step. 1/T falls fastest at the
      start: heated to 1,000, T is 11 after 1% of the run, where a task of 5,000 examples
      is drawn only about 1.4 times as often as one of 140, so P(K) is near uniform for almost
      all of training;
    - ``inverse_linear``: 1/T linear in the step, so the exponent on n_k moves at a constant
      rate and P(K) stays near proportional for about half of the run;
    - ``log_linear``: log T linear in the step (geometric), between the two.

    §4 places RA-1000 between proportional and uniform sampling, which the linear reading
    makes hard to tell from uniform; the other two are alternatives to test that against.
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
        self.schedule = config.schedule

    def temperature(self, step: int) -> float:
        """T at ``step``; held at ``max_temperature`` past ``total_steps``."""
        return annealed_temperature(
            self._check_step(step),
            self.total_steps,
            start=self.start_temperature,
            end=self.max_temperature,
            schedule=self.schedule,
        )

    def weights(self, step: int) -> np.ndarray:
        return temperature_rates(self.task_sizes, self.temperature(step))
