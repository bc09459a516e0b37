"""The task-sampler interface, its registry, and :func:`build_sampler` for YAML specs.

A sampler turns training-set sizes (and, for adaptive samplers, observed per-task losses) into
P(K), the distribution the training loop draws each batch's task from. YAML names a sampler and
its parameters, e.g. ``sampler: {name: reverse_annealing, max_temperature: 1000}``.
"""

from __future__ import annotations

import inspect
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from itransfer.errors import ConfigError

SAMPLERS: dict[str, type[TaskSampler]] = {}
"""Every registered sampler class, by the name configs use."""

# Arguments every sampler receives from the training setup rather than from the YAML spec.
_SETUP_ARGUMENTS = frozenset({"self", "task_sizes", "total_steps", "batch_size"})

SamplerClass = TypeVar("SamplerClass", bound="type[TaskSampler]")


def register_sampler(name: str) -> Callable[[SamplerClass], SamplerClass]:
    """Class decorator: make a sampler buildable from a spec ``{"name": name, ...}``."""

    def register(sampler_class: SamplerClass) -> SamplerClass:
        existing = SAMPLERS.get(name)
        # Re-importing the same module (e.g. importlib.reload) must not count as a clash.
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            sampler_class.__module__,
            sampler_class.__qualname__,
        ):
            raise ValueError(f"sampler name {name!r} is already used by {existing.__qualname__}")
        sampler_class.name = name
        SAMPLERS[name] = sampler_class
        return sampler_class

    return register


class TaskSampler(ABC):
    """P(K) over training tasks, possibly changing with the optimizer step.

    ``task_sizes`` are training-set sizes after any per-task data cap, indexed like the
    training loop's task list. ``total_steps`` and ``batch_size`` describe the whole run, for
    samplers whose schedule or budget depends on it.
    """

    name: ClassVar[str]

    def __init__(
        self, task_sizes: Sequence[int], *, total_steps: int, batch_size: int, **params: Any
    ) -> None:
        if params:
            parameter, value = next(iter(params.items()))
            raise ConfigError(
                f"sampler {self.name!r} has no parameter {parameter!r} (given {value!r}); "
                f"its parameters are: {_describe_parameters(type(self))}"
            )
        self.task_sizes = _check_task_sizes(self.name, task_sizes)
        self.total_steps = check_int(self.name, "total_steps", total_steps, minimum=1)
        self.batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)

    @property
    def num_tasks(self) -> int:
        return int(self.task_sizes.size)

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The spec keys this sampler accepts besides ``name``."""
        signature = inspect.signature(cls.__init__)
        return tuple(
            parameter.name
            for parameter in signature.parameters.values()
            if parameter.name not in _SETUP_ARGUMENTS
            and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        )

    @abstractmethod
    def weights(self, step: int) -> np.ndarray:
        """P(K) at optimizer step ``step``: float64, shape [K], sums to 1."""

    def observe_losses(self, step: int, task_losses: Mapping[int, float]) -> None:
        """Record the mean loss of each task seen at ``step`` (already reduced across processes).

        Fixed samplers ignore losses; adaptive ones override this.
        """
        del step, task_losses

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; with :meth:`load_state_dict` it makes resume exact."""
        return {"sampler": self.name, "num_tasks": self.num_tasks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output, refusing state saved for another setup."""
        saved = (state.get("sampler"), state.get("num_tasks"))
        if saved != (self.name, self.num_tasks):
            raise ConfigError(
                f"checkpointed sampler state is for sampler {saved[0]!r} over {saved[1]} tasks, "
                f"but the config builds {self.name!r} over {self.num_tasks} tasks"
            )

    def _check_step(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"sampler {self.name!r}: step must be an integer >= 0, got {step!r}")
        return int(step)


class FixedSampler(TaskSampler):
    """A sampler whose P(K) depends only on the task sizes, computed once."""

    _fixed_weights: np.ndarray | None = None

    @abstractmethod
    def _compute_weights(self) -> np.ndarray:
        """P(K) from ``self.task_sizes`` and the sampler's parameters."""

    def weights(self, step: int) -> np.ndarray:
        self._check_step(step)
        if self._fixed_weights is None:
            self._fixed_weights = self._compute_weights()
        # A copy, so a caller that edits the array in place cannot change later draws.
        return self._fixed_weights.copy()


def build_sampler(
    spec: Mapping[str, Any], task_sizes: Sequence[int], *, total_steps: int, batch_size: int
) -> TaskSampler:
    """Build the sampler a config names, e.g. ``{"name": "temperature", "temperature": 2.0}``."""
    known = ", ".join(sorted(SAMPLERS))
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"a sampler spec must be a mapping with a 'name' key, got {spec!r}; "
            f"known samplers: {known}"
        )
    name = spec["name"]
    sampler_class = SAMPLERS.get(name) if isinstance(name, str) else None
    if sampler_class is None:
        raise ConfigError(f"unknown sampler {name!r}; known samplers: {known}")
    params = {key: value for key, value in spec.items() if key != "name"}
    accepted = sampler_class.parameter_names()
    for key, value in params.items():
        if key not in accepted:
            raise ConfigError(
                f"sampler {name!r} has no parameter {key!r} (given {value!r}); "
                f"its parameters are: {_describe_parameters(sampler_class)}"
            )
    signature = inspect.signature(sampler_class.__init__)
    for key in accepted:
        if signature.parameters[key].default is inspect.Parameter.empty and key not in params:
            raise ConfigError(
                f"sampler {name!r} needs parameter {key!r}; "
                f"its parameters are: {_describe_parameters(sampler_class)}"
            )
    return sampler_class(task_sizes, total_steps=total_steps, batch_size=batch_size, **params)


def sampling_schedule(sampler: TaskSampler, steps: Sequence[int]) -> np.ndarray:
    """P(K) at each of ``steps``, shape [len(steps), K].

    For loss-adaptive samplers this is the distribution their current loss history gives at
    every step; it does not simulate how that history would evolve.
    """
    if len(steps) == 0:
        return np.empty((0, sampler.num_tasks), dtype=np.float64)
    return np.stack([sampler.weights(int(step)) for step in steps])


def check_number(
    sampler: str, parameter: str, value: Any, *, minimum: float, inclusive: bool = False
) -> float:
    """``value`` as a float, or a ConfigError naming the sampler, parameter and value."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not np.isfinite(value):
        # PyYAML reads `1e3` (no dot, no sign) as a string, a common surprise in sweeps.
        hint = " (YAML reads 1e3 as text; write 1000 or 1.0e+3)" if isinstance(value, str) else ""
        raise ConfigError(
            f"sampler {sampler!r}: parameter {parameter!r} must be a number {bound}, "
            f"got {value!r}{hint}"
        )
    if value < minimum or (value == minimum and not inclusive):
        raise ConfigError(
            f"sampler {sampler!r}: parameter {parameter!r} must be {bound}, got {value!r}"
        )
    return float(value)


def check_int(sampler: str, parameter: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int ``>= minimum``, or a ConfigError naming sampler, parameter and value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(
            f"sampler {sampler!r}: {parameter!r} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _check_task_sizes(sampler: str, task_sizes: Sequence[int]) -> np.ndarray:
    if len(task_sizes) == 0:
        raise ConfigError(f"sampler {sampler!r}: the task list is empty; nothing to sample")
    for index, size in enumerate(task_sizes):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
            raise ConfigError(
                f"sampler {sampler!r}: task sizes must be positive integers, "
                f"but task {index} has size {size!r}"
            )
    return np.asarray(task_sizes, dtype=np.int64)


def _describe_parameters(sampler_class: type[TaskSampler]) -> str:
    signature = inspect.signature(sampler_class.__init__)
    described = []
    for name in sampler_class.parameter_names():
        default = signature.parameters[name].default
        described.append(name if default is inspect.Parameter.empty else f"{name}={default!r}")
    return ", ".join(described) if described else "(none)"
