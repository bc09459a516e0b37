"""The category-block bootstrap: tasks of one category are not independent draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from itransfer.analysis import block_bootstrap as bb
from itransfer.analysis import correlations as corr
from itransfer.analysis.significance import paired_test

N_CATEGORIES, PER_CATEGORY = 11, 8  # about the paper's 93 unseen tasks in 11 categories


def tasks_in_categories(rng: np.random.Generator) -> tuple[pd.Index, pd.Series]:
    tasks = pd.Index([f"task{index:03d}" for index in range(N_CATEGORIES * PER_CATEGORY)])
    categories = pd.Series(np.repeat([f"cat{c}" for c in range(N_CATEGORIES)], PER_CATEGORY),
                           index=tasks)
    return tasks, categories


def clustered(rng: np.random.Generator, tasks: pd.Index) -> pd.DataFrame:
    """x and y driven by a shared per-category effect, plus a little per-task noise."""
    effect = np.repeat(rng.normal(size=N_CATEGORIES), PER_CATEGORY)
    return pd.DataFrame({"x": effect + rng.normal(0, 0.3, tasks.size),
                         "y": effect + rng.normal(0, 0.3, tasks.size)}, index=tasks)


def width_ratio(table: pd.DataFrame, categories: pd.Series, n_boot: int = 400
                ) -> tuple[float, bb.Check]:
    """The block bootstrap's 95% CI width of Spearman's rho over the task bootstrap's."""
    task_level = corr.spearman(table["x"], table["y"], n_boot=n_boot, seed=1)
    check = bb.correlation_check("ρ", table, "x", "y", categories, n_boot=n_boot, seed=1)
    return ((check.result.ci_high - check.result.ci_low)
            / (task_level.ci_high - task_level.ci_low)), check


def test_a_planted_category_effect_widens_the_ci_far_beyond_the_task_bootstrap() -> None:
    rng = np.random.default_rng(0)
    tasks, categories = tasks_in_categories(rng)
    table = clustered(rng, tasks)
    ratio, check = width_ratio(table, categories, n_boot=1000)
    assert ratio > 2.0
    assert check.result.n_categories == N_CATEGORIES and check.result.n_tasks == tasks.size
    assert check.result.estimate == pytest.approx(corr.spearman(table["x"], table["y"]).rho)
    assert check.result.ci_low <= check.result.estimate <= check.result.ci_high
    # The same values with the categories shuffled over tasks: no cluster, far less widening.
    shuffled = pd.Series(rng.permutation(categories.to_numpy()), index=tasks)
    assert width_ratio(table, shuffled, n_boot=1000)[0] < 0.6 * ratio


def test_without_clusters_the_block_and_task_bootstraps_agree_roughly() -> None:
    """No category effect: over several data sets, the block CI is about as wide as the task
    bootstrap's, a little wider (about 1.35× over 30 data sets: the two stages count the
    within-category spread twice, the conservative side), where a category effect makes it
    about 2.9× (the test above)."""
    ratios = []
    for seed in range(4):
        rng = np.random.default_rng(10 + seed)
        tasks, categories = tasks_in_categories(rng)
        shared = rng.normal(size=tasks.size)  # per task, not per category
        table = pd.DataFrame({"x": shared + rng.normal(0, 0.8, tasks.size),
                              "y": shared + rng.normal(0, 0.8, tasks.size)}, index=tasks)
        ratio, check = width_ratio(table, categories)
        ratios.append(ratio)
        assert check.holds and check.result.p_value < 0.01
    assert 0.9 < float(np.mean(ratios)) < 1.7


def test_a_category_driven_paired_difference_does_not_survive() -> None:
    """Every task of most categories got better, so Wilcoxon over tasks is sure; over
    categories, 11 draws of a ±1 category effect are not."""
    rng = np.random.default_rng(2)
    tasks, categories = tasks_in_categories(rng)
    before = pd.Series(rng.normal(size=tasks.size), index=tasks)
    effect = np.repeat(rng.normal(-0.3, 1.0, N_CATEGORIES), PER_CATEGORY)
    after = before + effect + rng.normal(0, 0.05, tasks.size)
    assert paired_test(before, after, -1.0).p_value < 1e-4
    check = bb.paired_check("Δ", before, after, categories, sign=-1.0, n_boot=1000, seed=0)
    assert check.result.estimate == pytest.approx(float((after - before).mean()))
    assert check.result.p_value > 0.05 and not check.holds
    plain = bb.paired_check("Δ", before, after, pd.Series(tasks, index=tasks), sign=-1.0,
                            n_boot=1000, seed=0)  # every task its own category
    assert plain.result.p_value < 0.01 and plain.holds


def test_resamples_draw_whole_categories_then_tasks_within_them() -> None:
    """Rows of category c appear a multiple of its size times, and only its own rows."""
    codes = np.array([0, 0, 0, 1, 2, 2, 1, 1, 3, 0])
    sizes = np.bincount(codes)
    resamples = bb._block_indices(codes, 200, np.random.default_rng(0))
    lengths = set()
    for rows in resamples:
        counts = np.bincount(codes[rows], minlength=sizes.size)
        assert (counts % sizes == 0).all()
        lengths.add(rows.size)
    assert len(lengths) > 1  # the size varies with which categories were drawn
    within = np.concatenate([rows[codes[rows] == 0] for rows in resamples])
    assert set(within) == {0, 1, 2, 9}  # tasks of category 0 are redrawn, each of them


def test_undefined_cases_say_why() -> None:
    table = pd.DataFrame({"x": [1.0, 2, 3, 4], "y": [1.0, 3, 2, 4]}, index=list("abcd"))
    one = bb.correlation_check("ρ", table, "x", "y", pd.Series("c", index=table.index),
                               n_boot=50, seed=0)
    assert not one.result.defined and not one.holds and "1 category" in one.result.describe()
    none = bb.correlation_check("ρ", table, "x", "y", pd.Series(dtype=object), n_boot=50,
                                seed=0)
    assert "no task categories recorded" in none.result.describe("ρ")
    assert bb.combine([one]).survives is None


def test_combine_needs_every_check_or_one_of_them() -> None:
    def check(holds: bool, defined: bool = True) -> bb.Check:
        nan = float("nan")
        low = 0.1 if defined else nan
        result = bb.BlockBootstrap(0.5, low, 0.9, 0.01, 0.99, 20, 4, 100)
        return bb.Check("c", result, holds and defined)

    assert bb.combine([check(True), check(True)]).survives is True
    assert bb.combine([check(True), check(False)]).survives is False
    assert bb.combine([check(True), check(False, defined=False)]).survives is None
    assert bb.combine([check(False), check(False, defined=False)]).survives is False
    assert bb.combine([check(False), check(True)], any_of=True).survives is True
    assert bb.combine([check(False), check(False, defined=False)], any_of=True).survives is None
    assert bb.combine([]).survives is None


def test_lead_is_positive_when_the_target_is_first() -> None:
    rows = np.array([[1.0, 2.0, 3.0], [1.0, 2.5, 2.0]])
    assert bb.lead_statistic(0)(rows) == pytest.approx(1.25)
    assert bb.lead_statistic(2)(rows) == pytest.approx(1.0 - 2.5)


def test_task_categories_from_result_rows() -> None:
    frame = pd.DataFrame({"task": ["a", "a", "b", "c"], "category": ["X", "X", None, "Y"]})
    assert bb.task_categories(frame).to_dict() == {"a": "X", "c": "Y"}
    assert bb.task_categories(frame.drop(columns="category")).empty


def test_the_partial_statistic_is_partial_spearman() -> None:
    """Resampled rows repeat tasks (ties): the statistic must still be the library's rho."""
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(25, 3))
    rows[:, 0] += rows[:, 2]
    rows = rows[rng.integers(0, 25, 25)]  # a resample, with repeated rows
    expected = corr.partial_spearman(rows[:, 0], rows[:, 1], rows[:, 2]).rho
    assert bb.partial_statistic(rows) == pytest.approx(expected, abs=1e-12)
    explained = np.column_stack([np.arange(6.0), rng.normal(size=6), np.arange(6.0)])
    assert np.isnan(bb.partial_statistic(explained))  # x is the control: nothing left


def test_the_phase_difference_statistic_is_late_rho_minus_early_rho() -> None:
    """§5.1's "late ρ above early ρ" check: columns (early FT, early ICL, late FT, late ICL)."""
    rising = np.arange(6.0)
    rows = np.column_stack([rising, -rising, rising, rising])  # early ρ = −1, late ρ = +1
    assert bb.correlation_difference_statistic(rows) == pytest.approx(2.0)
    assert bb.correlation_difference_statistic(rows[:, [2, 3, 0, 1]]) == pytest.approx(-2.0)
