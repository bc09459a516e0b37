"""The paper sections an experiment reproduces, what each needs measured, and the run manifest.

One schema serves both ends of a run: the experiment YAML's ``sections:`` are validated into the
section classes registered here, :func:`itransfer.pipeline.plan_evaluations` asks each section
what it needs measured, the pipeline writes ``<run>/manifest.json`` as a :class:`RunManifest`
(``model_dump_json``) and the analysis reads it back with :func:`read_manifest`
(``model_validate_json``). This module imports neither torch nor pandas; the paper's sections
themselves live beside their analyses and are loaded on first use (:func:`section_types`).

Adding a paper section
    One new module in ``itransfer/analysis/sections/`` (``<yaml key>.py``, found by listing the
    folder) plus the experiment YAML that uses it; the pipeline, the manifest and the report
    need no edit. The module holds a subclass of :class:`Section` decorated with
    ``@register_section("<yaml key>")``: its fields are the YAML keys of ``sections.<yaml
    key>`` (validated like every other config key), :meth:`Section.model_labels` lists the model
    labels it refers to (checked against the experiment's variants), :meth:`Section.needs`
    returns the evaluations it wants per model (merged with every other section's by
    :class:`EvalPlan`), and its class variables name the rest of the module: its report heading
    (``title``) and place (``paper_section``), its analysis class (``analysis``: ``compute``
    turns the results table into the section's tables, ``tables_html`` renders them), its
    figures (``plots``, :class:`itransfer.analysis.plotting.PaperFigure`), the paper's findings
    it judges (``findings``, :class:`itransfer.analysis.verdicts.Finding`, each with the test
    that gives its verdict) and the evaluation task groups whose rows its analysis reads
    (``task_groups``: the unseen tasks unless it says otherwise). A figure or finding that
    clashes with another or cites a figure nobody draws fails at import.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from itransfer.compat import manifest_version, upgrade_model_info
from itransfer.config import EvalConfig, StrictModel
from itransfer.errors import DataError

if TYPE_CHECKING:  # the analysis side imports this module, not the other way round
    from itransfer.analysis.plotting import PaperFigure
    from itransfer.analysis.run import SectionAnalysis
    from itransfer.analysis.verdicts import Finding

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


def transfer_plan(shots: Iterable[int], contexts: Iterable[str] = ("none",)) -> EvalPlan:
    """ICL and k-shot fine-tuning at each of ``shots`` in each fine-tuning context."""
    return EvalPlan(icl=True, shots=frozenset(shots), contexts=frozenset(contexts))


# The control of the task-difficulty confound (analysis.correlations.zero_shot_difficulty):
# the pre-trained model's test loss at k = 0 with no context, one forward pass per test item.
DIFFICULTY_PLAN = EvalPlan(shots=frozenset({0}), contexts=frozenset({"none"}))


def trajectory_needs(labels: list[str], shots: int) -> list[Need]:
    """Every checkpoint of each model, and the pre-trained model as their step 0."""
    plan = transfer_plan({shots})
    return [*(Need(label, "trajectory", plan) for label in labels),
            Need(PRETRAINED, "final", plan | DIFFICULTY_PLAN)]


# --- sections ------------------------------------------------------------------------------


class Section(StrictModel):
    """One section of the paper: its settings (the fields), models and measurements.

    The class variables tie the section to the rest of its module: its analysis class, the
    figures it draws (``plots``) and the paper's findings it judges (``findings``).
    """

    key: ClassVar[str] = ""  # the YAML key under ``sections:``, set by register_section
    title: ClassVar[str] = ""  # the report's heading
    # The paper's numbering ("3.1", "4", "A" for an appendix): the report's order of sections.
    # Unnumbered sections come last, in the order they were registered.
    paper_section: ClassVar[str] = ""
    analysis: ClassVar[type[SectionAnalysis]]  # computes its tables from the results
    plots: ClassVar[tuple[PaperFigure, ...]] = ()  # report figures shown under the heading
    figures: ClassVar[tuple[str, ...]] = ()  # their names, set by register_section
    findings: ClassVar[tuple[Finding, ...]] = ()  # the paper's claims it judges, paper order
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


def section_types() -> dict[str, type[Section]]:
    """The registry in report order, the paper's own sections loaded.

    They live beside their analyses in :mod:`itransfer.analysis.sections`, which imports this
    module, so they are imported on first use rather than at the top.
    """
    import itransfer.analysis.sections  # noqa: F401  (registers the paper's sections)

    return SECTION_TYPES


def register_section(key: str) -> Callable[[type[SectionT]], type[SectionT]]:
    """Make ``sections.<key>`` of an experiment YAML (and of a manifest) validate as the class.

    Everything the class names is checked here, at import: a figure or finding that clashes
    with a registered one, or a finding that cites a figure nobody draws, is an error then,
    not a row or picture silently missing from a report.
    """

    def register(section_cls: type[SectionT]) -> type[SectionT]:
        if key in SECTION_TYPES:
            raise ValueError(f"section '{key}' is registered twice")
        analysis = getattr(section_cls, "analysis", None)
        if not section_cls.title or not callable(getattr(analysis, "compute", None)):
            raise ValueError(f"section '{key}' needs a title and an analysis class")
        figures = _figure_names(key, section_cls)
        _check_findings(key, section_cls, figures)
        section_cls.key, section_cls.figures = key, figures
        # Re-ordered in place, so every holder of the registry sees the report's order
        # whatever order the modules were imported in.
        ordered = sorted([*SECTION_TYPES.items(), (key, section_cls)],
                         key=lambda item: _paper_order(item[1].paper_section))
        SECTION_TYPES.clear()
        SECTION_TYPES.update(ordered)
        return section_cls

    return register


def _paper_order(number: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a paper section number: 3.1 < 3.2 < 4 < 10 < A (appendices) < unnumbered."""
    if not number:
        return ((2, 0),)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in number.split("."))


def _figure_names(key: str, section_cls: type[Section]) -> tuple[str, ...]:
    """The names of the section's plots; each names one figure of the whole report."""
    names = tuple(plot.name for plot in section_cls.plots)
    declared = vars(section_cls).get("figures")
    if declared is not None and tuple(declared) != names:
        raise ValueError(f"section '{key}': figures {list(declared)} are not drawn by its "
                         f"plots {list(names)}")
    taken = {name for other in SECTION_TYPES.values() for name in other.figures}
    clashes = [name for name in names if name in taken or names.count(name) > 1]
    if clashes:
        raise ValueError(f"section '{key}': figure(s) {clashes} drawn twice")
    return names


def _check_findings(key: str, section_cls: type[Section], figures: tuple[str, ...]) -> None:
    """Each finding belongs to this section, has its own id and cites a drawn figure: its own
    section's or a registered one's (§5.2 cites Figure 4 (left), drawn with §5.1, whose module
    it imports for the name)."""
    drawn = {*figures, *(name for other in SECTION_TYPES.values() for name in other.figures)}
    taken = {finding.id for other in SECTION_TYPES.values() for finding in other.findings}
    for finding in section_cls.findings:
        if finding.section != key:
            raise ValueError(f"finding '{finding.id}' names section '{finding.section}', "
                             f"but is listed by '{key}'")
        if finding.id in taken:
            raise ValueError(f"finding '{finding.id}' is defined twice")
        if finding.figure not in drawn:
            raise ValueError(f"finding '{finding.id}' cites {finding.figure!r}, which no "
                             f"section draws; drawn: {sorted(drawn)}")
        taken.add(finding.id)


def _validate_sections(raw: Any) -> dict[str, Section]:
    """``sections:`` → section objects in registry order; errors keep the section's key."""
    # Already validated: the pipeline hands the experiment's sections on to the manifest.
    if isinstance(raw, Mapping) and all(isinstance(value, Section) for value in raw.values()):
        return dict(raw)
    if not isinstance(raw, Mapping):
        raise PydanticCustomError("dict_type", "Input should be a mapping of sections")
    registry = section_types()
    parsed: dict[str, Section] = {}
    errors: list[Any] = []
    for key, value in raw.items():
        section_cls = registry.get(key)
        if section_cls is None:
            errors.append({"type": PydanticCustomError(
                "unknown_section", "unknown section; known: {known}",
                {"known": ", ".join(registry)}), "loc": (key,), "input": value})
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
    return {key: parsed[key] for key in registry if key in parsed}


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
