"""The task-sampler interface, its registry, and :func:`build_sampler` for YAML configs.

A sampler turns training-set sizes (and, for adaptive samplers, observed per-task losses) into
P(K), the distribution the training loop draws each batch's task from. YAML names a sampler and
its parameters, e.g. ``sampler: {name: reverse_annealing, max_temperature: 1000}``.

As in PEFT (``register_peft_method(name=..., config_cls=..., model_cls=...)``), each sampler is
a pydantic config class registered together with its implementation, so the experiment config
validates every sampler parameter like any other key (:func:`sampler_config_union`).
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar, Union

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    ValidationError,
)

from itransfer.errors import ConfigError

SAMPLERS: dict[str, type[TaskSampler]] = {}
"""Every registered sampler class, by the name configs use."""

SamplerClass = TypeVar("SamplerClass", bound="type[TaskSampler]")


class SamplerConfig(BaseModel):
    """A sampler's parameters as YAML writes them: ``{name: <sampler>, <parameter>: <value>}``.

    Each sampler subclasses this with ``name: Literal["<its name>"]`` and one typed field per
    parameter, defaults included; the sampler reads its parameters from it. A parameter added
    after runs were keyed carries :class:`~itransfer.effect.AddedLater` with the value that
    reproduces them, so their stages and checkpoints are still found.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str

    @classmethod
    def registered_name(cls) -> str:
        """The ``name`` this config class stands for (its ``Literal`` default)."""
        default = cls.model_fields["name"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__qualname__}.name needs its sampler's name as default")
        return default


def register_sampler(
    name: str, *, config: type[SamplerConfig]
) -> Callable[[SamplerClass], SamplerClass]:
    """Class decorator: make a sampler buildable from ``config`` (or a mapping with its name)."""
    if config.registered_name() != name:
        raise ValueError(
            f"{config.__qualname__}.name defaults to {config.registered_name()!r}, "
            f"but the sampler registers as {name!r}"
        )

    def register(sampler_class: SamplerClass) -> SamplerClass:
        existing = SAMPLERS.get(name)
        # Re-importing the same module (e.g. importlib.reload) must not count as a clash.
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            sampler_class.__module__,
            sampler_class.__qualname__,
        ):
            raise ValueError(f"sampler name {name!r} is already used by {existing.__qualname__}")
        sampler_class.name = name
        sampler_class.config_class = config
        SAMPLERS[name] = sampler_class
        return sampler_class

    return register


def sampler_config_union() -> Any:
    """Type of a config field holding any registered sampler's config, chosen by ``name``.

    A pydantic discriminated union of the config classes, so an unknown or misspelt parameter,
    or a value of the wrong type, is reported at ``<field>.<parameter>`` like any other key.
    """
    known = ", ".join(sorted(SAMPLERS))
    members = tuple(
        Annotated[SAMPLERS[name].config_class, Tag(name)] for name in sorted(SAMPLERS)
    )
    return Annotated[
        Union[members],  # noqa: UP007 -- a union built at runtime from the registry
        Discriminator(
            _config_name,
            custom_error_type="unknown_sampler",
            custom_error_message=(
                f"expected a mapping {{name: <sampler>, <parameter>: <value>, ...}} "
                f"naming one of the known samplers: {known}"
            ),
        ),
    ]


def _config_name(config: Any) -> Any:
    name = config.get("name") if isinstance(config, Mapping) else getattr(config, "name", None)
    # Anything but a registered name falls through to the union's "unknown sampler" error.
    return name if isinstance(name, str) and name in SAMPLERS else None


class TaskSampler(ABC):
    """P(K) over training tasks, possibly changing with the optimizer step.

    ``task_sizes`` are training-set sizes after any per-task data cap, indexed like the
    training loop's task list. ``total_steps`` and ``batch_size`` describe the whole run, for
    samplers whose schedule or budget depends on it. ``config`` holds the sampler's parameters,
    an instance of the config class it was registered with.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[SamplerConfig]]

    def __init__(
        self,
        config: SamplerConfig,
        task_sizes: Sequence[int],
        *,
        total_steps: int,
        batch_size: int,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"sampler {self.name!r} takes a {self.config_class.__qualname__}, "
                f"got {type(config).__qualname__}"
            )
        self.config = config
        self.task_sizes = _check_task_sizes(self.name, task_sizes)
        self.total_steps = check_int(self.name, "total_steps", total_steps, minimum=1)
        self.batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)

    @property
    def num_tasks(self) -> int:
        return int(self.task_sizes.size)

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
    sampler: SamplerConfig | Mapping[str, Any],
    task_sizes: Sequence[int],
    *,
    total_steps: int,
    batch_size: int,
) -> TaskSampler:
    """Build the sampler a config names: a :class:`SamplerConfig` (``train.sampler``) or a
    mapping such as ``{"name": "temperature", "temperature": 2.0}``."""
    config = sampler if isinstance(sampler, SamplerConfig) else parse_sampler_config(sampler)
    sampler_class = SAMPLERS[config.name]
    return sampler_class(config, task_sizes, total_steps=total_steps, batch_size=batch_size)


def parse_sampler_config(raw: Mapping[str, Any]) -> SamplerConfig:
    """The typed config of a sampler given as a mapping; a ConfigError names sampler and key."""
    known = ", ".join(sorted(SAMPLERS))
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(
            f"a sampler config must be a mapping with a 'name' key, got {raw!r}; "
            f"known samplers: {known}"
        )
    name = raw["name"]
    sampler_class = SAMPLERS.get(name) if isinstance(name, str) else None
    if sampler_class is None:
        raise ConfigError(f"unknown sampler {name!r}; known samplers: {known}")
    config_class = sampler_class.config_class
    try:
        return config_class.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(_describe_error(name, config_class, error) for error in exc.errors())
        ) from exc


def _describe_error(name: str, config_class: type[SamplerConfig], error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return (
            f"sampler {name!r} has no parameter {key!r} (given {error['input']!r}); "
            f"its parameters are: {_describe_parameters(config_class)}"
        )
    if error["type"] == "missing":
        return (
            f"sampler {name!r} needs parameter {key!r}; "
            f"its parameters are: {_describe_parameters(config_class)}"
        )
    message = error["msg"].removeprefix("Value error, ")
    return f"sampler {name!r}: parameter {key!r} {message}, got {error['input']!r}"


def sampling_schedule(sampler: TaskSampler, steps: Sequence[int]) -> np.ndarray:
    """P(K) at each of ``steps``, shape [len(steps), K].

    For loss-adaptive samplers this is the distribution their current loss history gives at
    every step; it does not simulate how that history would evolve.
    """
    if len(steps) == 0:
        return np.empty((0, sampler.num_tasks), dtype=np.float64)
    return np.stack([sampler.weights(int(step)) for step in steps])


def number_at_least(minimum: float, *, inclusive: bool = False) -> BeforeValidator:
    """Pydantic check of a sampler parameter: a finite real number (not a bool, not text)
    above ``minimum``, or equal to it when ``inclusive``.

    Messages leave the value out; the config error (or :func:`parse_sampler_config`) adds it.
    """
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def check(value: Any) -> float:
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_number or not np.isfinite(value):
            # PyYAML reads `1e3` (no dot, no sign) as a string, a common surprise in sweeps.
            hint = " (YAML reads 1e3 as text; write 1000 or 1.0e+3)" if _numeric(value) else ""
            raise ValueError(f"must be a number {bound}{hint}")
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"must be {bound}")
        return float(value)

    return BeforeValidator(check)


def _numeric(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def integer_at_least(minimum: int) -> BeforeValidator:
    """Pydantic check of a sampler parameter: an integer (not a bool) ``>= minimum``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return int(value)

    return BeforeValidator(check)


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


def _describe_parameters(config_class: type[SamplerConfig]) -> str:
    described = [
        key if field.is_required() else f"{key}={field.default!r}"
        for key, field in config_class.model_fields.items()
        if key != "name"
    ]
    return ", ".join(described) if described else "(none)"
