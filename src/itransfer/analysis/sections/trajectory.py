"""§5.1: one model's checkpoints, split into two phases (Figure 4).

The YAML keys (``sections.trajectory``), the analysis, Figure 4 (its left panel also draws
§5.2's mixing curves) and the section's four findings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
from pydantic import Field

from itransfer.analysis import correlations as corr
from itransfer.analysis import plotting
from itransfer.analysis.block_bootstrap import (
    Check,
    Robustness,
    block_bootstrap,
    combine,
    correlation_check,
    correlation_difference_statistic,
    paired_check,
    partial_check,
    spearman_statistic,
)
from itransfer.analysis.html import details, table
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.registry import Section, register_section
from itransfer.analysis.rows import trajectory_steps
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.seeds import spread_by_point, spread_html
from itransfer.analysis.significance import (
    CorrelationDifference,
    PairedTest,
    correlation_difference,
    one_sided_p,
    paired_test,
    rho_within,
)
from itransfer.analysis.verdicts import (
    ALPHA,
    FAILS,
    NOT_SIGNIFICANT,
    REPRODUCES,
    UNDEFINED,
    WEAK_RHO,
    BootstrapOptions,
    Finding,
    FindingResult,
    Parts,
    nan_to_none,
    spearman_test_text,
    undefined,
)
from itransfer.config.paper_constants import PAPER_TASKS
from itransfer.config.schema import EvalConfig
from itransfer.runs.eval_plan import Need, trajectory_needs

KEY = "trajectory"
FIGURE_4_LEFT = "Figure 4 (left)"
FIGURE_4_CENTRE_RIGHT = "Figure 4 (centre, right)"


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrajectoryAnalysis:
    """§5.1, Figure 4 (left, centre, right)."""

    section: TrajectorySection
    curves: pd.DataFrame  # step, method (icl | finetune) → mean loss
    points: pd.DataFrame  # per step and task: icl, finetune loss (for the paired tests)
    phases: corr.PhaseCorrelations
    early_partial: corr.PartialCorrelation  # each phase's correlation, difficulty partialled out
    late_partial: corr.PartialCorrelation
    # per step: the seeds behind its k-shot fine-tuning loss and their spread
    seed_spread: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: TrajectorySection, *,
                n_boot: int, seed: int) -> TrajectoryAnalysis:
        steps = trajectory_steps(frame, manifest, section.model)
        phases = corr.phase_correlations(
            frame, section.model, split_step=section.phase_split_step,
            final_step=max(steps), pretrained=manifest.pretrained, shots=section.shots,
            seed=seed,
        )
        difficulty = corr.zero_shot_difficulty(frame, manifest.pretrained)
        return cls(
            section=section,
            curves=corr.trajectory_curves(frame, section.model, steps,
                                          pretrained=manifest.pretrained, shots=section.shots),
            points=corr.trajectory_points(frame, section.model, steps,
                                          pretrained=manifest.pretrained, shots=section.shots),
            phases=phases,
            early_partial=corr.difficulty_partial(phases.early_table, "finetune_delta",
                                                  "icl_delta", difficulty, seed=seed),
            late_partial=corr.difficulty_partial(phases.late_table, "finetune_delta",
                                                 "icl_delta", difficulty, seed=seed),
            seed_spread=spread_by_point(
                frame, {f"step {step}": (section.model, step) for step in steps},
                shots=section.shots, pretrained=manifest.pretrained),
        )

    def tables_html(self) -> str:
        phases = self.phases
        return ("<h3>Mean loss by step</h3>"
                + table(self.curves.pivot_table(index="method", columns="step",
                                                values="mean"), index=True)
                + details(f"Early phase per task: {phases.early.describe()}",
                          table(phases.early_table, index=True))
                + details(f"Late phase per task: {phases.late.describe()}",
                          table(phases.late_table, index=True))
                + spread_html(self.seed_spread,
                              f"the {self.section.shots}-shot fine-tuning loss per step"))


# --- Figure 4 --------------------------------------------------------------------------------


def _trajectory_series(analysis: RunAnalysis) -> tuple[dict[str, pd.DataFrame], int]:
    """The curves Figure 4 (left) draws, by legend label, and their k: §5.2's pair with and
    without mixing when the run has it, else this section's model."""
    # mixing.py imports this module (its findings cite Figure 4 (left)), hence imported here.
    from itransfer.analysis.sections.mixing import MixingAnalysis

    mixing, trajectory = analysis.of(MixingAnalysis), analysis.of(TrajectoryAnalysis)
    series: dict[str, pd.DataFrame] = {}
    shots = 0
    if mixing is not None:
        shots = mixing.section.shots
        for label, curve in mixing.curves.groupby("label", sort=False):
            series[f"{label} ({curve['model'].iloc[0]})"] = curve
    elif trajectory is not None:
        shots = trajectory.section.shots
        series[trajectory.section.model] = trajectory.curves
    return {label: curve for label, curve in series.items() if not curve.empty}, shots


def draw_trajectories(analysis: RunAnalysis, path: Path) -> Path | None:
    """F4 left: FT and ICL loss vs instruction-tuning step, with and without mixing."""
    series, shots = _trajectory_series(analysis)
    if not series:
        return None
    trajectory = analysis.of(TrajectoryAnalysis)
    figure, axes_list = plotting.new_figure(2)
    for axes, method, name in zip(axes_list, ("finetune", "icl"),
                                  (f"{shots}-shot fine-tuning", "in-context learning"),
                                  strict=True):
        for index, (label, curves) in enumerate(series.items()):
            curve = curves[curves["method"] == method].sort_values("step")
            if not curve.empty:
                plotting.errorbar(axes, curve["step"].tolist(), curve, label=label,
                                  **plotting.style(index))
        if trajectory is not None:
            axes.axvline(trajectory.section.phase_split_step, color="#888888", linestyle=":",
                         linewidth=1.0, label="phase split")
        axes.set_xlabel("instruction-tuning step (0 = pre-trained)")
        axes.set_ylabel(f"mean unseen-task {name} loss ↓")
        axes.set_title(name, fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"{FIGURE_4_LEFT}: transfer and ICL through instruction tuning",
                    fontsize=10)
    return plotting.save(figure, path)


def draw_phase_deltas(analysis: RunAnalysis, path: Path) -> Path | None:
    """F4 centre/right: per task, Δ FT vs Δ ICL loss in the early and the late phase."""
    trajectory = analysis.of(TrajectoryAnalysis)
    if trajectory is None:
        return None
    phases = trajectory.phases
    if phases.early_table.empty and phases.late_table.empty:
        return None
    figure, axes_list = plotting.new_figure(2)
    panels = (
        (phases.early_table, phases.early, f"Figure 4 (centre): steps 0 → {phases.split_step}"),
        (phases.late_table, phases.late,
         f"Figure 4 (right): steps {phases.split_step} → {phases.final_step}"),
    )
    for axes, (per_task, correlation, title) in zip(axes_list, panels, strict=True):
        plotting.scatter(axes, per_task["finetune_delta"], per_task["icl_delta"], correlation,
                         xlabel=f"Δ {trajectory.section.shots}-shot fine-tuning loss",
                         ylabel="Δ in-context learning loss", title=title, zero_lines=True)
    return plotting.save(figure, path)


PLOTS = (PaperFigure(FIGURE_4_LEFT, "fig4_trajectories.png", draw_trajectories),
         PaperFigure(FIGURE_4_CENTRE_RIGHT, "fig4_phase_scatter.png", draw_phase_deltas))


# --- findings: the tests behind the verdicts -------------------------------------------------


def _phase_difference(trajectory: TrajectoryAnalysis, bootstrap: BootstrapOptions
                      ) -> CorrelationDifference:
    phases = trajectory.phases
    return correlation_difference(phases.early_table, phases.late_table, "finetune_delta",
                                  "icl_delta", n_boot=bootstrap.n_boot, seed=bootstrap.seed)


def _early_phase(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                 ) -> FindingResult:
    """"The correlation is very low" in the first phase: ✓ when the two-sided 95% bootstrap CI
    of ρ_early lies inside (−WEAK_RHO, WEAK_RHO); ≈ when only |ρ_early| < WEAK_RHO; ✗ when
    |ρ_early| ≥ WEAK_RHO (a strong negative correlation is not weak). Being below the late
    phase's ρ is not weakness, so it is not a route to ✓."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    early, late = trajectory.phases.early, trajectory.phases.late
    label = (f"; steps 0 → {trajectory.phases.split_step}; "
             f"{trajectory.early_partial.describe()}")
    if not early.defined:
        return FindingResult(finding, UNDEFINED, None, None, early.describe() + label, early)
    weak = rho_within(trajectory.phases.early_table, "finetune_delta", "icl_delta", WEAK_RHO,
                      n_boot=bootstrap.n_boot, seed=bootstrap.seed)
    found = (FAILS if abs(early.rho) >= WEAK_RHO
             else REPRODUCES if weak.holds else NOT_SIGNIFICANT)
    late_text = f" (late phase ρ={late.rho:.3f})" if late.defined else " (late phase undefined)"
    return FindingResult(finding, found, early.rho, nan_to_none(weak.p_value),
                         f"{early.describe()}{label}{late_text}", early, test=weak.describe())


def _late_phase(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                ) -> FindingResult:
    """"Much more tightly correlated" after the first phase: ✓ when ρ_late > 0 with Spearman's
    one-sided p < α and ρ_late − ρ_early > 0 with a one-sided paired bootstrap p < α; ✗ when
    either is significant the other way."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    phases = trajectory.phases
    early, late = phases.early, phases.late
    label = (f"; steps {phases.split_step} → {phases.final_step}; "
             f"{trajectory.late_partial.describe()}")
    if not late.defined:
        return FindingResult(finding, UNDEFINED, None, None, late.describe() + label, late)
    judged = Parts()
    judged.add(late.rho > 0, one_sided_p(late.p_value, late.rho, 1.0) < ALPHA,
               one_sided_p(late.p_value, late.rho, -1.0) < ALPHA,
               one_sided_p(late.p_value, late.rho, 1.0))
    tests = [spearman_test_text(late, "ρ_late")]
    if early.defined:
        difference = _phase_difference(trajectory, bootstrap)
        judged.add(late.rho > early.rho, difference.p_rise < ALPHA, difference.p_fall < ALPHA,
                   difference.p_rise)
        rise = (f"late − early: {difference.describe()}; one-sided p={difference.p_rise:.2g} "
                "for a rise")
        if difference.defined and difference.difference < 0:
            rise += f"; opposite: p={difference.p_fall:.2g} for a fall"
        tests.append(rise)
        label += f" (early phase ρ={early.rho:.3f})"
    return FindingResult(finding, judged.verdict(), late.rho, judged.largest_p(),
                         late.describe() + label, late, test="; ".join(tests))


def _step_tests(points: pd.DataFrame, method: str, steps: Sequence[int],
                signs: Sequence[float]) -> list[tuple[int, int, PairedTest]]:
    """Paired tests of ``method``'s per-task loss between consecutive ``steps``, each
    one-sided in its claimed direction (``signs``: −1 falls, +1 rises)."""
    wide = points.pivot_table(index="task", columns="step", values=method)
    return [(before, after, paired_test(wide[before], wide[after], sign,
                                        opposite="a rise" if sign < 0 else "a fall"))
            for (before, after), sign in zip(itertools.pairwise(steps), signs, strict=True)
            if before in wide.columns and after in wide.columns]


def _icl_improves_throughout(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                             ) -> FindingResult:
    """"ICL generalization increases throughout the entire training process": a one-sided
    paired test between every two consecutive checkpoints, each of which must show a fall."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    icl = _method_curve(trajectory.curves, "icl")
    if len(icl) < 2:
        return undefined(finding, f"needs ICL loss at two steps, has {len(icl)}")
    steps = [int(step) for step in icl.index]
    tests = _step_tests(trajectory.points, "icl", steps, [-1.0] * (len(steps) - 1))
    by_interval = {(before, after): test for before, after, test in tests}
    judged = Parts()
    for (before, after), (earlier, later) in zip(itertools.pairwise(steps),
                                                 itertools.pairwise(icl), strict=True):
        test = by_interval.get((before, after), paired_test(pd.Series(), pd.Series(), -1.0))
        judged.add_paired(test, fallback=bool(later < earlier))
    text = (f"ICL loss {icl.iloc[0]:.3f} (step {icl.index[0]}) → {icl.iloc[-1]:.3f} "
            f"(step {icl.index[-1]}); falls at {sum(judged.directions)}/"
            f"{len(judged.directions)} checkpoints (by the tasks' ranks)")
    return FindingResult(finding, judged.verdict(), float(icl.iloc[-1] - icl.iloc[0]),
                         judged.largest_p(), text, test=_steps_text(tests))


def _steps_text(tests: Sequence[tuple[int, int, PairedTest]]) -> str:
    return ("Wilcoxon signed-rank over tasks, one-sided, at each step (" + "; ".join(
        f"{before}→{after}: {test.describe()}" for before, after, test in tests) + ")")


def _method_curve(curves: pd.DataFrame, method: str) -> pd.Series:
    chosen = curves[curves["method"] == method]
    return chosen.set_index("step")["mean"].sort_index().dropna()


def _forgetting_then_recovery(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                              ) -> FindingResult:
    """Fine-tuning loss rises from step 0 to the split step, then falls to the end: a paired
    test for each phase, one-sided in its claimed direction."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    tuned = _method_curve(trajectory.curves, "finetune")
    split = trajectory.phases.split_step
    if 0 not in tuned.index or split not in tuned.index or len(tuned) < 3:
        return undefined(finding, "needs FT loss at step 0, the split step and a later step")
    final = int(tuned.index[-1])
    start, middle, end = tuned.loc[0], tuned.loc[split], tuned.iloc[-1]
    tests = _step_tests(trajectory.points, "finetune", [0, split, final], [1.0, -1.0])
    by_interval = {(before, after): test for before, after, test in tests}
    judged = Parts()
    for interval, sign, moved in (((0, split), 1.0, middle > start),
                                  ((split, final), -1.0, end < middle)):
        test = by_interval.get(interval, paired_test(pd.Series(), pd.Series(), sign))
        judged.add_paired(test, fallback=bool(moved))
    text = (f"FT loss {start:.3f} (step 0) → {middle:.3f} (step {split}) → {end:.3f} "
            f"(step {final})")
    return FindingResult(finding, judged.verdict(), float(middle - start), judged.largest_p(),
                         text, test=_steps_text(tests))


# --- findings: the same tests under the category-block bootstrap -----------------------------


def _phase_difference_check(trajectory: TrajectoryAnalysis, analysis: RunAnalysis,
                            bootstrap: BootstrapOptions) -> Check:
    """ρ_late − ρ_early on the tasks of both phases; holds when its block CI is above 0."""
    phases = trajectory.phases
    columns = ["finetune_delta", "icl_delta"]
    joined = pd.merge(phases.early_table[columns], phases.late_table[columns], how="inner",
                      left_index=True, right_index=True, suffixes=("_early", "_late"))
    result = block_bootstrap(joined, analysis.categories, correlation_difference_statistic,
                             n_boot=bootstrap.n_boot, seed=bootstrap.seed)
    return Check("ρ_late − ρ_early", result, result.defined and result.ci_low > 0)


def _early_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions) -> Robustness:
    """Weak as the verdict reads it: ρ_early's block CI inside (−WEAK_RHO, WEAK_RHO)."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    result = block_bootstrap(trajectory.phases.early_table[["finetune_delta", "icl_delta"]],
                             analysis.categories, spearman_statistic, n_boot=bootstrap.n_boot,
                             seed=bootstrap.seed)
    weak = Check(f"ρ_early (inside ±{WEAK_RHO})", result,
                 result.defined and result.ci_low > -WEAK_RHO and result.ci_high < WEAK_RHO)
    return combine([weak], notes=[_partial_note("early", trajectory, analysis, bootstrap)])


def _late_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions) -> Robustness:
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    checks = [correlation_check("ρ_late", trajectory.phases.late_table, "finetune_delta",
                                "icl_delta", analysis.categories, n_boot=bootstrap.n_boot,
                                seed=bootstrap.seed)]
    if trajectory.phases.early.defined:
        checks.append(_phase_difference_check(trajectory, analysis, bootstrap))
    return combine(checks, notes=[_partial_note("late", trajectory, analysis, bootstrap)])


def _partial_note(phase: str, trajectory: TrajectoryAnalysis, analysis: RunAnalysis,
                  bootstrap: BootstrapOptions) -> Check:
    """The phase's difficulty-controlled rho under the block bootstrap (shown, not judged)."""
    table = getattr(trajectory.phases, f"{phase}_table")
    return partial_check(f"partial ρ_{phase}", table, "finetune_delta", "icl_delta",
                         analysis.difficulty, analysis.categories, n_boot=bootstrap.n_boot,
                         seed=bootstrap.seed)


def _steps_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions, *,
                      method: str, signs: Callable[[int, int], float]) -> Robustness:
    """The paired tests between consecutive checkpoints (``signs``: the claimed direction of
    each step's change), tasks resampled by category."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    wide = trajectory.points.pivot_table(index="task", columns="step", values=method)
    steps = _robust_steps(trajectory, method)
    return combine([
        paired_check(f"{before}→{after}", wide[before], wide[after], analysis.categories,
                     sign=signs(before, after), n_boot=bootstrap.n_boot, seed=bootstrap.seed)
        for before, after in itertools.pairwise(steps)
        if before in wide.columns and after in wide.columns])


def _robust_steps(trajectory: TrajectoryAnalysis, method: str) -> list[int]:
    """The steps each finding's paired tests run between: every checkpoint for ICL; step 0,
    the split step and the final step for fine-tuning."""
    steps = [int(step) for step in _method_curve(trajectory.curves, method).index]
    if method == "icl" or not steps:
        return steps
    split = trajectory.phases.split_step
    return [0, split, steps[-1]] if 0 in steps and split in steps else []


def _forgetting_sign(before: int, after: int) -> float:
    return 1.0 if before == 0 else -1.0  # up in the first phase, down after it


# --- findings: the paper's claims and numbers ------------------------------------------------

EARLY_PHASE_CORRELATION = Finding(
    id="5.1-early-phase-correlation", paper_section="5.1", section=KEY,
    figure=FIGURE_4_CENTRE_RIGHT, panel="centre",
    claim="In the first phase of IT, FT and ICL changes are only weakly correlated",
    kind="correlation", paper_value=0.245, paper_p=0.019,
    paper_text=f"Spearman ρ = 0.245, p = 0.019; {PAPER_TASKS}; steps 0 → 50k",
    how_to_compute="Spearman's rho between per-task Δ 5-shot LoRA loss and Δ ICL loss "
                   "from step 0 (pre-trained) to the phase split step. Weak means inside "
                   "(−0.4, 0.4): reproduces when the two-sided 95% bootstrap CI of ρ over "
                   "tasks lies inside it.",
    evaluate=_early_phase, robustness=_early_robustness,
)
LATE_PHASE_CORRELATION = Finding(
    id="5.1-late-phase-correlation", paper_section="5.1", section=KEY,
    figure=FIGURE_4_CENTRE_RIGHT, panel="right",
    claim="After the first phase, FT and ICL changes are much more tightly correlated",
    kind="correlation", paper_value=0.621, paper_p=None,
    paper_text="Spearman ρ = 0.621, steps 50k → end (higher than the early phase)",
    how_to_compute="Spearman's rho between per-task Δ 5-shot LoRA loss and Δ ICL loss "
                   "from the phase split step to the final step; should be significantly "
                   "positive (one-sided Spearman test) and exceed the early phase's rho "
                   "(paired bootstrap over tasks of the difference, one-sided p < 0.05).",
    evaluate=_late_phase, robustness=_late_robustness,
)
ICL_IMPROVES_THROUGHOUT = Finding(
    id="5.1-icl-improves-throughout", paper_section="5.1", section=KEY, figure=FIGURE_4_LEFT,
    claim="ICL improves throughout instruction tuning (early stopping does not help)",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="ICL loss decreases at every checkpoint",
    how_to_compute="Mean unseen ICL loss at each trajectory step (step 0 = pre-trained); "
                   "between every two consecutive checkpoints a paired Wilcoxon test over "
                   "tasks, one-sided, each of which must show a decrease.",
    evaluate=_icl_improves_throughout,
    robustness=partial(_steps_robustness, method="icl", signs=lambda before, after: -1.0),
)
FORGETTING_THEN_RECOVERY = Finding(
    id="5.1-forgetting-then-recovery", paper_section="5.1", section=KEY, figure=FIGURE_4_LEFT,
    claim="Fine-tuning transfer first degrades, then improves with continued training",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="FT loss rises 0 → split step, then falls to the end",
    how_to_compute="Mean 5-shot LoRA loss at step 0, the phase split step and the final "
                   "step: should rise then fall, each change with a one-sided paired "
                   "Wilcoxon test.",
    evaluate=_forgetting_then_recovery,
    robustness=partial(_steps_robustness, method="finetune", signs=_forgetting_sign),
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class TrajectorySection(Section):
    """§5.1: one model's checkpoints; the phases split at ``phase_split_step``."""

    title = "§5.1 The trajectory of ICL and forgetting"
    paper_section = "5.1"
    analysis = TrajectoryAnalysis
    plots = PLOTS
    findings = (EARLY_PHASE_CORRELATION, LATE_PHASE_CORRELATION, ICL_IMPROVES_THROUGHOUT,
                FORGETTING_THEN_RECOVERY)

    model: str
    phase_split_step: int = Field(ge=1)
    shots: int = 5

    def model_labels(self) -> list[str]:
        return [self.model]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return trajectory_needs(self.model_labels(), self.shots)
