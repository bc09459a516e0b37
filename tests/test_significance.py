"""The significance tests behind the verdicts, each against an independent reference.

The bootstrap references resample with the same generator calls as the module (the resampling
scheme is part of what a result means: seed 0, tasks drawn with replacement, ``n_boot`` rows)
but compute each resample's Spearman rho with scipy's ``spearmanr``, not the module's vectorised
ranks, and the percentiles and p-values from their definitions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from itransfer.analysis.significance import (
    MIN_PAIRS,
    BelowBound,
    CorrelationDifference,
    correlation_difference,
    holm,
    one_sided_p,
    paired_test,
    ranking_stability,
    rho_below,
    rho_within,
    rowwise_spearman,
)


def _tasks(n: int, noise: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": x + noise * rng.normal(size=n)},
                        index=[f"task{i:03d}" for i in range(n)])


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(x, y).statistic)


def _resampled_rhos(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Each resample's rho: pandas' average ranks, then Pearson's r of the ranks (NaN for a
    constant resample); checked against scipy's spearmanr on the first rows."""
    index = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    ranks_x = pd.DataFrame(x[index]).rank(axis=1).to_numpy()
    ranks_y = pd.DataFrame(y[index]).rank(axis=1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rhos = np.array([np.corrcoef(a, b)[0, 1] if a.std() and b.std() else np.nan
                         for a, b in zip(ranks_x, ranks_y, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant resample's rho is NaN, as the module's
        first = [_rho(x[row], y[row]) for row in index[:20]]
    assert np.allclose(rhos[:20], first, equal_nan=True)
    return rhos


def test_rowwise_spearman_is_scipys_rho_per_row_with_ties_and_nan_for_constant_rows() -> None:
    rng = np.random.default_rng(3)
    xs = rng.integers(0, 4, size=(6, 9)).astype(float)  # many ties
    ys = rng.normal(size=(6, 9))
    xs[5] = 2.0
    got = rowwise_spearman(xs, ys)
    assert got[:5] == pytest.approx([_rho(a, b) for a, b in zip(xs[:5], ys[:5], strict=True)])
    assert math.isnan(got[5])


def test_correlation_difference_is_the_paired_bootstrap_of_its_definition() -> None:
    first, second = _tasks(12, 1.0, seed=1), _tasks(12, 0.2, seed=2)
    second.index = first.index
    got = correlation_difference(first, second, "x", "y")  # the defaults: 2,000 draws, seed 0
    x1, y1 = first["x"].to_numpy(), first["y"].to_numpy()
    x2, y2 = second["x"].to_numpy(), second["y"].to_numpy()
    differences = _resampled_rhos(x2, y2, 2000, 0) - _resampled_rhos(x1, y1, 2000, 0)
    differences = differences[np.isfinite(differences)]
    low, high = np.percentile(differences, [2.5, 97.5])
    tail = min(np.mean(differences <= 0), np.mean(differences >= 0))
    assert got.difference == pytest.approx(_rho(x2, y2) - _rho(x1, y1))
    assert (got.ci_low, got.ci_high) == pytest.approx((low, high))
    assert got.p_value == pytest.approx(min(1.0, 2 * max(tail, 1 / differences.size)))
    # one-sided: the share of resamples at or beyond 0 against a rise, and against a fall
    assert got.p_rise == pytest.approx(max(np.mean(differences <= 0), 1 / differences.size))
    assert got.p_fall == pytest.approx(max(np.mean(differences >= 0), 1 / differences.size))
    assert got.difference > 0 and got.p_rise < got.p_fall
    assert got.n == 12 and got.confidence == 0.95
    narrower = correlation_difference(first, second, "x", "y", confidence=0.5)
    assert (narrower.ci_low, narrower.ci_high) == pytest.approx(
        tuple(np.percentile(differences, [25, 75])))
    other_seed = correlation_difference(first, second, "x", "y", seed=1)
    assert (other_seed.ci_low, other_seed.ci_high) != (got.ci_low, got.ci_high)
    assert got.describe() == (f"Δρ={got.difference:+.3f}, paired bootstrap 95% CI "
                              f"[{low:+.2f}, {high:+.2f}], p={got.p_value:.2g}, n=12")


def test_correlation_difference_pairs_only_the_tasks_both_tables_have() -> None:
    first, second = _tasks(10, 0.5, seed=4), _tasks(10, 0.5, seed=5)
    second.index = [*first.index[:8], "other1", "other2"]
    first.loc[first.index[0], "y"] = np.nan
    got = correlation_difference(first, second, "x", "y", n_boot=50)
    common = first.index[1:8]
    expected = (_rho(second.loc[common, "x"], second.loc[common, "y"])
                - _rho(first.loc[common, "x"], first.loc[common, "y"]))
    assert got.n == 7 and got.difference == pytest.approx(expected)


def _undefined(result: CorrelationDifference, n: int, confidence: float) -> None:
    assert [math.isnan(v) for v in (result.difference, result.ci_low, result.ci_high,
                                    result.p_value)] == [True] * 4
    assert result.n == n and result.confidence == confidence and not result.defined
    assert result.describe() == f"Δρ undefined (n={n})"


def test_correlation_difference_undefined_below_four_tasks_or_without_draws() -> None:
    table = _tasks(MIN_PAIRS + 1, 0.1, seed=6)
    _undefined(correlation_difference(table.iloc[:MIN_PAIRS], table.iloc[:MIN_PAIRS], "x", "y",
                                      confidence=0.9), MIN_PAIRS, 0.9)
    _undefined(correlation_difference(table, table, "x", "y", n_boot=0, confidence=0.8),
               MIN_PAIRS + 1, 0.8)
    assert correlation_difference(table, table, "x", "y", n_boot=1).defined
    constant = table.assign(x=1.0)
    _undefined(correlation_difference(table, constant, "x", "y", confidence=0.7),
               MIN_PAIRS + 1, 0.7)


def test_rho_below_is_the_one_sided_bootstrap_of_its_definition() -> None:
    table = _tasks(15, 1.5, seed=7)
    got = rho_below(table, "x", "y", 0.6)  # the defaults: 2,000 draws, seed 0, 95 %
    rhos = _resampled_rhos(table["x"].to_numpy(), table["y"].to_numpy(), 2000, 0)
    rhos = rhos[np.isfinite(rhos)]
    assert got.upper == pytest.approx(np.percentile(rhos, 95))
    assert got.p_value == pytest.approx((1 + np.sum(rhos >= 0.6)) / (1 + rhos.size))
    assert got.bound == 0.6 and got.confidence == 0.95
    assert got.holds == (got.upper < 0.6)
    assert got.describe() == (f"ρ below 0.6: one-sided 95% bootstrap bound {got.upper:.2f}, "
                              f"p={got.p_value:.2g}")
    assert rho_below(table, "x", "y", 0.6, confidence=0.8).upper == pytest.approx(
        np.percentile(rhos, 80))
    assert rho_below(table, "x", "y", 0.6, seed=1).upper != got.upper


def test_rho_below_counts_resamples_equal_to_the_bound_against_the_claim() -> None:
    table = pd.DataFrame({"x": np.arange(8.0), "y": np.arange(8.0) ** 2})  # rho = 1 everywhere
    got = rho_below(table, "x", "y", 1.0, n_boot=99)
    assert got.p_value == pytest.approx(1.0) and got.upper == pytest.approx(1.0)
    assert not got.holds


def _nan_bound(result: BelowBound, bound: float, confidence: float) -> None:
    assert result.bound == bound and result.confidence == confidence
    assert math.isnan(result.upper) and math.isnan(result.p_value) and not result.holds


def test_rho_below_undefined_below_three_tasks_without_draws_or_for_a_constant_column() -> None:
    table = _tasks(MIN_PAIRS, 0.1, seed=8)
    _nan_bound(rho_below(table.iloc[:2], "x", "y", 0.5, confidence=0.9), 0.5, 0.9)
    _nan_bound(rho_below(table, "x", "y", 0.4, n_boot=0, confidence=0.8), 0.4, 0.8)
    assert not math.isnan(rho_below(table, "x", "y", 0.4, n_boot=1).upper)
    _nan_bound(rho_below(table.assign(y=2.0), "x", "y", 0.3, confidence=0.7), 0.3, 0.7)
    holds = rho_below(_tasks(30, 5.0, seed=9), "x", "y", 0.9)
    assert holds.holds and holds.upper < 0.9


def test_paired_test_is_scipys_wilcoxon_on_the_common_tasks() -> None:
    before = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan], index=list("abcdefg"))
    after = pd.Series([1.5, 1.0, 3.8, 4.9, 6.2, 6.1, 9.0, 1.0], index=list("abcdefgh"))
    got = paired_test(before, after, 1.0)  # claimed: after is higher
    differences = np.array([0.5, -1.0, 0.8, 0.9, 1.2, 0.1])
    towards = stats.wilcoxon(differences, alternative="greater")
    away = stats.wilcoxon(differences, alternative="less")
    assert (got.statistic, got.p_value) == pytest.approx((towards.statistic, towards.pvalue))
    assert got.opposite_p == pytest.approx(away.pvalue)
    # ranks of |d|: 0.1→1, 0.5→2, 0.8→3, 0.9→4, 1.0→5, 1.2→6; W = 21 − 5 = 16 of 21
    assert (got.statistic, got.rank_total, got.favours_claim) == (16.0, 21.0, True)
    assert got.n == 6 and got.mean_difference == pytest.approx(differences.mean())
    assert got.describe() == (f"Wilcoxon W=16 of 21 for the claim, one-sided "
                              f"p={got.p_value:.2g}, n=6")
    # the same tasks, the other claim: the p-values swap and W is the other rank sum
    other = paired_test(before, after, -1.0, opposite="a rise")
    assert (other.statistic, other.p_value, other.opposite_p) == pytest.approx(
        (5.0, away.pvalue, towards.pvalue))
    assert not other.favours_claim and other.goes_opposite
    assert other.describe().endswith(f"; opposite: p={towards.pvalue:.2g} for a rise")
    with pytest.raises(ValueError, match="claimed_sign"):
        paired_test(before, after, 0.0)
    short = paired_test(before[:2], after[:2], -1.0)
    assert math.isnan(short.p_value) and short.n == 2 and not short.defined
    assert not short.favours_claim and not short.goes_opposite
    assert short.mean_difference == pytest.approx(-0.25)
    assert short.describe() == "Wilcoxon undefined (n=2)"
    assert paired_test(before[:3], after[:3], -1.0).defined
    same = paired_test(before[:4], before[:4], -1.0)
    assert (same.statistic, same.p_value, same.n, same.mean_difference) == (0.0, 1.0, 4, 0.0)
    assert same.opposite_p == 1.0 and not same.favours_claim and not same.goes_opposite
    assert math.isnan(paired_test(before[:0], after[:0], 1.0).mean_difference)


def test_ranking_stability_is_the_share_of_resamples_where_the_target_is_first() -> None:
    rng = np.random.default_rng(10)
    per_task = pd.DataFrame({"proportional": rng.normal(0.0, 1.0, 20),
                             "uniform": rng.normal(0.3, 1.0, 20),
                             "inverse": rng.normal(0.6, 1.0, 20)})
    per_task.iloc[3, 2] = np.nan
    complete = per_task.dropna().to_numpy()
    index = np.random.default_rng(0).integers(0, len(complete), size=(2000, len(complete)))
    share = np.mean([np.argmin(complete[row].mean(axis=0)) == 0 for row in index])
    got = ranking_stability(per_task, "proportional")
    assert got.share_first == pytest.approx(share) and 0.0 < share < 1.0
    assert got.observed_first == (np.argmin(complete.mean(axis=0)) == 0)
    assert (got.target, got.n_tasks, got.n_boot) == ("proportional", 19, 2000)
    assert got.describe() == f"first in {share:.0%} of 2000 task resamples (n=19)"
    assert ranking_stability(per_task, "proportional", seed=1).share_first != share
    last = ranking_stability(per_task, "inverse", n_boot=300)
    assert not last.observed_first and last.n_boot == 300
    for missing in (ranking_stability(per_task, "other"),
                    ranking_stability(per_task[["uniform"]], "uniform"),
                    ranking_stability(per_task.iloc[:0], "uniform")):
        assert math.isnan(missing.share_first) and not missing.observed_first


def test_holm_steps_down_in_order_of_the_p_values() -> None:
    got = holm([0.04, 0.001, 0.02, float("nan"), 0.03, 0.5])
    # Sorted 0.001, 0.02, 0.03, 0.04, 0.5 with m = 5: 0.005, 0.08, max(0.08, 0.09) ...
    assert got[1] == pytest.approx(0.005) and got[2] == pytest.approx(0.08)
    assert got[4] == pytest.approx(0.09) and got[0] == pytest.approx(0.09)
    assert got[5] == pytest.approx(0.5) and math.isnan(got[3])
    assert holm([0.3, 0.3]) == pytest.approx([0.6, 0.6])
    assert all(math.isnan(v) for v in holm([float("nan")] * 2)) and holm([]) == []


def test_correlation_difference_edges_of_its_p_value_and_resamples() -> None:
    table = _tasks(10, 0.5, seed=11)
    same = correlation_difference(table, table, "x", "y", n_boot=200, confidence=0.5)
    # Every resampled difference is 0: as many on each side, so p = 1 (not below it).
    assert same.difference == 0.0 and same.p_value == 1.0 and same.confidence == 0.5
    weak, strong = _tasks(30, 3.0, seed=12), _tasks(30, 0.01, seed=13)
    strong.index = weak.index
    gap = correlation_difference(weak, strong, "x", "y", n_boot=400)
    assert gap.ci_low > 0 and gap.p_value == pytest.approx(2 / 400)  # no resample at or below 0
    assert gap.p_rise == pytest.approx(1 / 400) and gap.p_fall == pytest.approx(1.0)
    # A seed whose one resample draws a single task: the only difference is undefined.
    small = _tasks(MIN_PAIRS + 1, 0.3, seed=14)
    seed = next(s for s in range(10_000)
                if len(set(np.random.default_rng(s).integers(0, 4, size=(1, 4))[0])) == 1)
    got = correlation_difference(small, small.iloc[::-1].set_axis(small.index), "x", "y",
                                 n_boot=1, seed=seed, confidence=0.9)
    assert got.defined and got.n == MIN_PAIRS + 1 and got.confidence == 0.9
    assert [math.isnan(v) for v in (got.ci_low, got.ci_high, got.p_value)] == [True] * 3


def test_ranking_stability_reports_its_inputs_when_undefined_and_reads_every_column() -> None:
    per_task = pd.DataFrame({"proportional": [3.0, 3.0, 3.0], "uniform": [1.0, 1.1, 0.9],
                             "inverse": [2.0, 2.0, 2.0]})
    best = ranking_stability(per_task, "uniform", n_boot=50)
    assert best.observed_first and best.share_first == 1.0
    missing = ranking_stability(per_task, "other", n_boot=50)
    assert (missing.target, missing.observed_first, missing.n_tasks, missing.n_boot) == (
        "other", False, 3, 50)
    assert rho_below(_tasks(8, 0.1, seed=15), "x", "y", 0.5, confidence=0.8).confidence == 0.8


def test_rho_within_is_the_two_sided_bootstrap_ci_of_its_definition() -> None:
    table = _tasks(40, 4.0, seed=16)  # ρ near 0.2
    got = rho_within(table, "x", "y", 0.4)  # the defaults: 2,000 draws, seed 0, 95 %
    rhos = _resampled_rhos(table["x"].to_numpy(), table["y"].to_numpy(), 2000, 0)
    rhos = rhos[np.isfinite(rhos)]
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.percentile(rhos, [2.5, 97.5])))
    above = (1 + np.sum(rhos >= 0.4)) / (1 + rhos.size)
    below = (1 + np.sum(rhos <= -0.4)) / (1 + rhos.size)
    assert got.p_value == pytest.approx(min(1.0, 2 * max(above, below)))
    assert got.holds == (got.ci_low > -0.4 and got.ci_high < 0.4)
    assert got.describe() == (f"ρ inside (−0.4, 0.4): bootstrap 95% CI [{got.ci_low:+.2f}, "
                              f"{got.ci_high:+.2f}], p={got.p_value:.2g}")


def test_rho_within_a_strong_negative_correlation_is_not_weak_and_a_null_one_is() -> None:
    strong = _tasks(30, 0.15, seed=17).assign(y=lambda frame: -frame["y"])
    assert _rho(strong["x"], strong["y"]) < -0.9  # the ρ = −0.96 passed as weak
    negative = rho_within(strong, "x", "y", 0.4)
    assert not negative.holds and negative.ci_high < -0.4 and negative.p_value == 1.0
    rng = np.random.default_rng(18)
    null = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    inside = rho_within(null, "x", "y", 0.4)
    assert inside.holds and -0.4 < inside.ci_low < inside.ci_high < 0.4
    assert inside.p_value < 0.05
    nan_result = rho_within(null.iloc[:2], "x", "y", 0.4)
    assert math.isnan(nan_result.p_value) and not nan_result.holds
    assert math.isnan(rho_within(null, "x", "y", 0.4, n_boot=0).ci_low)


def test_one_sided_p_halves_a_symmetric_two_sided_p_in_the_claimed_direction() -> None:
    x = np.arange(20.0)
    y = x + np.random.default_rng(19).normal(0, 6, 20)
    two_sided = stats.spearmanr(x, y)
    rho = float(two_sided.statistic)
    assert rho > 0
    for sign, alternative in ((1.0, "greater"), (-1.0, "less")):
        assert one_sided_p(float(two_sided.pvalue), rho, sign) == pytest.approx(
            stats.spearmanr(x, y, alternative=alternative).pvalue)
    assert math.isnan(one_sided_p(float("nan"), rho, 1.0))


def test_rho_within_runs_from_three_tasks_and_one_draw_and_says_its_bound_when_undefined(
) -> None:
    """§5.1's "weak" test mirrors rho_below's edges: three tasks and a single resample are
    enough; below that it is undefined yet still names the bound and confidence it tested."""
    three = rho_within(_tasks(MIN_PAIRS, 0.1, seed=8), "x", "y", 0.4, n_boot=50)
    assert not math.isnan(three.ci_low) and not math.isnan(three.p_value)
    one_draw = rho_within(_tasks(30, 0.5, seed=9), "x", "y", 0.4, n_boot=1)
    assert one_draw.ci_low == one_draw.ci_high and not math.isnan(one_draw.ci_low)
    for undefined in (rho_within(_tasks(2, 0.1, seed=8), "x", "y", 0.3, confidence=0.9),
                      rho_within(_tasks(30, 0.5, seed=9), "x", "y", 0.3, n_boot=0,
                                 confidence=0.9)):
        assert (undefined.bound, undefined.confidence) == (0.3, 0.9) and not undefined.holds
        assert undefined.describe() == ("ρ inside (−0.3, 0.3): bootstrap 90% CI [+nan, +nan], "
                                        "p=nan")
