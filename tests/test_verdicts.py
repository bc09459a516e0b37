"""Planted cases for every kind of verdict test: noise in the right direction is ≈, a real
effect is ✓, and a correlation is "weak" only when it is weak."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from itransfer.analysis.block_bootstrap import Robustness
from itransfer.analysis.correlations import Correlation
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.rows import ROUGE_RECALL
from itransfer.analysis.run import analyse
from itransfer.analysis.significance import (
    PairedTest,
    correlation_difference,
    holm,
    paired_test,
    ranking_stability,
)
from itransfer.analysis.verdicts import (
    FAILS,
    NOT_SIGNIFICANT,
    PARTLY,
    REPRODUCES,
    UNDEFINED,
    BootstrapOptions,
    FindingResult,
    Parts,
    adjust_for_multiplicity,
    correlation_result,
    evaluate_findings,
    holm_summary,
    opposed,
    passes,
    registered_findings,
    robustness_summary,
    verdict,
    with_robustness,
)
from itransfer.config.paper_constants import PAPER_NUM_UNSEEN_TASKS, PAPER_P_VALUE_TASKS

STEPS = (0, 100, 200, 300)  # 0 is the pre-trained model; the phases split at 100


def balanced_noise(n: int) -> np.ndarray:
    """Per-task changes whose mean is slightly negative but whose signed ranks balance:
    magnitudes falling from 1 with alternating signs, the largest negative (Wilcoxon p ≈ 0.9)."""
    return np.array([(-1) ** (index + 1) * (1 - index / (2 * n)) for index in range(n)])


def _row(model: str, step: int, task: str, method: str, value: float, **extra: Any
         ) -> dict[str, Any]:
    return {"run": "r", "model": model, "checkpoint_step": step, "task": task,
            "category": "c", "split": "test", "method": method,
            "context": "exemplars" if method == "icl" else "none",
            "shots": 3 if method == "icl" else 5, "seed": 0, "metric": "loss",
            "value": float(value), "n": 10, "config_hash": "h", "cell": "c", **extra}


def trajectory_findings(icl: dict[int, np.ndarray], finetune: dict[int, np.ndarray]
                        ) -> dict[str, FindingResult]:
    """§5.1's findings on a planted trajectory (per step, per task ICL and 5-shot FT loss)."""
    rows = []
    for step in STEPS:
        model = "pretrained" if step == 0 else "it"
        for index, (icl_loss, ft_loss) in enumerate(zip(icl[step], finetune[step], strict=True)):
            rows += [_row(model, step, f"t{index:03d}", "icl", icl_loss),
                     _row(model, step, f"t{index:03d}", "finetune", ft_loss)]
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"},
                   "it": {"final_step": 300, "trajectory_steps": list(STEPS[1:])}},
        "sections": {"trajectory": {"model": "it", "phase_split_step": 100, "shots": 5}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=1000)
    return {result.finding.id: result for result in evaluate_findings(analysis, n_boot=1000)}


def planted_phases(rng: np.random.Generator, n: int, early_tie: float, late_tie: float
                   ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per-task FT and ICL changes that share a component with weight ``*_tie`` per phase.

    ICL falls and FT rises then falls, by margins far above the noise, so the direction
    findings hold; only the phase correlations differ between plants.
    """
    base = rng.uniform(2, 4, n)
    icl, ft = {0: base + 2.0}, {0: base.copy()}

    def phase(tie: float) -> tuple[np.ndarray, np.ndarray]:
        shared = rng.normal(0, 1, n)
        return (tie * shared + np.sqrt(1 - tie**2) * rng.normal(0, 1, n),
                tie * shared + np.sqrt(1 - tie**2) * rng.normal(0, 1, n))

    icl_change, ft_change = phase(early_tie)
    icl[100], ft[100] = icl[0] - 3 + 0.2 * icl_change, ft[0] + 3 + 0.2 * ft_change
    for step in (200, 300):
        icl_change, ft_change = phase(late_tie)
        icl[step] = icl[step - 100] - 3 + 0.2 * icl_change
        ft[step] = ft[step - 100] - 3 + 0.2 * ft_change
    return icl, ft


# --- paired losses (Wilcoxon) ---------------------------------------------------------------


def transfer_findings(pretrained_icl: np.ndarray, tuned_icl: np.ndarray
                      ) -> dict[str, FindingResult]:
    rows = []
    for index, (before, after) in enumerate(zip(pretrained_icl, tuned_icl, strict=True)):
        rows += [_row("pretrained", 0, f"t{index}", "icl", before),
                 _row("it", 10, f"t{index}", "icl", after)]
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"}, "it": {"final_step": 10}},
        "sections": {"transfer": {"instruction_tuned": "it"}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    return {result.finding.id: result for result in evaluate_findings(analysis, n_boot=10)}


def test_paired_noise_in_the_right_direction_is_not_significant() -> None:
    before = np.full(20, 5.0)
    after = before + balanced_noise(20)  # mean −0.02, as many tasks better as worse
    result = transfer_findings(before, after)["3.1-it-improves-icl"]
    assert result.verdict == NOT_SIGNIFICANT
    # one-sided for "IT lower": the ranks lean that way by 110 to 100, p ≈ 0.43
    assert result.run_p == pytest.approx(
        stats.wilcoxon(after - before, alternative="less").pvalue)
    assert 0.25 < result.run_p < 0.5
    assert "Wilcoxon W=110 of 210 for the claim" in result.test
    assert "opposite" not in result.test


def test_a_real_paired_effect_reproduces() -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(4, 6, 20)
    result = transfer_findings(before, before - 0.5 + rng.normal(0, 0.1, 20))[
        "3.1-it-improves-icl"]
    assert result.verdict == REPRODUCES and result.run_p is not None and result.run_p < 1e-3
    assert transfer_findings(before, before + 0.5)["3.1-it-improves-icl"].verdict == FAILS


def test_paired_test_matches_a_hand_case() -> None:
    before = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    after = pd.Series([2.0, 4.0, 6.0, 8.0, 9.0], index=list("abcde"))
    # differences 1, 2, 3, 4 (task e has no pair): all positive. Claimed rise: W = 1+2+3+4 =
    # 10 of 10, exact one-sided p = 1/16 (only the all-positive sign pattern is as extreme).
    rise = paired_test(before, after, 1.0)
    assert (rise.n, rise.statistic, rise.rank_total, rise.mean_difference) == (4, 10.0, 10.0,
                                                                               2.5)
    assert rise.p_value == pytest.approx(1 / 16) and rise.opposite_p == pytest.approx(1.0)
    assert rise.favours_claim and "opposite" not in rise.describe()
    # Claimed fall on the same tasks: W = 0, p = 1, and the evidence is for the other way.
    fall = paired_test(before, after, -1.0, opposite="a rise")
    assert (fall.statistic, fall.p_value) == (0.0, pytest.approx(1.0))
    assert fall.opposite_p == pytest.approx(1 / 16) and not fall.favours_claim
    assert fall.describe().endswith("; opposite: p=0.062 for a rise")


def outlier_plant(n: int = 15, claimed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pre-trained and IT ICL losses: n − 1 tasks move a little one way (IT lower when
    ``claimed``), one outlier moves far the other way and sets the mean."""
    before = np.linspace(4.0, 6.0, n)
    small = 0.05 + 0.01 * np.arange(n - 1)  # distinct sizes, so the ranks have no ties
    sign = -1.0 if claimed else 1.0
    after = before + np.append(sign * small, -sign * 5.0)
    return before, after


def test_the_verdict_follows_the_ranks_not_an_outliers_mean() -> None:
    before, after = outlier_plant(claimed=True)
    assert np.mean(after - before) > 0  # the mean says IT is worse
    result = transfer_findings(before, after)["3.1-it-improves-icl"]
    # 14 of 15 tasks lower: the one-sided signed-rank test for "IT lower" rejects
    expected = stats.wilcoxon(after - before, alternative="less").pvalue
    assert result.run_p == pytest.approx(expected) and expected < 0.05
    assert result.verdict == REPRODUCES
    assert "Wilcoxon W=105 of 120 for the claim" in result.test


def test_the_reverse_outlier_case_is_not_evidence_for_the_claim() -> None:
    before, after = outlier_plant(claimed=False)
    assert np.mean(after - before) < 0  # the mean says IT is better, as claimed
    result = transfer_findings(before, after)["3.1-it-improves-icl"]
    # the ranks say IT is worse on 14 of 15 tasks: significantly opposite, so ✗, and the
    # p-value behind the verdict is the claim's (near 1), not the opposite's
    assert result.verdict == FAILS
    assert result.run_p is not None and result.run_p > 0.95
    opposite = stats.wilcoxon(after - before, alternative="greater").pvalue
    assert opposite < 0.05
    assert f"opposite: p={opposite:.2g} for IT worse" in result.test


# --- two correlations on the same tasks (paired bootstrap) ----------------------------------


def test_correlation_difference_separates_noise_from_a_real_gap() -> None:
    rng = np.random.default_rng(1)
    n = 80

    def table(tie: float) -> pd.DataFrame:
        shared = rng.normal(0, 1, n)
        return pd.DataFrame({"x": tie * shared + np.sqrt(1 - tie**2) * rng.normal(0, 1, n),
                             "y": tie * shared + np.sqrt(1 - tie**2) * rng.normal(0, 1, n)},
                            index=[f"t{i}" for i in range(n)])

    real = correlation_difference(table(0.2), table(0.95), "x", "y", n_boot=1000)
    assert real.difference > 0.4 and real.ci_low > 0 and real.p_value < 0.01
    same = correlation_difference(table(0.9), table(0.9), "x", "y", n_boot=1000)
    assert same.ci_low < 0 < same.ci_high and same.p_value > 0.05


def test_early_phase_is_weak_only_when_weak() -> None:
    rng = np.random.default_rng(2)
    weak = trajectory_findings(*planted_phases(rng, 60, early_tie=0.0, late_tie=0.95))
    assert weak["5.1-early-phase-correlation"].verdict == REPRODUCES
    assert weak["5.1-late-phase-correlation"].verdict == REPRODUCES
    late = weak["5.1-late-phase-correlation"]
    assert "paired bootstrap" in late.test and "for a rise" in late.test
    assert "opposite" not in late.test
    # the case: early ρ ≈ 0.89 under late ρ ≈ 0.92 is neither weak nor a difference
    strong = trajectory_findings(*planted_phases(rng, 15, early_tie=0.95, late_tie=0.97))
    assert strong["5.1-early-phase-correlation"].verdict == FAILS
    assert strong["5.1-late-phase-correlation"].verdict in (NOT_SIGNIFICANT, FAILS)
    # below the bound on a handful of tasks: the direction holds, nothing is shown
    few = trajectory_findings(*planted_phases(np.random.default_rng(5), 8, 0.0, 0.3))
    early = few["5.1-early-phase-correlation"]
    assert early.correlation is not None and early.correlation.rho < 0.4
    assert early.verdict == NOT_SIGNIFICANT


# --- "at every checkpoint" ------------------------------------------------------------------


def test_every_checkpoint_claims_need_every_test() -> None:
    rng = np.random.default_rng(3)
    icl, ft = planted_phases(rng, 30, 0.0, 0.9)
    clear = trajectory_findings(icl, ft)
    assert clear["5.1-icl-improves-throughout"].verdict == REPRODUCES
    assert clear["5.1-icl-improves-throughout"].test.count("Wilcoxon W=") == 3
    assert clear["5.1-forgetting-then-recovery"].verdict == REPRODUCES
    # the last interval improves ICL by noise only: still lower on average, not shown
    noisy = dict(icl)
    noisy[300] = icl[200] + balanced_noise(30)
    result = trajectory_findings(noisy, ft)["5.1-icl-improves-throughout"]
    assert result.verdict == NOT_SIGNIFICANT and result.run_p is not None
    assert result.run_p > 0.05  # the largest of the three p-values
    # ICL rises by noise in the last interval: 2 of 3 intervals fall, none is significantly
    # opposite, so partly
    rising = dict(icl)
    rising[300] = icl[200] - balanced_noise(30)
    assert trajectory_findings(rising, ft)["5.1-icl-improves-throughout"].verdict == PARTLY
    # ICL rises clearly in the last interval: still 2 of 3, but a significant rise forbids ◐
    # (this was ◐ under the rule "any part holds")
    worse = dict(icl)
    worse[300] = icl[200] + 1.0
    result = trajectory_findings(worse, ft)["5.1-icl-improves-throughout"]
    assert result.verdict == FAILS and "opposite: p=" in result.test
    # the report's test column: each interval's test, the rising one named as a rise
    assert result.test.startswith("Wilcoxon signed-rank over tasks, one-sided, at each step "
                                  "(0→100: Wilcoxon W=")
    assert re.search(r"; 200→300: Wilcoxon W=\S+ of \S+ for the claim, one-sided p=\S+, n=30; "
                     r"opposite: p=\S+ for a rise\)$", result.test), result.test
    # only 1 of 3 intervals falls, the others rise by noise: a minority is not ◐
    minority = dict(icl)
    minority[200] = icl[100] - balanced_noise(30)
    minority[300] = minority[200] - balanced_noise(30)
    assert trajectory_findings(minority, ft)["5.1-icl-improves-throughout"].verdict == FAILS


# --- rankings ---------------------------------------------------------------------------------


def test_ranking_stability_separates_a_clear_winner_from_a_coin_toss() -> None:
    rng = np.random.default_rng(4)
    base = rng.uniform(1, 3, 40)
    clear = pd.DataFrame({"proportional": base, "uniform": base + 0.3 + rng.normal(0, 0.05, 40)})
    assert ranking_stability(clear, "proportional", n_boot=500).share_first == 1.0
    toss = pd.DataFrame({"proportional": base + rng.normal(0, 0.5, 40),
                         "uniform": base + rng.normal(0, 0.5, 40)})
    gap = toss["proportional"].mean() - toss["uniform"].mean()
    toss["proportional"] -= gap + 0.01  # first by a hair
    stability = ranking_stability(toss, "proportional", n_boot=500)
    assert stability.observed_first and 0.3 < stability.share_first < 0.95


# --- multiplicity -----------------------------------------------------------------------------


def test_holm_matches_hand_values() -> None:
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, float("nan")])[1])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# --- the symbols: ◐ needs a majority and nothing significantly opposite ----------------------


def test_partly_needs_a_majority_of_parts_and_none_significantly_opposite() -> None:
    assert verdict([True, True, False], [True, True, False]) == PARTLY
    assert verdict([True, True, False], [True, True, False], [False, False, True]) == FAILS
    assert verdict([True, False], [True, False]) == FAILS  # half is not a majority
    assert verdict([True, False, False], [True, False, False]) == FAILS
    assert verdict([True, True], [True, True]) == REPRODUCES
    assert verdict([True, True], [True, False]) == NOT_SIGNIFICANT
    # every mean goes the claimed way but a test is significant the other way: ✗
    assert verdict([True, True], [False, False], [True, False]) == FAILS
    assert verdict([], []) == UNDEFINED


def test_parts_gathers_paired_tests_by_their_ranks() -> None:
    before, after = outlier_plant(claimed=True)
    index = [f"t{i}" for i in range(before.size)]
    towards = paired_test(pd.Series(before, index), pd.Series(after, index), -1.0)
    away = paired_test(pd.Series(before, index), pd.Series(after, index), 1.0)
    parts = Parts()
    parts.add_paired(towards, fallback=False)  # the mean says no; the ranks say yes
    parts.add_paired(away, fallback=True)
    assert parts.directions == [True, False] and parts.significant == [True, False]
    assert parts.opposite == [False, True] and parts.verdict() == FAILS
    assert parts.largest_p() == pytest.approx(away.p_value)
    undefined_test = paired_test(pd.Series([1.0]), pd.Series([0.0]), -1.0)
    few = Parts()
    few.add_paired(undefined_test, fallback=True)  # too few tasks to rank: the means decide
    assert few.directions == [True] and few.verdict() == NOT_SIGNIFICANT
    assert few.largest_p() is None


# --- "weak" means a CI inside (−0.4, 0.4) ----------------------------------------------------


def test_a_strong_negative_early_phase_is_not_weak() -> None:
    rng = np.random.default_rng(6)
    icl, ft = planted_phases(rng, 40, early_tie=0.98, late_tie=0.9)
    icl[100] = 2 * icl[0] - icl[100] - 6  # the early ICL change mirrored: ρ_early ≈ −0.96
    result = trajectory_findings(icl, ft)["5.1-early-phase-correlation"]
    assert result.correlation is not None and result.correlation.rho < -0.9
    assert result.verdict == FAILS and "ρ inside (−0.4, 0.4)" in result.test
    assert "late − early" not in result.test  # no second route to "weak"


# --- §5.2: "improves ICL" is judged where the paper claims it, at the end ----------------------


def mixing_findings(gaps: dict[int, np.ndarray]) -> dict[str, FindingResult]:
    """§5.2's findings with per-task (with − without mixing) ICL and FT gaps at each step."""
    rows = []
    n = len(next(iter(gaps.values())))
    for step, gap in gaps.items():
        for index in range(n):
            for model, shift in (("without", 0.0), ("with", gap[index])):
                rows += [_row(model, step, f"t{index:03d}", "icl", 4.0 + index / n + shift),
                         _row(model, step, f"t{index:03d}", "finetune", 3.0 + shift)]
    for index in range(n):
        rows += [_row("pretrained", 0, f"t{index:03d}", "icl", 5.0),
                 _row("pretrained", 0, f"t{index:03d}", "finetune", 3.0)]
    steps = sorted(gaps)
    model = {"final_step": steps[-1], "trajectory_steps": steps}
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"}, "with": model, "without": model},
        "sections": {"mixing": {"with": "with", "without": "without", "shots": 5}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    return {result.finding.id: result for result in evaluate_findings(analysis, n_boot=10)}


def test_mixing_improves_icl_is_judged_at_the_end_of_training() -> None:
    rng = np.random.default_rng(7)
    worse, better = rng.uniform(0.2, 0.4, 12), -rng.uniform(0.2, 0.4, 12)
    # worse with mixing at the first two steps, better at the last: the claim holds
    result = mixing_findings({100: worse, 200: worse, 300: better})["5.2-mixing-improves-icl"]
    assert "end of training" in result.finding.claim
    assert result.verdict == REPRODUCES and "step 300" in result.test
    assert "step 100" not in result.test
    # better until the end, worse at it: it does not
    late = mixing_findings({100: better, 200: better, 300: worse})
    assert late["5.2-mixing-improves-icl"].verdict == FAILS
    # forgetting is claimed "throughout": 2 of 3 steps lower and one significantly higher
    assert late["5.2-mixing-reduces-forgetting"].verdict == FAILS


# --- the paper's own n -----------------------------------------------------------------------


def spearman_p(rho: float, n: int) -> float:
    """Spearman's two-sided p-value by its t approximation (scipy's), for ρ > 0."""
    t = rho * np.sqrt((n - 2) / (1 - rho**2))
    return float(2 * stats.t.sf(t, n - 2))


@pytest.mark.parametrize(("rho", "paper_p"), [(0.936, 4.96e-42), (0.705, 6.31e-15),
                                               (0.245, 0.019)])
def test_the_papers_p_values_imply_91_tasks_not_93(rho: float, paper_p: float) -> None:
    """The paper's ρ is rounded to 3 decimals: its p must lie between the p-values of
    ρ ± 0.0005. At n = 91 it does for all three, at n = 93 (the stated count) for none."""
    def covers(n: int) -> bool:
        return spearman_p(rho + 0.0005, n) <= paper_p <= spearman_p(rho - 0.0005, n)

    assert covers(PAPER_P_VALUE_TASKS) and PAPER_P_VALUE_TASKS == 91
    assert not covers(PAPER_NUM_UNSEEN_TASKS) and PAPER_NUM_UNSEEN_TASKS == 93
    quoted = [finding for finding in registered_findings() if finding.paper_p == paper_p]
    assert len(quoted) == 1
    assert "93 tasks (its p-values imply 91)" in quoted[0].paper_text


# --- correlations claimed positive: Spearman's test one-sided --------------------------------


def test_a_negative_correlation_is_not_shown_as_evidence_for_a_positive_one() -> None:
    finding = next(f for f in registered_findings() if f.id == "3.1-ft-icl-correlation")
    x = np.arange(30.0)
    y = -x + np.random.default_rng(8).normal(0, 8, 30)
    two_sided = stats.spearmanr(x, y)
    correlation = Correlation(rho=float(two_sided.statistic), p_value=float(two_sided.pvalue),
                              n=30, ci_low=-1.0, ci_high=0.0)
    assert correlation.rho < 0 and correlation.p_value < 0.01
    result = correlation_result(finding, correlation)
    greater = stats.spearmanr(x, y, alternative="greater").pvalue
    less = stats.spearmanr(x, y, alternative="less").pvalue
    assert result.verdict == FAILS and result.run_p == pytest.approx(greater) and greater > 0.99
    assert f"one-sided p={greater:.2g} for ρ > 0" in result.test
    assert f"opposite: p={less:.2g} for ρ < 0" in result.test
    positive = correlation_result(finding, Correlation(rho=-correlation.rho,
                                                       p_value=correlation.p_value, n=30,
                                                       ci_low=0.0, ci_high=1.0))
    assert positive.verdict == REPRODUCES and positive.run_p == pytest.approx(less)
    assert "opposite" not in positive.test


# --- the report's sentences on multiplicity and on the category bootstrap --------------------


def _judged(finding_id: str, found: str, p: float | None, *, ours: bool = False,
            survives: bool | None = None) -> FindingResult:
    finding = next(f for f in registered_findings() if f.id == finding_id)
    return FindingResult(dataclasses.replace(finding, ours=ours), found, 0.0, p, "",
                         robustness=None if survives is None else Robustness(survives, "…"))


def test_holm_adjusts_the_papers_findings_only_and_counts_the_surviving_checkmarks() -> None:
    results = adjust_for_multiplicity([
        _judged("3.1-it-improves-icl", REPRODUCES, 0.01),
        _judged("3.1-ft-icl-correlation", REPRODUCES, 0.03),
        _judged("3.1-it-harms-transfer", FAILS, 0.2),
        _judged("3.1-it-harms-transfer-rouge", UNDEFINED, None),
        _judged("3.1-it-harms-transfer-within-context", REPRODUCES, 0.001, ours=True)])
    # Holm over the three paper p-values: 3 × 0.01, max(that, 2 × 0.03), max(that, 0.2)
    assert [result.holm_p for result in results] == pytest.approx([0.03, 0.06, 0.2, None, None])
    assert holm_summary(results) == (
        "Multiplicity: 3 findings rest on a p-value; after Holm's adjustment across them, "
        "1 of the 2 ✓ verdicts keep p < 0.05.")


def test_a_holm_p_of_exactly_alpha_does_not_keep_its_checkmark() -> None:
    results = adjust_for_multiplicity([_judged("3.1-it-improves-icl", REPRODUCES, 0.025),
                                       _judged("3.1-ft-icl-correlation", FAILS, 0.5)])
    assert results[0].holm_p == 0.05
    assert holm_summary(results).endswith("0 of the 1 ✓ verdicts keep p < 0.05.")


def test_the_robustness_sentence_names_the_checkmarks_that_do_not_survive() -> None:
    results = [_judged("3.1-it-improves-icl", REPRODUCES, 0.01, survives=True),
               _judged("3.1-ft-icl-correlation", REPRODUCES, 0.01, survives=False),
               _judged("3.1-it-harms-transfer", REPRODUCES, 0.01, survives=None),
               _judged("3.1-it-harms-transfer-rouge", FAILS, 0.5, survives=False)]
    assert robustness_summary(results) == (
        "Category bootstrap (categories, then tasks within them, resampled): 1 of the 2 ✓ "
        "verdicts it could recheck survive it; not: 3.1-ft-icl-correlation.")
    both = [*results, _judged("3.1-it-harms-transfer-rouge", REPRODUCES, 0.01, survives=False)]
    assert robustness_summary(both).endswith(
        "1 of the 3 ✓ verdicts it could recheck survive it; not: 3.1-ft-icl-correlation, "
        "3.1-it-harms-transfer-rouge.")
    assert robustness_summary(results[:1]).endswith(
        "1 of the 1 ✓ verdicts it could recheck survive it.")
    assert robustness_summary(results[2:]) == (
        "Category bootstrap: no ✓ verdict could be rechecked (tasks in fewer than two "
        "categories, or none recorded).")
    assert robustness_summary(results[3:]) == "Category bootstrap: no ✓ verdict to recheck."


def test_a_paired_test_at_exactly_alpha_neither_passes_nor_opposes() -> None:
    at_alpha = PairedTest(10.0, 0.05, 8, -0.1, -1.0, 0.05, 36.0)
    assert not passes(at_alpha) and not opposed(at_alpha)
    below = dataclasses.replace(at_alpha, p_value=0.0499, opposite_p=0.0499)
    assert passes(below) and opposed(below)


def test_a_correlation_of_exactly_zero_does_not_reproduce_a_positive_one() -> None:
    finding = next(f for f in registered_findings() if f.id == "3.1-ft-icl-correlation")
    zero = Correlation(rho=0.0, p_value=1.0, n=30, ci_low=-0.3, ci_high=0.3)
    result = correlation_result(finding, zero)
    assert result.verdict == FAILS and result.run_p == pytest.approx(0.5)


def test_transfer_findings_say_what_is_missing() -> None:
    """ICL of the IT model only, and IT fine-tuned with exemplars only where PT was without
    context: §3.1's ICL finding and our within-context comparison cannot be judged, and the
    findings table says why."""
    rows = []
    for index in range(6):
        task = f"t{index}"
        rows += [_row("it", 10, task, "icl", 3.0 + index)]
        for metric, value in (("loss", 1.0), (ROUGE_RECALL, 40.0)):
            rows += [_row("pretrained", 0, task, "finetune", value + index, metric=metric),
                     _row("it", 10, task, "finetune", value + index + 0.5, metric=metric,
                          context="exemplars")]
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"}, "it": {"final_step": 10}},
        "sections": {"transfer": {"instruction_tuned": "it"}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    results = {result.finding.id: result for result in evaluate_findings(analysis, n_boot=10)}
    icl = results["3.1-it-improves-icl"]
    assert (icl.verdict, icl.run_text) == (UNDEFINED, "ICL loss missing for one of the two models")
    within = results["3.1-it-harms-transfer-within-context"]
    assert (within.verdict, within.run_text) == (
        UNDEFINED, "no fine-tuning comparison of the two models to judge (a model or a context "
                   "missing)")
    assert results["3.1-it-harms-transfer"].verdict != UNDEFINED


def test_it_harm_is_rechecked_by_category_in_the_claimed_direction() -> None:
    """Both models fine-tuned without context and with exemplars, IT's loss 1.0 higher on
    every task of three categories: the harm survives the category bootstrap (a loss harm
    is IT higher), and our within-context comparison sets exemplars against exemplars only."""
    rng = np.random.default_rng(5)
    rows = []
    for index in range(12):
        task, category = f"t{index:02d}", f"cat{index % 3}"
        for context in ("none", "exemplars"):
            for metric, base, harm in (("loss", 2.0, 1.0), (ROUGE_RECALL, 40.0, -5.0)):
                value = base + index + rng.normal(0, 0.05)
                rows += [_row("pretrained", 0, task, "finetune", value, metric=metric,
                              context=context, category=category),
                         _row("it", 10, task, "finetune", value + harm, metric=metric,
                              context=context, category=category)]
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"}, "it": {"final_step": 10}},
        "sections": {"transfer": {"instruction_tuned": "it"}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=100)
    results = {result.finding.id: result for result in evaluate_findings(analysis, n_boot=100)}
    harm = results["3.1-it-harms-transfer"]
    assert harm.verdict == REPRODUCES
    assert harm.robustness is not None and harm.robustness.survives is True
    assert harm.robustness.text.startswith("IT none vs PT none (loss): IT − PT=+1.000")
    # seeded: the same run gives the same report, bootstrap intervals included
    again = with_robustness(dataclasses.replace(harm, robustness=None), analysis,
                            BootstrapOptions(n_boot=100, seed=0))
    assert again.robustness == harm.robustness
    within = results["3.1-it-harms-transfer-within-context"]
    assert within.verdict == REPRODUCES
    assert "IT exemplars vs PT exemplars" in within.run_text
    assert "IT none vs PT none" not in within.run_text


def test_the_trajectory_is_rechecked_by_category_interval_by_interval() -> None:
    """§5.1 on 30 tasks in three categories, with ICL falling throughout and FT rising then
    falling by margins far above the noise: both direction claims survive the category
    bootstrap (FT up in the first phase, down after it); the correlations are shown by name."""
    icl, ft = planted_phases(np.random.default_rng(3), 30, early_tie=0.0, late_tie=0.9)
    rows = []
    for step in STEPS:
        model = "pretrained" if step == 0 else "it"
        for index, (icl_loss, ft_loss) in enumerate(zip(icl[step], ft[step], strict=True)):
            task, category = f"t{index:03d}", f"cat{index % 3}"
            rows += [_row(model, step, task, "icl", icl_loss, category=category),
                     _row(model, step, task, "finetune", ft_loss, category=category)]
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"},
                   "it": {"final_step": 300, "trajectory_steps": list(STEPS[1:])}},
        "sections": {"trajectory": {"model": "it", "phase_split_step": 100, "shots": 5}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=200)
    results = {result.finding.id: result for result in evaluate_findings(analysis, n_boot=200)}
    forgetting = results["5.1-forgetting-then-recovery"].robustness
    assert forgetting is not None and forgetting.survives is True
    assert re.fullmatch(r"0→100=\+3\.\d+, .*; 100→300=-6\.\d+, .*", forgetting.text)
    late = results["5.1-late-phase-correlation"].robustness
    assert late is not None and late.text.startswith("ρ_late=+0.646, category bootstrap")
    assert "; partial ρ_late: category bootstrap undefined" in late.text
    early = results["5.1-early-phase-correlation"].robustness
    assert early is not None and "; partial ρ_early: category bootstrap undefined" in early.text


def _forgetting(rows: list[dict[str, Any]]) -> FindingResult:
    manifest = RunManifest.model_validate({
        "models": {"pretrained": {"kind": "pretrained"},
                   "it": {"final_step": 300, "trajectory_steps": list(STEPS[1:])}},
        "sections": {"trajectory": {"model": "it", "phase_split_step": 100, "shots": 5}}})
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    return {result.finding.id: result
            for result in evaluate_findings(analysis, n_boot=10)}["5.1-forgetting-then-recovery"]


def test_forgetting_on_two_tasks_goes_by_the_means_and_needs_the_split_step() -> None:
    """Two tasks are too few to rank: FT up 1.0 then down 2.0 on both holds by the means (≈,
    no p-value). Without FT at the split step there is no first phase to judge."""
    ft = {0: 2.0, 100: 3.0, 200: 2.5, 300: 1.0}
    rows = [_row("pretrained" if step == 0 else "it", step, f"t{index}", method,
                 value + index)
            for step, value in ft.items() for index in range(2)
            for method in ("finetune", "icl")]
    two = _forgetting(rows)
    assert (two.verdict, two.run_p) == (NOT_SIGNIFICANT, None)
    assert two.run_value == pytest.approx(1.0)
    no_split = _forgetting([row for row in rows if not (row["method"] == "finetune"
                                                        and row["checkpoint_step"] == 100)])
    assert (no_split.verdict, no_split.run_text) == (
        UNDEFINED, "needs FT loss at step 0, the split step and a later step")
