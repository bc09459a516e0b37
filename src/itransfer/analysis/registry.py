"""The registry of paper sections: what an experiment's ``sections:`` validate into.

Adding a paper section
    One new module in ``itransfer/analysis/sections/`` (``<yaml key>.py``, found by listing the
    folder) plus the experiment YAML that uses it; the pipeline, the manifest and the report
    need no edit. The module holds a subclass of :class:`Section` decorated with
    ``@register_section("<yaml key>")``: its fields are the YAML keys of ``sections.<yaml
    key>`` (validated like every other config key), :meth:`Section.model_labels` lists the model
    labels it refers to (checked against the experiment's variants), :meth:`Section.needs`
    returns the evaluations it wants per model (merged with every other section's by
    :class:`itransfer.runs.eval_plan.EvalPlan`), and its class variables name the rest of the
    module: its report heading (``title``) and place (``paper_section``), its analysis class
    (``analysis``: ``compute`` turns the results table into the section's tables,
    ``tables_html`` renders them), its figures (``plots``,
    :class:`itransfer.analysis.plotting.PaperFigure`), the paper's findings it judges
    (``findings``, :class:`itransfer.analysis.verdicts.Finding`, each with the test that gives
    its verdict) and the evaluation task groups whose rows its analysis reads (``task_groups``:
    the unseen tasks unless it says otherwise). A figure or finding that clashes with another or
    cites a figure nobody draws fails at import.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import BeforeValidator, SerializeAsAny, ValidationError
from pydantic_core import PydanticCustomError

from itransfer.config.schema import EvalConfig, StrictModel
from itransfer.runs.eval_plan import Need

if TYPE_CHECKING:  # these modules import the registry (same floor; types only)
    from itransfer.analysis.plotting import PaperFigure
    from itransfer.analysis.run import SectionAnalysis
    from itransfer.analysis.verdicts import Finding


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
