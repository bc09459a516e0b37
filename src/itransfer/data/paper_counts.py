"""A task selection's counts beside the paper's (§2.4, Tables 1–2), each difference flagged.

§2.4 states 619 seen tasks from 58 categories and 93 unseen tasks from 11; Tables 1 and 2 give
the tasks per category. On the full SNI repository with the paper's selection the counts should
agree (up to the paper's own inconsistencies, noted in
:mod:`itransfer.config.paper_constants`); on a slice of SNI, such as the bundled one, they
differ everywhere, which is expected and no error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from itransfer.config import paper_constants as paper
from itransfer.data.selection import TaskSelection

# What the paper states for each selection group: (tasks, categories); None where it gives no
# number (the table of Table 2 we have lists only the NLU unseen categories).
PAPER_GROUP_COUNTS: Mapping[str, tuple[int | None, int | None]] = {
    "seen": (paper.PAPER_NUM_SEEN_TASKS, paper.PAPER_NUM_SEEN_CATEGORIES),
    "unseen": (paper.PAPER_NUM_UNSEEN_TASKS, paper.PAPER_NUM_UNSEEN_CATEGORIES),
    "unseen_synthetic": (None, None),
    "heldout_domain": (None, None),
    "heldout_adversarial": (None, None),
}
# The selection group each table counts: Table 1 the training tasks, Table 2 the NLU unseen ones.
PAPER_CATEGORY_TABLES: Mapping[str, Mapping[str, int]] = {
    "seen": paper.SEEN_CATEGORY_TASK_COUNTS,
    "unseen": paper.UNSEEN_CATEGORY_TASK_COUNTS,
}
PAPER_NOTES: tuple[str, ...] = (
    f"Table 1's per-category counts sum to {sum(paper.SEEN_CATEGORY_TASK_COUNTS.values())}, "
    f"not the {paper.PAPER_NUM_SEEN_TASKS} seen tasks the paper's text states",
    "the paper gives no counts for the synthetic, held-out domain and adversarial groups",
)


@dataclass(frozen=True)
class CountCheck:
    """One count of the selection (``found``) beside the paper's (``paper``, None if not given).

    ``what`` is ``"tasks"`` or ``"categories"`` for a whole group, or a category name (its
    tasks in ``group``).
    """

    group: str
    what: str
    found: int
    paper: int | None

    @property
    def matches(self) -> bool | None:
        """Whether the counts agree; None when the paper gives no count to compare with."""
        return None if self.paper is None else self.found == self.paper

    @property
    def delta(self) -> int | None:
        """found − paper, or None when the paper gives no count."""
        return None if self.paper is None else self.found - self.paper

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "what": self.what, "found": self.found,
                "paper": self.paper, "matches": self.matches}


@dataclass(frozen=True)
class PaperComparison:
    """Group totals and per-category task counts, each beside the paper's number."""

    groups: tuple[CountCheck, ...]
    categories: tuple[CountCheck, ...]

    @property
    def differences(self) -> tuple[CountCheck, ...]:
        """Every count the paper gives that the selection does not match."""
        return tuple(check for check in self.groups + self.categories if check.matches is False)

    @property
    def compared(self) -> int:
        return sum(check.paper is not None for check in self.groups + self.categories)

    def category(self, group: str, name: str) -> CountCheck | None:
        return next((check for check in self.categories
                     if (check.group, check.what) == (group, name)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "matches": not self.differences,
            "compared": self.compared,
            "differences": len(self.differences),
            "groups": [check.to_json() for check in self.groups],
            "categories": [check.to_json() for check in self.categories],
            "notes": list(PAPER_NOTES),
        }


def compare_with_paper(
    selection: TaskSelection,
    *,
    group_counts: Mapping[str, tuple[int | None, int | None]] = PAPER_GROUP_COUNTS,
    category_tables: Mapping[str, Mapping[str, int]] = PAPER_CATEGORY_TABLES,
) -> PaperComparison:
    """Each group's task and category count, and each category's tasks, beside the paper's.

    A category of the paper's tables that the selection lacks counts 0 found (a difference); a
    category the selection has in ``seen`` or ``unseen`` but the tables do not list has no
    paper count.
    """
    groups: list[CountCheck] = []
    for group, names in selection.groups().items():
        paper_tasks, paper_categories = group_counts.get(group, (None, None))
        found_categories = sum(1 for count in selection.category_counts(group).values() if count)
        groups += [CountCheck(group, "tasks", len(names), paper_tasks),
                   CountCheck(group, "categories", found_categories, paper_categories)]
    categories: list[CountCheck] = []
    for group, table in category_tables.items():
        found = selection.category_counts(group)
        unlisted = sorted(name for name in found if name not in table)
        categories += [CountCheck(group, name, found.get(name, 0), count)
                       for name, count in table.items()]
        categories += [CountCheck(group, name, found[name], None) for name in unlisted]
    return PaperComparison(groups=tuple(groups), categories=tuple(categories))
