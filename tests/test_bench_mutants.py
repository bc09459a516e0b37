"""bench/mutants.py (issue 27): its groups name modules and tests that exist, a mutant counts
against the module it changes, and the score counts what it says it counts; the recorded
results are what the bench README's table reads."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench"
sys.path.insert(0, str(BENCH))

import mutants  # noqa: E402  (bench/ is not a package)

RESULTS = BENCH / "results-mutants-cpu.json"


def test_every_group_names_modules_and_tests_that_exist() -> None:
    """A renamed module or test file would leave a group mutating nothing or testing nothing,
    and `make mutants` would report a score for code it never touched."""
    for name, (modules, tests) in mutants.GROUPS.items():
        for module in modules:
            assert (REPO_ROOT / mutants.SRC / module).is_file(), (name, module)
        for test in tests:
            assert (REPO_ROOT / "tests" / test).is_file(), (name, test)


@pytest.mark.parametrize(("key", "module"), [
    ("itransfer.analysis.sections.mixing.x__step_tests__mutmut_14", "analysis/sections/mixing.py"),
    ("itransfer.data.batching.x\u01c1TaskBatchStream\u01c1_order__mutmut_2", "data/batching.py"),
    ("itransfer.eval.metrics.x_rouge_l__mutmut_1", "eval/metrics.py"),
])
def test_a_mutant_counts_against_the_module_it_changes(key: str, module: str) -> None:
    assert mutants._module_of(key) == module


def test_the_score_is_detected_over_all_that_could_be() -> None:
    """Killed and timed-out mutants are detected; a survivor and a mutant no test reaches are
    not; one not run yet is not counted at all."""
    counts = mutants._counts([1, 1, 3, 36, 0, 33, None])
    assert (counts["killed"], counts["timeout"], counts["survived"], counts["untested"],
            counts["not_run"]) == (3, 1, 1, 1, 1)
    assert (counts["detected"], counts["judged"]) == (4, 6)
    assert counts["score"] == round(4 / 6, 3)


def test_a_sample_of_the_unrun_mutants_stands_for_all_of_them_in_the_estimate() -> None:
    """Mutants run whole count as they are; the sample's share stands for every unrun one."""
    whole = {f"w{index}": 1 if index < 8 else 0 for index in range(10)}  # 8 of 10 detected
    sampled = {"s0": 1, "s1": 1, "s2": 36, "s3": 0}  # 3 of 4 detected
    estimate = mutants._sample_estimate(sampled, 100, 0, whole)
    assert (estimate["sample"], estimate["of"], estimate["detected"]) == (4, 100, 3)
    assert estimate["group_score_estimate"] == round((8 + 0.75 * 100) / (10 + 100), 3)
    low, high = estimate["score_ci95"]
    assert low < 0.75 < high


def test_the_bench_readme_reads_the_recorded_scores() -> None:
    """Each group's score in bench/README.md's table is the one results-mutants-cpu.json holds
    (a rerun that changed a number without the table, or the reverse, fails here)."""
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    readme = (BENCH / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Issue 27", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| group")}
    assert set(results) <= set(rows)
    for group, row in results.items():
        # a group measured partly on a sample shows its estimated score
        score = row.get("unrun_sample", {}).get("group_score_estimate", row["score"])
        shown = re.findall(r"\*\*(\d+(?:\.\d)?) %\*\*", rows[group])
        assert shown, (group, rows[group])
        assert float(shown[0]) == pytest.approx(100 * score, abs=0.05), group
        for module, counts in row.get("by_module", {}).items():
            assert counts["judged"] >= counts["detected"], (group, module)


def test_make_mutants_runs_the_script_and_the_readme_says_so() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\nmutants:", 1)[1].split("\n\n", 1)[0]
    assert "bench/mutants.py" in target and "mutmut" in target
    assert "`make mutants` runs mutation testing" in (REPO_ROOT / "README.md").read_text(
        encoding="utf-8")
