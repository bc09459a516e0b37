"""The paper's task selection (§2.4, Appendix A): seen, unseen and held-out tasks.

Rules, applied to each task in order (the first that fires decides):

1. a task whose input, output or instruction language is not in ``languages`` is excluded;
2. a task with a category in ``unseen_categories`` is an evaluation task — ``unseen_synthetic``
   if a source is synthetic, else ``unseen`` (NLU) — when it has ``min_eval_instances``
   instances, excluded otherwise (a task with both a seen and an unseen category counts as
   unseen, so no unseen category leaks into training);
3. a task with none of the ``seen_categories`` is excluded;
4. a synthetic task of a seen category is excluded (no synthetic tasks for training);
5. a task with a domain in ``evaluation_domains`` (exact match of the full domain string, as
   the paper lists sub-domains such as ``Social Media -> Twitter`` explicitly) or a source in
   ``adversarial_sources`` (case-insensitive) is held out: it joins the domain/adversarial
   generalization set when it has ``min_eval_instances`` instances, else it is excluded;
6. every other task is seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from itransfer.config.schema import SelectionConfig
from itransfer.data.sni import TaskMetadata


@dataclass(frozen=True)
class TaskSelection:
    """Task names of each group, and the reason each excluded task was left out."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    unseen_synthetic: tuple[str, ...]
    heldout_domain: tuple[str, ...]
    heldout_adversarial: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def heldout_generalization(self) -> tuple[str, ...]:
        return tuple(sorted(self.heldout_domain + self.heldout_adversarial))

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {
            "seen": self.seen,
            "unseen": self.unseen,
            "unseen_synthetic": self.unseen_synthetic,
            "heldout_domain": self.heldout_domain,
            "heldout_adversarial": self.heldout_adversarial,
        }

    def category_counts(self, group: str) -> Counter[str]:
        """How many tasks of ``group`` fall in each category."""
        counts: Counter[str] = Counter()
        for name in self.groups()[group]:
            counts.update(self.categories[name])
        return counts

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {key: list(names) for key, names in self.groups().items()}
        data["heldout_generalization"] = list(self.heldout_generalization)
        data["excluded"] = dict(sorted(self.excluded.items()))
        data["counts"] = {key: len(names) for key, names in self.groups().items()} | {
            "heldout_generalization": len(self.heldout_generalization),
            "excluded": len(self.excluded),
        }
        return data


def _language_problem(task: TaskMetadata, languages: AbstractSet[str]) -> str | None:
    for label, values in (
        ("input", task.input_languages),
        ("output", task.output_languages),
        ("instruction", task.instruction_languages),
    ):
        foreign = [value for value in values if value not in languages]
        if foreign or not values:
            return f"{label} language {', '.join(foreign) or 'missing'} not in {sorted(languages)}"
    return None


def select_tasks(tasks: Iterable[TaskMetadata], config: SelectionConfig) -> TaskSelection:
    """Assign every task to one group (or exclude it, with a reason)."""
    rules = _Rules.of(config)
    groups: dict[str, list[str]] = {
        "seen": [], "unseen": [], "unseen_synthetic": [],
        "heldout_domain": [], "heldout_adversarial": [],
    }
    excluded: dict[str, str] = {}
    categories: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        categories[task.name] = task.categories
        group, reason = _assign(task, rules)
        if group is None:
            excluded[task.name] = reason
        else:
            groups[group].append(task.name)
    return TaskSelection(
        **{key: tuple(sorted(names)) for key, names in groups.items()},
        excluded=excluded,
        categories=categories,
    )


@dataclass(frozen=True)
class _Rules:
    """The selection config as the sets each task is checked against (sources lower-cased)."""

    languages: frozenset[str]
    seen_categories: frozenset[str]
    unseen_categories: frozenset[str]
    evaluation_domains: frozenset[str]
    adversarial_sources: frozenset[str]
    synthetic_sources: frozenset[str]
    minimum: int

    @classmethod
    def of(cls, config: SelectionConfig) -> _Rules:
        return cls(
            languages=frozenset(config.languages),
            seen_categories=frozenset(config.seen_categories),
            unseen_categories=frozenset(config.unseen_categories),
            evaluation_domains=frozenset(config.evaluation_domains),
            adversarial_sources=frozenset(s.lower() for s in config.adversarial_sources),
            synthetic_sources=frozenset(s.lower() for s in config.synthetic_sources),
            minimum=config.min_eval_instances,
        )


def _assign(task: TaskMetadata, rules: _Rules) -> tuple[str | None, str]:
    """(group, "") for a selected task, (None, why) for an excluded one; the checks go in
    order: language, unseen category, seen category, synthetic, held-out domain or source."""
    too_few = f"fewer than {rules.minimum} instances"
    is_synthetic = bool({source.lower() for source in task.sources} & rules.synthetic_sources)
    if problem := _language_problem(task, rules.languages):
        return None, f"not English: {problem}"
    if unseen_hit := [c for c in task.categories if c in rules.unseen_categories]:
        if task.num_instances < rules.minimum:
            return None, f"unseen category {unseen_hit[0]!r} but {too_few} ({task.num_instances})"
        return ("unseen_synthetic" if is_synthetic else "unseen"), ""
    if not any(c in rules.seen_categories for c in task.categories):
        listed = ", ".join(repr(c) for c in task.categories)
        return None, f"category {listed} is neither a seen nor an unseen category"
    if is_synthetic:
        return None, "synthetic task (no synthetic tasks are used for training)"
    held_domains = [d for d in task.domains if d in rules.evaluation_domains]
    held_sources = [s for s in task.sources if s.lower() in rules.adversarial_sources]
    if held_domains or held_sources:
        why = (
            f"evaluation domain {held_domains[0]!r}"
            if held_domains
            else f"adversarial source {held_sources[0]!r}"
        )
        if task.num_instances < rules.minimum:
            return None, f"held out of training ({why}) with {too_few} for evaluation"
        return ("heldout_domain" if held_domains else "heldout_adversarial"), ""
    return "seen", ""
