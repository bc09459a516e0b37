"""The paper sections an experiment reproduces, what each needs measured, and the run manifest.

One schema serves both ends of a run: the experiment YAML's ``sections:`` are validated into the
section classes below, :func:`itransfer.pipeline.plan_evaluations` asks each section what it
needs measured, the pipeline writes ``<run>/manifest.json`` as a :class:`RunManifest`
(``model_dump_json``) and the analysis reads it back with :func:`read_manifest`
(``model_validate_json``). This module imports neither torch nor pandas, so the analysis side
stays light.

Adding a paper section
    Write one subclass of :class:`Section` here, decorated with ``@register_section("<yaml
    key>")``: its fields are the YAML keys of ``sections.<yaml key>`` (validated like every
    other config key), :meth:`Section.model_labels` lists the model labels it refers to (checked
    against the experiment's variants), :meth:`Section.needs` returns the evaluations it wants
    per model (merged with every other section's by :class:`EvalPlan`), and the class
    variables give its report heading (``title``), the report figures it shows (``figures``),
    the evaluation task groups whose rows its analysis reads (``task_groups``: the unseen tasks
    unless it says otherwise) and its analysis (``analysis = "module:Class"``). That class, in
    ``itransfer.analysis``, computes the section's tables from the results table (``compute``)
    and renders them (``tables_html``); a section's findings (``analysis/paper.py`` and its
    evaluator in ``analysis/findings.py``) and figures (``analysis/figures.py``) sit beside the
    others. The pipeline, the manifest and the report need no edit.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from itransfer.compat import manifest_version, upgrade_model_info
from itransfer.config import EVALUATION_TASK_GROUPS, ContextConfig, EvalConfig, StrictModel
from itransfer.errors import DataError

PRETRAINED = "pretrained"  # the base model before instruction tuning; step 0 of trajectories
MANIFEST = "manifest.json"
# 1: manifests written before this field existed (same shape); 2: with ``version``; 3: models
# record their step budget (``ModelInfo.budget``, ``total_steps``; absent in 1 and 2).
MANIFEST_VERSION = 3


# --- what to measure -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPlan:
    """What to measure on one checkpoint; ``a | b`` measures everything either asks for.

    ``task_groups`` are evaluation groups measured on top of the config's ``eval.task_groups``
    (every measurement of the plan covers their tasks too).
    """

    icl: bool = False
    seen: bool = False
    shots: frozenset[int] = frozenset()
    contexts: frozenset[str] = frozenset()
    task_groups: frozenset[str] = frozenset()

    def merge(self, other: EvalPlan) -> EvalPlan:
        return EvalPlan(icl=self.icl or other.icl, seen=self.seen or other.seen,
                        shots=self.shots | other.shots, contexts=self.contexts | other.contexts,
                        task_groups=self.task_groups | other.task_groups)

    __or__ = merge


When = Literal["final", "trajectory"]


@dataclass(frozen=True)
class Need:
    """A section's request: measure ``plan`` on ``model`` at its final step or every step."""

    model: str
    when: When
    plan: EvalPlan = field(default_factory=EvalPlan)


def _transfer_plan(shots: Iterable[int], contexts: Iterable[str] = ("none",)) -> EvalPlan:
    return EvalPlan(icl=True, shots=frozenset(shots), contexts=frozenset(contexts))


# The control of the task-difficulty confound (analysis.correlations.zero_shot_difficulty):
# the pre-trained model's test loss at k = 0 with no context, one forward pass per test item.
DIFFICULTY_PLAN = EvalPlan(shots=frozenset({0}), contexts=frozenset({"none"}))


# --- sections ------------------------------------------------------------------------------


class Section(StrictModel):
    """One section of the paper: its settings (the fields), models and measurements."""

    key: ClassVar[str] = ""  # the YAML key under ``sections:``, set by register_section
    title: ClassVar[str] = ""  # the report's heading
    figures: ClassVar[tuple[str, ...]] = ()  # report figures shown under the heading
    analysis: ClassVar[str] = ""  # "module:Class" of its analysis in itransfer.analysis
    # The evaluation groups whose rows the analysis is given (seen-task rows always are): the
    # paper's §3-§5 measure transfer to unseen tasks, so evaluating more groups for another
    # section must not move their numbers.
    task_groups: ClassVar[tuple[str, ...]] = ("unseen",)

    @abstractmethod
    def model_labels(self) -> list[str]:
        """Every model label this section refers to."""

    @abstractmethod
    def needs(self, eval_config: EvalConfig) -> list[Need]:
        """The evaluations this section's analysis reads (``eval_config``: the base's)."""


SECTION_TYPES: dict[str, type[Section]] = {}
SectionT = TypeVar("SectionT", bound=Section)


def register_section(key: str) -> Callable[[type[SectionT]], type[SectionT]]:
    """Make ``sections.<key>`` of an experiment YAML (and of a manifest) validate as the class."""

    def register(section_cls: type[SectionT]) -> type[SectionT]:
        if key in SECTION_TYPES:
            raise ValueError(f"section '{key}' is registered twice")
        if not section_cls.title or ":" not in section_cls.analysis:
            raise ValueError(f"section '{key}' needs a title and an analysis ('module:Class')")
        section_cls.key = key
        SECTION_TYPES[key] = section_cls
        return section_cls

    return register


@register_section("transfer")
class TransferSection(Section):
    """§3.1: pre-trained vs instruction-tuned transfer, and FT-vs-ICL per task."""

    title = "§3.1 Instruction tuning harms transfer; transfer correlates with ICL"
    figures = ("Figure 1 (left)", "Figure 1 (right)")
    analysis = "itransfer.analysis.sections:TransferAnalysis"

    pretrained: str = PRETRAINED
    instruction_tuned: str
    correlation_shots: int = 5
    correlation_context: str = "none"

    def model_labels(self) -> list[str]:
        return [self.pretrained, self.instruction_tuned]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = _transfer_plan(eval_config.shots, eval_config.transfer_contexts)
        return [*(Need(label, "final", plan) for label in self.model_labels()),
                Need(self.pretrained, "final", DIFFICULTY_PLAN)]


@register_section("data_limits")
class DataLimitsSection(Section):
    """§3.2: models by per-task data limit; ``delta`` = (before, after) for the change scatter."""

    title = "§3.2 Less data per task improves transfer and ICL"
    figures = ("Figure 2 (left)", "Figure 2 (right)")
    analysis = "itransfer.analysis.sections:DataLimitsAnalysis"

    models: dict[str, str]  # limit (as text) → variant label
    delta: tuple[str, str]  # the two variants whose per-task changes are correlated
    shots: int = 5

    def model_labels(self) -> list[str]:
        return [*self.models.values(), *self.delta]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = _transfer_plan({self.shots})
        return [*(Need(label, "final", plan) for label in dict.fromkeys(self.model_labels())),
                Need(PRETRAINED, "final", DIFFICULTY_PLAN)]


@register_section("samplers")
class SamplersSection(Section):
    """§4: models by task sampler (the names are display labels, e.g. "proportional")."""

    title = "§4 Multi-task generalization vs ICL (task samplers)"
    figures = ("Figure 3 (left)", "Figure 3 (centre, right)")
    analysis = "itransfer.analysis.sections:SamplersAnalysis"

    models: dict[str, str]  # sampler name → variant label
    # §4: "We sweep over T = 10^{2,3,4,5} and report the two highest performing methods based
    # on seen task validation data": how many reverse-annealing runs Figure 3 keeps.
    keep_reverse_annealing: int = Field(default=2, ge=1)

    def model_labels(self) -> list[str]:
        return list(self.models.values())

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = EvalPlan(icl=True, seen=True)
        return [Need(label, "final", plan) for label in self.model_labels()]


@register_section("trajectory")
class TrajectorySection(Section):
    """§5.1: one model's checkpoints; the phases split at ``phase_split_step``."""

    title = "§5.1 The trajectory of ICL and forgetting"
    figures = ("Figure 4 (left)", "Figure 4 (centre, right)")
    analysis = "itransfer.analysis.sections:TrajectoryAnalysis"

    model: str
    phase_split_step: int = Field(ge=1)
    shots: int = 5

    def model_labels(self) -> list[str]:
        return [self.model]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return _trajectory_needs(self.model_labels(), self.shots)


@register_section("mixing")
class MixingSection(Section):
    """§5.2: trajectories with and without unsupervised data mixed in."""

    title = "§5.2 Continual training on unsupervised data"
    figures = ()  # drawn into Figure 4 (left) with the trajectory
    analysis = "itransfer.analysis.sections:MixingAnalysis"

    with_: str = Field(alias="with")
    without: str
    shots: int = 5

    # The YAML key is "with" (a Python keyword); "with_" is accepted too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    def model_labels(self) -> list[str]:
        return [self.with_, self.without]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return _trajectory_needs(self.model_labels(), self.shots)


@register_section("heldout_groups")
class HeldoutGroupsSection(Section):
    """§2.4 and Appendix A: every evaluation group of Table 2's setup beside ``unseen``.

    The paper evaluates on unseen NLU tasks and names three more groups it never trains on
    (synthetic unseen tasks, tasks of held-out domains and of adversarial sources) without
    reporting them; this section measures the named models on each ``groups`` entry (added to
    their evaluations whatever ``eval.task_groups`` says) and tabulates them side by side.
    """

    title = "Evaluation groups: unseen, synthetic, held-out domains and adversarial sources"
    figures = ()
    analysis = "itransfer.analysis.sections:HeldoutGroupsAnalysis"
    task_groups = EVALUATION_TASK_GROUPS

    models: dict[str, str]  # display name → variant label, e.g. pre-trained, instruction-tuned
    groups: list[str] = Field(default_factory=lambda: list(EVALUATION_TASK_GROUPS), min_length=1)
    shots: int = Field(default=5, ge=0)  # the k of the k-shot fine-tuning loss shown
    context: str = "none"  # the fine-tuning context of that loss

    @model_validator(mode="after")
    def _known_groups_and_context(self) -> HeldoutGroupsSection:
        unknown = [group for group in self.groups if group not in EVALUATION_TASK_GROUPS]
        if unknown:
            # Rows record a task's own group, so the heldout_generalization union is not one.
            raise ValueError(f"groups: unknown {unknown}; known: {list(EVALUATION_TASK_GROUPS)}")
        ContextConfig._known_context(self.context)
        return self

    def model_labels(self) -> list[str]:
        return list(self.models.values())

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = EvalPlan(icl=True, shots=frozenset({self.shots}),
                        contexts=frozenset({self.context}), task_groups=frozenset(self.groups))
        return [Need(label, "final", plan) for label in dict.fromkeys(self.model_labels())]


def _trajectory_needs(labels: list[str], shots: int) -> list[Need]:
    """Every checkpoint of each model, and the pre-trained model as their step 0."""
    plan = _transfer_plan({shots})
    return [*(Need(label, "trajectory", plan) for label in labels),
            Need(PRETRAINED, "final", plan | DIFFICULTY_PLAN)]


def _validate_sections(raw: Any) -> dict[str, Section]:
    """``sections:`` → section objects in registry order; errors keep the section's key."""
    # Already validated: the pipeline hands the experiment's sections on to the manifest.
    if isinstance(raw, Mapping) and all(isinstance(value, Section) for value in raw.values()):
        return dict(raw)
    if not isinstance(raw, Mapping):
        raise PydanticCustomError("dict_type", "Input should be a mapping of sections")
    parsed: dict[str, Section] = {}
    errors: list[Any] = []
    for key, value in raw.items():
        section_cls = SECTION_TYPES.get(key)
        if section_cls is None:
            errors.append({"type": PydanticCustomError(
                "unknown_section", "unknown section; known: {known}",
                {"known": ", ".join(SECTION_TYPES)}), "loc": (key,), "input": value})
        elif value is not None:  # ``transfer: null`` leaves the section out, as if absent
            try:
                parsed[key] = section_cls.model_validate(value)
            except ValidationError as exc:
                errors += [{"type": error["type"], "loc": (key, *error["loc"]),
                            "input": error["input"], **({"ctx": error["ctx"]}
                                                        if "ctx" in error else {})}
                           for error in exc.errors()]
    if errors:
        raise ValidationError.from_exception_data("sections", errors)
    return {key: parsed[key] for key in SECTION_TYPES if key in parsed}


Sections = Annotated[dict[str, SerializeAsAny[Section]], BeforeValidator(_validate_sections)]


def section_of(sections: Mapping[str, Section], kind: type[SectionT]) -> SectionT | None:
    """The section of class ``kind`` in ``sections``, None when the run does not have it."""
    found = sections.get(kind.key)
    return found if isinstance(found, kind) else None


# --- the run manifest ----------------------------------------------------------------------


class ModelInfo(StrictModel):
    """One model a run evaluated, and the settings its report shows."""

    kind: Literal["pretrained", "instruction_tuned"] = "instruction_tuned"
    name_or_path: str | None = None
    num_parameters: int | None = None  # the pre-trained model's; None when unknown
    vocab_size: int | None = None  # rows of the output layer: ln of it is the uniform-guess loss
    sampler: str | None = None
    sampler_spec: dict[str, Any] | None = None
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
