"""Planted cases for every kind of verdict test: noise in the right direction is ≈, a real
effect is ✓, and a correlation is "weak" only when it is weak."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from itransfer.analysis.run import analyse
from itransfer.analysis.significance import (
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
    FindingResult,
    evaluate_findings,
)
from itransfer.schema import RunManifest

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
    assert result.run_p is not None and result.run_p > 0.5
    assert "Wilcoxon W=" in result.test


def test_a_real_paired_effect_reproduces() -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(4, 6, 20)
    result = transfer_findings(before, before - 0.5 + rng.normal(0, 0.1, 20))[
        "3.1-it-improves-icl"]
    assert result.verdict == REPRODUCES and result.run_p is not None and result.run_p < 1e-3
    assert transfer_findings(before, before + 0.5)["3.1-it-improves-icl"].verdict == FAILS


def test_paired_test_matches_a_hand_case() -> None:
    test = paired_test(pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd")),
                       pd.Series([2.0, 4.0, 6.0, 8.0, 9.0], index=list("abcde")))
    # differences 1, 2, 3, 4 (task e has no pair): all positive, W = 0, exact p = 2/16
    assert (test.n, test.statistic, test.mean_difference) == (4, 0.0, 2.5)
    assert test.p_value == pytest.approx(0.125)


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
    assert "paired bootstrap" in weak["5.1-late-phase-correlation"].test
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
    worse = dict(icl)
    worse[300] = icl[200] + 1.0
    assert trajectory_findings(worse, ft)["5.1-icl-improves-throughout"].verdict == PARTLY


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
