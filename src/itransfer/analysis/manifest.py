"""A typed view of ``<run>/manifest.json``: the models a run evaluated and its paper sections.

The pipeline writes the manifest; analysis only reads it (with the results table). Every
section is optional — an experiment reproduces only some of the paper — and a section's model
labels are keys of ``models``. The pre-trained model doubles as step 0 of every trajectory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itransfer.errors import DataError

MANIFEST = "manifest.json"
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class ModelInfo:
    label: str
    kind: str  # pretrained | instruction_tuned
    final_step: int = 0
    trajectory_steps: tuple[int, ...] = ()
    sampler: str | None = None
    data_limit: int | None = None
    mixing_every: int | None = None


@dataclass(frozen=True)
class TransferSpec:
    """§3.1: pre-trained vs instruction-tuned transfer, and FT-vs-ICL per task."""

    pretrained: str
    instruction_tuned: str
    correlation_shots: int = 5
    correlation_context: str = "none"


@dataclass(frozen=True)
class DataLimitsSpec:
    """§3.2: models by per-task data limit; ``delta`` = (before, after) for the change scatter."""

    models: dict[str, str]
    delta: tuple[str, str] | None = None
    shots: int = 5


@dataclass(frozen=True)
class SamplersSpec:
    """§4: models by task sampler (the names are display labels, e.g. "proportional")."""

    models: dict[str, str]


@dataclass(frozen=True)
class TrajectorySpec:
    """§5.1: one model's checkpoints; the phases split at ``phase_split_step``."""

    model: str
    phase_split_step: int
    shots: int = 5


@dataclass(frozen=True)
class MixingSpec:
    """§5.2: trajectories with and without unsupervised data mixed in."""

    with_: str
    without: str
    shots: int = 5


@dataclass(frozen=True)
class RunManifest:
    experiment: str
    title: str
    models: dict[str, ModelInfo]
    transfer: TransferSpec | None = None
    data_limits: DataLimitsSpec | None = None
    samplers: SamplersSpec | None = None
    trajectory: TrajectorySpec | None = None
    mixing: MixingSpec | None = None
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> str:
        """The label of the pre-trained model (step 0 of every trajectory)."""
        for label, info in self.models.items():
            if info.kind == "pretrained":
                return label
        return PRETRAINED

    def final_step(self, label: str) -> int | None:
        """The step a section evaluates ``label`` at; None when the manifest does not say."""
        info = self.models.get(label)
        if info is None:
            return None
        return 0 if info.kind == "pretrained" else info.final_step

    def trajectory_of(self, label: str) -> tuple[int, ...]:
        """Steps of ``label``'s trajectory, starting at 0 (the pre-trained model)."""
        info = self.models.get(label)
        steps = set(info.trajectory_steps) if info else set()
        if info is not None and info.final_step:
            steps.add(info.final_step)
        return tuple(sorted({0, *steps}))


def read_manifest(run_dir: Path) -> RunManifest:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise DataError(path, "no manifest.json: is this a run folder written by `itransfer run`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})", line=exc.lineno) from exc
    try:
        return parse_manifest(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"malformed manifest ({exc})") from exc


def parse_manifest(data: Mapping[str, Any]) -> RunManifest:
    models = {label: _model_info(label, spec) for label, spec in data.get("models", {}).items()}
    sections = data.get("sections") or {}
    manifest = RunManifest(
        experiment=str(data.get("experiment", "")),
        title=str(data.get("title", "")),
        models=models,
        transfer=_transfer(sections.get("transfer")),
        data_limits=_data_limits(sections.get("data_limits")),
        samplers=_samplers(sections.get("samplers")),
        trajectory=_trajectory(sections.get("trajectory")),
        mixing=_mixing(sections.get("mixing")),
        timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
        config=dict(data.get("config") or {}),
        versions=dict(data.get("versions") or {}),
        git=dict(data.get("git") or {}),
    )
    return manifest


def _model_info(label: str, spec: Mapping[str, Any]) -> ModelInfo:
    steps = tuple(int(step) for step in spec.get("trajectory_steps") or ())
    final = spec.get("final_step")
    return ModelInfo(
        label=label,
        kind=str(spec.get("kind", "instruction_tuned")),
        final_step=int(final) if final is not None else (max(steps) if steps else 0),
        trajectory_steps=steps,
        sampler=spec.get("sampler"),
        data_limit=spec.get("data_limit"),
        mixing_every=spec.get("mixing_every"),
    )


def _transfer(spec: Mapping[str, Any] | None) -> TransferSpec | None:
    if not spec:
        return None
    return TransferSpec(
        pretrained=str(spec.get("pretrained", PRETRAINED)),
        instruction_tuned=str(spec["instruction_tuned"]),
        correlation_shots=int(spec.get("correlation_shots", 5)),
        correlation_context=str(spec.get("correlation_context", "none")),
    )


def _data_limits(spec: Mapping[str, Any] | None) -> DataLimitsSpec | None:
    if not spec:
        return None
    delta = spec.get("delta")
    if delta is not None and len(delta) != 2:
        raise ValueError(f"sections.data_limits.delta needs two model labels, got {delta!r}")
    return DataLimitsSpec(
        models={str(limit): str(label) for limit, label in spec["models"].items()},
        delta=(str(delta[0]), str(delta[1])) if delta else None,
        shots=int(spec.get("shots", 5)),
    )


def _samplers(spec: Mapping[str, Any] | None) -> SamplersSpec | None:
    if not spec:
        return None
    return SamplersSpec(models={str(name): str(label) for name, label in spec["models"].items()})


def _trajectory(spec: Mapping[str, Any] | None) -> TrajectorySpec | None:
    if not spec:
        return None
    return TrajectorySpec(model=str(spec["model"]), phase_split_step=int(spec["phase_split_step"]),
                          shots=int(spec.get("shots", 5)))


def _mixing(spec: Mapping[str, Any] | None) -> MixingSpec | None:
    if not spec:
        return None
    # The pipeline dumps pydantic models by alias, so the key is "with"; accept "with_" too.
    with_label = spec.get("with", spec.get("with_"))
    if with_label is None:
        raise KeyError("sections.mixing.with")
    return MixingSpec(with_=str(with_label), without=str(spec["without"]),
                      shots=int(spec.get("shots", 5)))
