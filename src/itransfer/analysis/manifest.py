"""``<run>/manifest.json``: the models a run evaluated and its sections, as the pipeline writes
it (``model_dump_json``) and the analysis reads it back (:func:`read_manifest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from itransfer.analysis.registry import Sections, SectionT, section_of
from itransfer.config.schema import StrictModel
from itransfer.errors import DataError
from itransfer.runs.compat import manifest_version, upgrade_model_info
from itransfer.runs.eval_plan import PRETRAINED

MANIFEST = "manifest.json"
# 1: manifests written before this field existed (same shape); 2: with ``version``; 3: models
# record their step budget (``ModelInfo.budget``, ``total_steps``; absent in 1 and 2); 4: the
# sampler's config is ``sampler_config`` (``sampler_spec`` before).
MANIFEST_VERSION = 4


class ModelInfo(StrictModel):
    """One model a run evaluated, and the settings its report shows."""

    kind: Literal["pretrained", "instruction_tuned"] = "instruction_tuned"
    name_or_path: str | None = None
    num_parameters: int | None = None  # the pre-trained model's; None when unknown
    vocab_size: int | None = None  # rows of the output layer: ln of it is the uniform-guess loss
    sampler: str | None = None
    sampler_config: dict[str, Any] | None = None
    data_limit: int | None = None
    mixing_every: int | None = None
    # What set the number of instruction-tuning steps (§3.2): "epochs" (train.epochs over the
    # run's own, limited data), "steps" (the unlimited run's step count) or "fixed"
    # (train.steps); None for the pre-trained model and in manifests before version 3.
    budget: Literal["epochs", "steps", "fixed"] | None = None
    total_steps: int | None = None  # instruction-tuning steps of the whole run
    final_step: int = 0
    trajectory_steps: tuple[int, ...] = ()
    stage: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _final_step_defaults_to_the_last_checkpoint(cls, data: Any) -> Any:
        return upgrade_model_info(data)


class RunManifest(StrictModel):
    """``<run>/manifest.json``: the models a run evaluated, its sections, timings, provenance.

    Every section is optional (an experiment reproduces only some of the paper) and its model
    labels are keys of ``models``. The pre-trained model doubles as step 0 of every trajectory.
    """

    version: int = 1  # absent in manifests written before the field existed
    experiment: str = ""
    title: str = ""
    source: str = ""
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    sections: Sections = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    store: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    versions: dict[str, Any] = Field(default_factory=dict)
    git: dict[str, Any] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)  # provenance.hardware(); {} before

    @model_validator(mode="before")
    @classmethod
    def _readable_version(cls, data: Any) -> Any:
        return manifest_version(data, MANIFEST_VERSION)

    def section(self, kind: type[SectionT]) -> SectionT | None:
        return section_of(self.sections, kind)

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

    def to_json(self) -> str:
        return self.model_dump_json(indent=1) + "\n"


def read_manifest(run_dir: Path) -> RunManifest:
    """Validate ``<run_dir>/manifest.json``; a bad one is a :class:`DataError` on one line."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise DataError(path, "no manifest.json: is this a run folder written by `itransfer run`?")
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'top level'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise DataError(path, f"malformed manifest ({problems})") from exc
