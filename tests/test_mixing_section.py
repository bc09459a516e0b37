"""§5.2's two findings (mixing reduces forgetting, mixing improves ICL) on planted trajectories.

Each test plants, per task and step, how much lower (or higher) the model trained with mixing
is than the one trained without, and reads what the report shows: the verdict, the number
beside it, the sentence and the tests behind it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections.mixing import (
    MIXING_IMPROVES_ICL,
    MIXING_REDUCES_FORGETTING,
    MixingAnalysis,
)
from itransfer.analysis.verdicts import (
    FAILS,
    NOT_SIGNIFICANT,
    REPRODUCES,
    UNDEFINED,
    BootstrapOptions,
    FindingResult,
    evaluate_findings,
)
from test_analysis import manifest_dict, unseen_rows

WITH, WITHOUT = "it-mix3", "it-proportional"  # manifest_dict's §5.2 models
STEPS = (1, 50, 300)  # step 1 is a checkpoint > 0: judged like any other
# One task's share of a Wilcoxon test over 8 tasks that all go one way: W = 36 of 36 ranks,
# exact one-sided p = 1/2^8.
ALL_EIGHT = "W=36 of 36 for the claim, one-sided p=0.0039, n=8"
JUDGED = "Wilcoxon signed-rank over tasks, one-sided, at each step judged ("


def mixing_frame(num_tasks: int, without_steps: tuple[int, ...],
                 with_gaps: dict[int, tuple[object, object]]) -> pd.DataFrame:
    """Rows of the pre-trained model, of the model without mixing at ``without_steps`` and of
    the model with mixing at each step of ``with_gaps``: its (ICL, fine-tuning) loss minus the
    loss without mixing at that step, per task (an array) or for every task (a number)."""
    rng = np.random.default_rng(0)
    tasks = [f"task{index:03d}_unseen" for index in range(num_tasks)]
    spread = np.linspace(0.0, 1.0, num_tasks)

    def losses(step: int) -> tuple[np.ndarray, np.ndarray]:
        return 4.0 + spread - step / 1000, 2.0 + spread + step / 1000  # ICL, fine-tuning

    rows = unseen_rows("pretrained", 0, tasks, *losses(0), rng)
    for step in without_steps:
        rows += unseen_rows(WITHOUT, step, tasks, *losses(step), rng)
    for step, (icl_gap, ft_gap) in with_gaps.items():
        icl, ft = losses(step)
        rows += unseen_rows(WITH, step, tasks, icl + icl_gap, ft + ft_gap, rng)
    return pd.DataFrame.from_records(rows)


def mixing_manifest(with_steps: tuple[int, ...], without_steps: tuple[int, ...]
                    ) -> RunManifest:
    data = manifest_dict(sections={"mixing"})
    for model, steps in ((WITH, with_steps), (WITHOUT, without_steps)):
        data["models"][model] |= {"trajectory_steps": list(steps), "final_step": max(steps)}
    return RunManifest.model_validate(data)


def findings_of(analysis: RunAnalysis) -> dict[str, FindingResult]:
    return {result.finding.id: result for result in evaluate_findings(analysis, n_boot=20)}


# Per task: 0.10, 0.11, …, 0.17 lower with mixing (mean 0.135), all different (exact ranks).
LOWER = -(0.10 + 0.01 * np.arange(8))


def planted_analysis() -> RunAnalysis:
    """8 tasks; fine-tuning loss lower with mixing at every step; ICL loss lower with mixing
    before the last step and higher (by as much) at it."""
    gaps = {step: (LOWER if step != STEPS[-1] else -LOWER, LOWER) for step in STEPS}
    return analyse(mixing_frame(8, STEPS, gaps), mixing_manifest(STEPS, STEPS), n_boot=20)


def test_mixing_findings_report_the_planted_gaps_and_each_steps_wilcoxon_test() -> None:
    """The FT finding judges every step > 0 (step 1 included) and the ICL finding only the last:
    each names its loss, shows with − without at the last step (planted: ∓0.135), how many
    steps go each way, the largest one-sided p and each step's test, the opposite direction
    named "mixing worse"."""
    findings = findings_of(planted_analysis())
    forgetting = findings[MIXING_REDUCES_FORGETTING.id]
    assert forgetting.verdict == REPRODUCES
    assert forgetting.run_value == pytest.approx(-0.135)
    assert forgetting.run_p == pytest.approx(1 / 2**8)
    assert forgetting.run_text == (
        "FT loss with − without mixing -0.135 at step 300; mean lower at 3/3 and ranks lower "
        "at 3/3 of the steps judged")
    assert forgetting.test == JUDGED + "; ".join(
        f"step {step}: Wilcoxon {ALL_EIGHT}" for step in STEPS) + ")"
    icl = findings[MIXING_IMPROVES_ICL.id]
    assert icl.verdict == FAILS  # significantly the other way at the last step
    assert icl.run_value == pytest.approx(0.135)
    assert icl.run_p == pytest.approx(1.0)
    assert icl.run_text == (
        "ICL loss with − without mixing +0.135 at step 300; mean lower at 0/1 and ranks lower "
        "at 0/1 of the steps judged")
    assert icl.test == (JUDGED + "step 300: Wilcoxon W=0 of 36 for the claim, one-sided p=1, "
                        "n=8; opposite: p=0.0039 for mixing worse)")


def test_too_few_tasks_to_rank_judge_each_step_by_its_mean_gap() -> None:
    """Two tasks: no Wilcoxon test at any step, so each step counts as lower only when the mean
    with mixing is strictly below the mean without (planted: −0.2, exactly 0, +0.5)."""
    gaps = {1: (-0.2, -0.2), 50: (0.0, 0.0), 300: (0.5, 0.5)}
    findings = findings_of(analyse(mixing_frame(2, STEPS, gaps), mixing_manifest(STEPS, STEPS),
                                   n_boot=20))
    forgetting = findings[MIXING_REDUCES_FORGETTING.id]
    assert forgetting.run_text == (
        "FT loss with − without mixing +0.500 at step 300; mean lower at 1/3 and ranks lower "
        "at 1/3 of the steps judged")
    assert forgetting.verdict == FAILS  # one step of three
    assert forgetting.run_p is None
    assert forgetting.test == JUDGED + "; ".join(
        f"step {step}: Wilcoxon undefined (n=2)" for step in STEPS) + ")"
    # the ICL finding judges the last step alone: +0.5, not lower
    assert findings[MIXING_IMPROVES_ICL.id].run_text.endswith(
        "mean lower at 0/1 and ranks lower at 0/1 of the steps judged")
    # a single step below the other model's is lower by its mean: "≈", not "✗"
    one_step = findings_of(analyse(mixing_frame(2, (300,), {300: (-0.01, -0.01)}),
                                   mixing_manifest((300,), (300,)), n_boot=20))
    for result in one_step.values():
        assert result.verdict == NOT_SIGNIFICANT, result.finding.id
        assert result.run_text.endswith("mean lower at 1/1 and ranks lower at 1/1 of the "
                                        "steps judged"), result.finding.id


def test_without_a_common_step_the_findings_say_why_they_are_undefined() -> None:
    """With and without mixing evaluated at different steps: each finding is undefined and says
    there is no common step; without any row of one model, it names the loss that is missing,
    and its category-bootstrap recheck has nothing to recheck rather than failing."""
    disjoint = findings_of(analyse(
        mixing_frame(8, (300,), {100: (LOWER, LOWER), 200: (LOWER, LOWER)}),
        mixing_manifest((100, 200), (300,)), n_boot=20))
    for finding in (MIXING_REDUCES_FORGETTING, MIXING_IMPROVES_ICL):
        result = disjoint[finding.id]
        assert result.finding is finding and result.verdict == UNDEFINED
        assert result.run_text == "no common step > 0 with and without mixing"
    one_side = analyse(mixing_frame(8, (), {step: (LOWER, LOWER) for step in STEPS}),
                       mixing_manifest(STEPS, STEPS), n_boot=20)
    missing = findings_of(one_side)
    assert missing[MIXING_REDUCES_FORGETTING.id].run_text == (
        "FT loss missing with or without mixing")
    assert missing[MIXING_IMPROVES_ICL.id].run_text == "ICL loss missing with or without mixing"
    bootstrap = BootstrapOptions(n_boot=20, seed=0)
    for finding in (MIXING_REDUCES_FORGETTING, MIXING_IMPROVES_ICL):
        assert finding.robustness is not None
        recheck = finding.robustness(one_side, bootstrap)
        assert recheck.survives is None and recheck.text == "—"


def test_a_step_without_per_task_losses_on_both_sides_is_judged_by_its_means() -> None:
    """A mixing analysis whose per-task table lacks the model with mixing at the last step
    (its mean is known, its tasks are not): that step has no Wilcoxon test and goes the
    claimed way by its mean gap (planted −0.135), so every step is lower but not every one is
    significant; the bootstrap recheck covers the steps with tasks on both sides."""
    analysis = planted_analysis()
    mixing = analysis.of(MixingAnalysis)
    assert mixing is not None
    points = mixing.points
    dropped = points[(points["step"] == STEPS[-1]) & (points["label"] == "with mixing")]
    assert len(dropped) == 8
    thinned = dataclasses.replace(mixing, points=points.drop(dropped.index))
    analysis = dataclasses.replace(analysis, sections={"mixing": thinned})
    forgetting = findings_of(analysis)[MIXING_REDUCES_FORGETTING.id]
    assert forgetting.verdict == NOT_SIGNIFICANT
    assert forgetting.run_value == pytest.approx(-0.135)
    assert forgetting.run_text.endswith("mean lower at 3/3 and ranks lower at 3/3 of the "
                                        "steps judged")
    assert forgetting.test == JUDGED + "; ".join(
        f"step {step}: Wilcoxon {ALL_EIGHT}" for step in STEPS[:-1]) + ")"
    assert forgetting.robustness is not None
    assert [part.split(":")[0] for part in forgetting.robustness.text.split("; ")] == [
        "step 1", "step 50"]
