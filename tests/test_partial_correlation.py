"""The task-difficulty confound: partial Spearman given the pre-trained zero-shot loss."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from itransfer.analysis import correlations as corr


def test_partial_rho_equals_the_first_order_formula_on_ranks() -> None:
    rng = np.random.default_rng(3)
    x, y, z = rng.normal(size=(3, 40))
    y = y + 0.5 * x + 0.7 * z
    x = x + 0.4 * z
    result = corr.partial_spearman(x, y, z)
    r_xy, r_xz, r_yz = (stats.spearmanr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    expected = (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    assert result.rho == pytest.approx(expected, abs=1e-12)
    assert result.plain_rho == pytest.approx(r_xy, abs=1e-12)
    assert result.n == 40 and result.surviving == pytest.approx(expected / r_xy)


def test_a_planted_difficulty_confound_leaves_nothing() -> None:
    """FT and ICL loss both track difficulty and nothing else: ρ is high, the partial ~0."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(1, 5, 93)
    finetune = difficulty + rng.normal(0, 0.3, 93)
    icl = 2 * difficulty + rng.normal(0, 0.6, 93)
    result = corr.partial_spearman(finetune, icl, difficulty)
    assert corr.spearman(finetune, icl, n_boot=0).rho > 0.8
    assert abs(result.rho) < 0.2 and result.p_value > 0.05
    assert "survives" in result.describe()


def test_a_relation_beyond_difficulty_survives_and_is_significant() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(1, 5, 93)
    shared = rng.normal(0, 1, 93)  # what transfer and ICL have in common beyond difficulty
    finetune = difficulty + shared + rng.normal(0, 0.3, 93)
    icl = difficulty + shared + rng.normal(0, 0.3, 93)
    result = corr.partial_spearman(finetune, icl, difficulty)
    assert result.rho > 0.7 and result.degrees_of_freedom == 90
    t_stat = result.rho * math.sqrt(90 / (1 - result.rho**2))
    assert result.p_value == pytest.approx(2 * stats.t.sf(t_stat, 90), rel=1e-9)
    assert result.p_value < 1e-10


NULL_DRAWS = 2000
# 0.05 plus 2.5 Monte-Carlo standard errors of a rejection rate of 0.05 over NULL_DRAWS draws.
TYPE_I_BOUND = 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / NULL_DRAWS)


def kennedy_p_values(draws: np.ndarray, permutations: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The partial rho of each of ``draws`` (shape (draws, 3, n): x, y, control) and the
    p-value of the method replaced (Kennedy: permute y's rank residuals against x's), vectorised:
    what the type-I test compares against."""
    ranks = stats.rankdata(draws, axis=2)
    ranks -= ranks.mean(axis=2, keepdims=True)
    z = ranks[:, 2:3]
    residuals = ranks[:, :2] - z * ((ranks[:, :2] * z).sum(2, keepdims=True)
                                   / (z**2).sum(2, keepdims=True))
    x, y = residuals[:, 0], residuals[:, 1]
    norm = np.sqrt((x**2).sum(1) * (y**2).sum(1))
    rho = (x * y).sum(1) / norm
    order = np.argsort(rng.random((permutations, x.shape[1])), axis=1)
    permuted = np.einsum("dpn,dn->dp", y[:, order], x) / norm[:, None]
    exceed = (np.abs(permuted) >= np.abs(rho)[:, None] - 1e-12).sum(1)
    return rho, (1 + exceed) / (1 + permutations)


@pytest.mark.parametrize("n", [8, 15])
def test_type_one_error_is_held_at_small_n(n: int) -> None:
    """x, y and difficulty independent (a clean null): at most 5 % of p-values (plus Monte-Carlo
    error) fall below 0.05. The residual permutation it replaced rejected 6.7 % of these very
    draws at n = 8 (above the bound: this test failed on it) and 5.2 % at n = 15."""
    rng = np.random.default_rng(n)
    draws = rng.normal(size=(NULL_DRAWS, 3, n))
    p_values = np.array([corr.partial_spearman(*draw).p_value for draw in draws])
    rate = float(np.mean(p_values < 0.05))
    assert rate <= TYPE_I_BOUND
    assert rate >= 0.05 - 2.5 * math.sqrt(0.05 * 0.95 / NULL_DRAWS)  # not merely conservative


def test_the_replaced_permutation_broke_the_bound_at_n_8() -> None:
    """The same clean null at n = 8 over 6,000 draws: Kennedy's permutation (about 0.077 in
    20,000 draws) is above the bound, and rejects clearly more often than the t test on the
    very same draws (about 0.055 in 20,000)."""
    rng = np.random.default_rng(80)
    draws = rng.normal(size=(3 * NULL_DRAWS, 3, 8))
    rhos, old = (np.concatenate(parts) for parts in zip(
        *(kennedy_p_values(chunk, 999, rng) for chunk in np.split(draws, 12)), strict=True))
    sample = draws[:50]  # the vectorised rho is the library's
    assert rhos[:50] == pytest.approx([corr.partial_spearman(*draw).rho for draw in sample])
    old_rate = float(np.mean(old < 0.05))
    new_rate = float(np.mean(corr.partial_t_p_value(rhos, 8) < 0.05))
    assert old_rate > TYPE_I_BOUND and old_rate > new_rate + 0.01


def test_the_share_that_survives_reads_at_both_ends() -> None:
    """Above 100 % (partial stronger than plain) reads "all", the opposite sign "none"."""
    def share(rho: float, plain: float) -> str:
        return corr.PartialCorrelation(rho, 0.01, plain, 15).describe()

    assert "83% of ρ survives" in share(0.5, 0.6)
    stronger = share(0.9, 0.6)
    assert "all of ρ survives (|partial ρ| ≥ |ρ|)" in stronger and "150%" not in stronger
    assert "all of ρ survives" in share(-0.7, -0.5)
    assert "none of ρ survives (partial ρ has the opposite sign)" in share(-0.2, 0.6)
    assert "survives" not in share(0.3, 0.0)  # no share of a zero rho
    assert "t test on n − 3 df: p=0.01" in share(0.5, 0.6)


def test_undefined_cases_say_why() -> None:
    assert "fewer than 4 tasks" in corr.partial_spearman([1, 2, 3], [1, 3, 2], [3, 1, 2]).reason
    constant = corr.partial_spearman([1, 2, 3, 4], [1, 3, 2, 4], [5, 5, 5, 5])
    assert not constant.defined and "constant" in constant.reason
    explained = corr.partial_spearman([1, 2, 3, 4], [4, 1, 3, 2], [10, 20, 30, 40])
    assert not explained.defined and "fully explained" in explained.reason
    missing = corr.difficulty_partial(pd.DataFrame({"a": [1.0], "b": [2.0]}), "a", "b",
                                      pd.Series(dtype=float))
    assert "k = 0 loss was not measured" in missing.describe()


def test_difficulty_is_the_pretrained_k0_loss_without_context() -> None:
    rows = []
    for task, loss in (("t1", 2.0), ("t2", 3.0)):
        for shots, context, value in ((0, "none", loss), (0, "exemplars", 9.0), (5, "none", 8.0)):
            rows.append({"model": "pretrained", "checkpoint_step": 0, "task": task,
                         "method": "finetune", "split": "test", "metric": "loss",
                         "shots": shots, "context": context, "seed": 0, "value": value})
        rows.append({**rows[-1], "model": "it", "shots": 0, "value": 7.0})
    difficulty = corr.zero_shot_difficulty(pd.DataFrame(rows), "pretrained")
    assert difficulty.to_dict() == {"t1": 2.0, "t2": 3.0}
