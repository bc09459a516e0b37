"""How a config setting bears on a run's results: markers for the config fields.

Each setting is marked once, where it is declared::

    log_every: Annotated[int, NoEffect] = Field(default=10, ge=1)

and :mod:`itransfer.runs.identity` derives every identity key (training and evaluation stages, the
results' ``config_hash``, the resume check) from the markers. A field without a marker changes
results: it is in every key whose section holds it. This module knows nothing of the config, so
the config classes (and the samplers' config classes) can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Effect:
    """What changing a setting does to a run, as identity keys and the resume check see it."""

    name: str
    in_stage_keys: bool  # stage keys of `itransfer run` and the results' ``config_hash``
    in_resume_check: bool  # whether a checkpoint may be resumed under another value


NoEffect = Effect("no effect", in_stage_keys=False, in_resume_check=False)
"""How a run is logged or how fast it computes, never its numbers (evaluation batches and
passes regroup the same computations): changing it reuses finished stages and may resume."""

CheckpointSchedule = Effect("checkpoint schedule", in_stage_keys=True, in_resume_check=False)
"""Which trajectory checkpoints a run writes and keeps, not the weights it reaches: a run may
resume under another value, but a training stage's trajectory is made of them, so stage keys
keep it."""


@dataclass(frozen=True)
class AddedLater:
    """A setting added after runs were keyed: at ``value``, what every run did before it
    existed, keys leave it out, so the stages, caches and checkpoints of those runs are still
    found, while any other value makes a different run."""

    value: Any

    def omitted(self, value: Any) -> bool:
        # The type too: a 0 is not the False that older runs implied.
        return type(value) is type(self.value) and value == self.value


@dataclass(frozen=True)
class KeyedOnlyWhen:
    """A setting that changes the run only where ``condition`` holds on the whole dumped config
    (e.g. a step budget that decides nothing once the steps are given); elsewhere keys leave it
    out, so the runs it cannot tell apart share their stages."""

    condition: Callable[[Mapping[str, Any]], bool]


def marker(field: FieldInfo, kind: type[Any]) -> Any:
    """The field's marker of type ``kind`` (an :class:`Effect`, :class:`AddedLater`, …), or
    None."""
    return next((item for item in field.metadata if isinstance(item, kind)), None)
