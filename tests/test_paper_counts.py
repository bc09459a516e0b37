"""The paper's task counts (§2.4, Tables 1–2) and a selection's counts beside them."""

from __future__ import annotations

from itransfer.config import paper_constants as paper
from itransfer.data.paper_counts import compare_with_paper
from itransfer.data.selection import TaskSelection


def _selection(seen: dict[str, int], unseen: dict[str, int]) -> TaskSelection:
    """A selection with ``count`` one-category tasks of each category in each group."""
    tasks = {
        group: [(f"task_{group}_{category}_{i}", category)
                for category, count in counts.items() for i in range(count)]
        for group, counts in (("seen", seen), ("unseen", unseen))
    }
    return TaskSelection(
        seen=tuple(name for name, _ in tasks["seen"]),
        unseen=tuple(name for name, _ in tasks["unseen"]),
        unseen_synthetic=(), heldout_domain=(), heldout_adversarial=(),
        categories={name: (category,) for group in tasks.values() for name, category in group},
    )


def test_the_tables_cover_the_58_and_11_categories_and_their_sums() -> None:
    assert len(paper.SEEN_CATEGORY_TASK_COUNTS) == paper.PAPER_NUM_SEEN_CATEGORIES == 58
    assert len(paper.UNSEEN_CATEGORY_TASK_COUNTS) == paper.PAPER_NUM_UNSEEN_CATEGORIES == 11
    assert not set(paper.SEEN_CATEGORIES) & set(paper.UNSEEN_CATEGORIES)
    assert all(count >= 1 for count in paper.SEEN_CATEGORY_TASK_COUNTS.values())
    # Table 2 sums to the 93 unseen tasks of §2.4; Table 1 as printed sums to 610, not 619.
    assert sum(paper.UNSEEN_CATEGORY_TASK_COUNTS.values()) == paper.PAPER_NUM_UNSEEN_TASKS
    assert sum(paper.SEEN_CATEGORY_TASK_COUNTS.values()) == 610
    assert paper.PAPER_NUM_SEEN_TASKS == 619


def test_one_category_off_by_one_is_flagged_and_a_matching_one_is_not() -> None:
    selection = _selection(
        # Table 1: Fact Verification 2, Poem Generation 1.
        seen={"Fact Verification": 2, "Poem Generation": 2, "Not In The Paper": 3},
        unseen={"Coreference Resolution": 14},  # Table 2: 14
    )
    comparison = compare_with_paper(selection)
    matching = comparison.category("seen", "Fact Verification")
    assert matching is not None and (matching.found, matching.paper) == (2, 2)
    assert matching.matches is True and matching.delta == 0
    off_by_one = comparison.category("seen", "Poem Generation")
    assert off_by_one is not None and (off_by_one.found, off_by_one.paper) == (2, 1)
    assert off_by_one.matches is False and off_by_one.delta == 1
    assert comparison.category("unseen", "Coreference Resolution").matches is True
    # A paper category the selection lacks is a difference; one the paper lacks is not compared.
    absent = comparison.category("seen", "Question Answering")
    assert (absent.found, absent.paper, absent.matches) == (0, 150, False)
    unlisted = comparison.category("seen", "Not In The Paper")
    assert (unlisted.found, unlisted.paper, unlisted.matches) == (3, None, None)

    assert off_by_one in comparison.differences and matching not in comparison.differences
    rows = {(row["group"], row["what"]): row for row in comparison.to_json()["categories"]}
    assert rows["seen", "Poem Generation"] == {"group": "seen", "what": "Poem Generation",
                                               "found": 2, "paper": 1, "matches": False}
    assert rows["seen", "Fact Verification"]["matches"] is True
    groups = {(row["group"], row["what"]): row for row in comparison.to_json()["groups"]}
    assert groups["seen", "tasks"] == {"group": "seen", "what": "tasks", "found": 7,
                                       "paper": 619, "matches": False}
    assert groups["seen", "categories"]["found"] == 3
    assert groups["unseen", "categories"] == {"group": "unseen", "what": "categories",
                                              "found": 1, "paper": 11, "matches": False}
    assert groups["heldout_domain", "tasks"]["paper"] is None
    assert groups["heldout_domain", "tasks"]["matches"] is None


def test_a_selection_reproducing_both_tables_differs_only_in_the_seen_total() -> None:
    comparison = compare_with_paper(_selection(
        dict(paper.SEEN_CATEGORY_TASK_COUNTS), dict(paper.UNSEEN_CATEGORY_TASK_COUNTS)
    ))
    # Every category and the unseen total match; 610 seen tasks are not the 619 of the text.
    assert [(check.group, check.what, check.delta) for check in comparison.differences] == [
        ("seen", "tasks", 610 - 619)
    ]
    payload = comparison.to_json()
    assert payload["matches"] is False and payload["differences"] == 1
    # 4 group counts (seen/unseen × tasks/categories) and 58 + 11 categories are compared.
    assert payload["compared"] == 4 + 58 + 11
    assert any("610" in note and "619" in note for note in payload["notes"])
