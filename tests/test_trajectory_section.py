"""§5.1's phase findings: the late-phase rise's bootstrap settings, and the category-block
rechecks' decision rules at their bounds (issue 27's surviving mutants of
sections/trajectory.py)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from itransfer.analysis import block_bootstrap as block_module
from itransfer.analysis.block_bootstrap import BlockBootstrap, correlation_difference_statistic
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections import trajectory as trajectory_module
from itransfer.analysis.verdicts import BootstrapOptions, evaluate_findings
from test_analysis import build_rows, manifest_dict
from test_report_robustness import record_bootstrap_settings

LATE = "5.1-late-phase-correlation"


def trajectory_analysis() -> RunAnalysis:
    """The synthetic miniature's §5.1 alone (8 tasks): a weak early phase, a tight late one."""
    manifest = RunManifest.model_validate(manifest_dict(sections={"trajectory"}))
    return analyse(pd.DataFrame(build_rows(num_tasks=8)), manifest, n_boot=20)


def test_the_late_phases_rise_is_bootstrapped_with_the_reports_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ρ_late − ρ_early (the late-phase finding's second test) draws the report's number of
    resamples from the report's seed: the same seed gives the same test text, another seed
    another, and with 37 resamples a rise seen in all of them has one-sided p = 1/37."""
    calls = record_bootstrap_settings(monkeypatch, trajectory_module, "correlation_difference")
    analysis = trajectory_analysis()

    def late_test(seed: int) -> str:
        results = evaluate_findings(analysis, n_boot=37, seed=seed)
        return next(result.test for result in results if result.finding.id == LATE)

    first = late_test(11)
    assert calls == [(37, 11)]
    assert f"one-sided p={1 / 37:.2g} for a rise" in first
    assert late_test(11) == first
    assert late_test(12) != first
    assert calls[-1] == (37, 12)


def with_block_ci(low: float, high: float, *, of: Any = None) -> Any:
    """A stand-in for block_bootstrap whose CI is [low, high] (for statistic ``of`` only, when
    given; any other statistic gets a CI well above 0)."""

    def stand_in(values: pd.DataFrame, categories: pd.Series, statistic: Any, *,
                 n_boot: int = 2000, seed: int = 0, **_: Any) -> BlockBootstrap:
        chosen = (low, high) if of is None or statistic is of else (0.5, 0.9)
        return BlockBootstrap(sum(chosen) / 2, *chosen, 0.05, 0.5, len(values), 4, n_boot)

    return stand_in


@pytest.mark.parametrize(("low", "high", "survives"), [
    (-0.39, 0.39, True),  # inside (−0.4, 0.4)
    (-0.4, 0.39, False),  # touches the lower bound: not inside
    (-0.39, 0.4, False),  # touches the upper bound
    (-0.5, 0.39, False),  # reaches below it
    (-0.39, 0.5, False),  # reaches above it
    (0.5, 0.9, False),  # a strong correlation
    (math.nan, math.nan, None),  # undefined: nothing to recheck
])
def test_the_early_phase_survives_only_with_its_block_ci_inside_the_weak_bounds(
    monkeypatch: pytest.MonkeyPatch, low: float, high: float, survives: bool | None,
) -> None:
    """"Weak" as the verdict reads it: the early phase survives the category bootstrap only
    when ρ_early's block CI lies strictly inside (−0.4, 0.4); the column names that check."""
    from itransfer.analysis.sections.trajectory import EARLY_PHASE_CORRELATION

    analysis = trajectory_analysis()
    monkeypatch.setattr(trajectory_module, "block_bootstrap", with_block_ci(low, high))
    robustness = EARLY_PHASE_CORRELATION.robustness(analysis, BootstrapOptions(20, 0))
    assert robustness.survives is survives
    assert robustness.text.startswith("ρ_early (inside ±0.4)")


@pytest.mark.parametrize(("low", "survives"), [
    (0.05, True),  # the rise's block CI above 0
    (0.0, False),  # touches 0: no rise shown
    (-0.1, False),  # includes 0
])
def test_the_late_phase_survives_only_with_a_rise_above_zero(
    monkeypatch: pytest.MonkeyPatch, low: float, survives: bool,
) -> None:
    """With ρ_late's own block CI above 0, the late phase survives the category bootstrap
    exactly when the block CI of ρ_late − ρ_early lies above 0 (a CI from 0 is no rise)."""
    from itransfer.analysis.sections.trajectory import LATE_PHASE_CORRELATION

    analysis = trajectory_analysis()
    monkeypatch.setattr(block_module, "block_bootstrap", with_block_ci(0.5, 0.9))
    monkeypatch.setattr(trajectory_module, "block_bootstrap",
                        with_block_ci(low, 1.2, of=correlation_difference_statistic))
    robustness = LATE_PHASE_CORRELATION.robustness(analysis, BootstrapOptions(20, 0))
    assert robustness.survives is survives
    assert "; ρ_late − ρ_early=" in robustness.text


def test_the_trajectory_findings_say_their_steps_values_and_tests() -> None:
    """§5.1's findings as the report states them on the miniature: ICL improving throughout
    is valued at the last step's mean ICL loss minus the pre-trained model's (step 0), and
    its text names both; the early phase names its steps with the partial ρ after them (as
    §3.2's Δ correlation does its Δ); the late phase's test names ρ_late;
    forgetting-then-recovery lists each step's test."""
    frame = pd.DataFrame(build_rows(num_tasks=8))
    analysis = analyse(frame, RunManifest.model_validate(manifest_dict()), n_boot=10)
    found = {result.finding.id: result for result in evaluate_findings(analysis, n_boot=10)}
    icl = frame[(frame["method"] == "icl") & (frame["metric"] == "loss")
                & (frame["split"] == "test")]
    start = icl[icl["model"] == "pretrained"].groupby("task")["value"].mean().mean()
    end = icl[(icl["model"] == "it-proportional") & (icl["checkpoint_step"] == 300)
              ].groupby("task")["value"].mean().mean()
    throughout = found["5.1-icl-improves-throughout"]
    assert throughout.run_value == pytest.approx(end - start)
    assert throughout.run_text.startswith(f"ICL loss {start:.3f} (step 0) → {end:.3f} (step 300)")
    early = found["5.1-early-phase-correlation"].run_text
    assert "; steps 0 → 100; partial ρ=" in early and early.endswith(")")
    # §3.2's correlation names its Δ, then the partial ρ beside it
    assert "; Δ = it-limit10 − it-limit100; partial ρ=" in found["3.2-delta-correlation"].run_text
    assert found["5.1-late-phase-correlation"].test.startswith("Spearman's test: ρ_late=")
    assert found["5.1-forgetting-then-recovery"].test.startswith(
        "Wilcoxon signed-rank over tasks, one-sided, at each step (0→100: Wilcoxon ")
    assert "; 100→300: Wilcoxon " in found["5.1-forgetting-then-recovery"].test
