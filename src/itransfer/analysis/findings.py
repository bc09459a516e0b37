"""Each of the paper's findings recomputed on one run, with a verdict a statistician would sign.

Every verdict rests on a test over tasks (:mod:`itransfer.analysis.significance`), named with
its statistic and p-value or CI beside the verdict:

* ✓ "reproduces": the claim's direction holds everywhere it is claimed and its test passes at
  α = 0.05 (for a claim made of several tests, e.g. "at every checkpoint", every one of them:
  an intersection–union test, whose p-value is the largest of its parts);
* ≈ "reproduces (not significant)": the direction holds everywhere, a test does not pass;
* ◐ "partly reproduces": the direction holds in some of the places claimed;
* ✗ "does not reproduce"; ? "undefined": too few tasks or points to say.

The report adjusts the verdicts' p-values for multiplicity with Holm's method across its
findings (:func:`adjust_for_multiplicity`) and says which ✓ survive. Findings whose section the
experiment did not run are left out, not marked as failures.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from itransfer.analysis.correlations import Correlation, PartialCorrelation
from itransfer.analysis.paper import PAPER_FINDINGS, Finding
from itransfer.analysis.sections import (
    DataLimitsAnalysis,
    MixingAnalysis,
    RunAnalysis,
    SamplersAnalysis,
    TrajectoryAnalysis,
    TransferAnalysis,
)
from itransfer.analysis.significance import (
    CorrelationDifference,
    PairedTest,
    correlation_difference,
    holm,
    paired_test,
    ranking_stability,
    rho_below,
)

ALPHA = 0.05
# §5.1 calls the early-phase correlation "very low" (ρ = 0.245). "Weak" here means a rank
# correlation below 0.4, the usual upper edge of "weak" (Evans, 1996: 0.20–0.39).
WEAK_RHO = 0.4
# A ranking "holds" when the candidate is first in at least this share of task resamples.
RANKING_CONFIDENCE = 0.95

REPRODUCES = "reproduces"
NOT_SIGNIFICANT = "reproduces (not significant)"
PARTLY = "partly reproduces"
FAILS = "does not reproduce"
UNDEFINED = "undefined"


@dataclass(frozen=True)
class FindingResult:
    finding: Finding
    verdict: str
    run_value: float | None  # rho for correlations, a signed difference for directions
    run_p: float | None  # the p-value the verdict rests on (the largest, for several tests)
    run_text: str
    correlation: Correlation | None = None
    test: str = ""  # the test(s) behind the verdict, with statistics and p-values or CIs
    holm_p: float | None = None  # run_p adjusted across the report's findings


@dataclass(frozen=True)
class _Settings:
    n_boot: int
    seed: int


Evaluator = Callable[[RunAnalysis, Finding, _Settings], FindingResult]


def evaluate_findings(analysis: RunAnalysis, *, n_boot: int = 2000, seed: int = 0
                      ) -> list[FindingResult]:
    """Every paper finding whose section this run has, in the paper's order, Holm-adjusted."""
    evaluators: dict[str, Evaluator] = {
        "3.1-it-harms-transfer": _it_harms_transfer("loss"),
        "3.1-it-harms-transfer-rouge": _it_harms_transfer("rougeL"),
        "3.1-it-improves-icl": _it_improves_icl,
        "3.1-ft-icl-correlation": _ft_icl_correlation,
        "3.2-less-data-helps": _less_data_helps,
        "3.2-delta-correlation": _delta_correlation,
        "4-proportional-best": _proportional_best,
        "5.1-early-phase-correlation": _early_phase,
        "5.1-late-phase-correlation": _late_phase,
        "5.1-icl-improves-throughout": _icl_improves_throughout,
        "5.1-forgetting-then-recovery": _forgetting_then_recovery,
        "5.2-mixing-reduces-forgetting": _mixing_effect("finetune"),
        "5.2-mixing-improves-icl": _mixing_effect("icl"),
    }
    settings = _Settings(n_boot=n_boot, seed=seed)
    results = [evaluators[finding.id](analysis, finding, settings)
               for finding in PAPER_FINDINGS if finding.section in analysis.sections]
    return adjust_for_multiplicity(results)


def adjust_for_multiplicity(results: Sequence[FindingResult]) -> list[FindingResult]:
    """Attach Holm-adjusted p-values across every finding that has a p-value."""
    adjusted = holm([math.nan if result.run_p is None else result.run_p for result in results])
    return [replace(result, holm_p=None if math.isnan(p) else p)
            for result, p in zip(results, adjusted, strict=True)]


def holm_summary(results: Sequence[FindingResult]) -> str:
    """One sentence on multiplicity for the report."""
    tested = [result for result in results if result.holm_p is not None]
    confirmed = [result for result in results if result.verdict == REPRODUCES]
    surviving = [result for result in confirmed
                 if result.holm_p is not None and result.holm_p < ALPHA]
    return (f"Multiplicity: {len(tested)} findings rest on a p-value; after Holm's adjustment "
            f"across them, {len(surviving)} of the {len(confirmed)} ✓ verdicts keep p < {ALPHA}.")


# --- verdict helpers -------------------------------------------------------------------------


def _undefined(finding: Finding, why: str) -> FindingResult:
    return FindingResult(finding, UNDEFINED, None, None, why)


def _verdict(directions: Sequence[bool], significant: Sequence[bool]) -> str:
    """✓ when every claimed direction holds and every test passes; ≈ when the directions hold;
    ◐ when some do; ✗ when none does."""
    if not directions:
        return UNDEFINED
    if all(directions):
        return REPRODUCES if significant and all(significant) else NOT_SIGNIFICANT
    return PARTLY if any(directions) else FAILS


def _passes(test: PairedTest, expected_sign: float) -> bool:
    """The paired test rejects at α in the claimed direction."""
    return test.defined and test.p_value < ALPHA and expected_sign * test.mean_difference > 0


def _largest_p(p_values: Sequence[float]) -> float | None:
    """The p-value of an intersection–union test: the largest of its parts."""
    if not p_values or any(math.isnan(p) for p in p_values):
        return None
    return max(p_values)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


# --- §3.1 ----------------------------------------------------------------------------------


def _it_harms_transfer(metric: str) -> Evaluator:
    """§3.1: "Pre-trained models adapt faster and with higher accuracy to unseen tasks than
    instruction-tuned models, even when fine-tuning leverages in-context exemplars" — judged on
    every fine-tuning context run (no context and exemplars), for loss (IT higher is harm) or
    ROUGE-L (IT lower is harm), each context with its paired Wilcoxon test over tasks on the
    metric averaged over k > 0."""
    name, harm_sign = ("loss", 1.0) if metric == "loss" else ("ROUGE-L", -1.0)

    def evaluate(analysis: RunAnalysis, finding: Finding, settings: _Settings) -> FindingResult:
        transfer = analysis.of(TransferAnalysis)
        assert transfer is not None
        curves = transfer.loss_curves if metric == "loss" else transfer.rouge_curves
        if curves.empty:
            return _undefined(finding, f"no fine-tuning {name} measured")
        curves = curves[curves["shots"] > 0]
        directions: list[bool] = []
        significant: list[bool] = []
        p_values, parts, tests, mean_gaps = [], [], [], []
        for context in _contexts_none_first(curves["context"]):
            wide = curves[curves["context"] == context].pivot_table(
                index="shots", columns="label", values="mean")
            if {"pre-trained", "instruction-tuned"} - set(wide.columns):
                continue
            gaps = (wide["instruction-tuned"] - wide["pre-trained"]).dropna()
            if gaps.empty:
                continue
            per_task = transfer.per_task_finetune.get((context, metric))
            test = (paired_test(per_task["pretrained"], per_task["instruction_tuned"])
                    if per_task is not None else paired_test(pd.Series(), pd.Series()))
            harmed = [bool(harm_sign * gap > 0) for gap in gaps]
            directions += harmed
            significant.append(_passes(test, harm_sign))
            p_values.append(test.p_value)
            mean_gaps.append(float(gaps.mean()))
            parts.append(f"context {context}: IT − PT {gaps.mean():+.3f}, IT worse at "
                         f"{sum(harmed)}/{gaps.size} k")
            tests.append(f"context {context}: {test.describe()}")
        if not directions:
            return _undefined(finding, f"fine-tuning {name} missing for one of the two models")
        return FindingResult(finding, _verdict(directions, significant),
                             float(np.mean(mean_gaps)), _largest_p(p_values), "; ".join(parts),
                             test="Wilcoxon signed-rank over tasks, per context (" +
                                  "; ".join(tests) + ")")

    return evaluate


def _contexts_none_first(contexts: pd.Series) -> list[str]:
    return sorted(set(contexts.dropna()), key=lambda context: (context != "none", context))


def _it_improves_icl(analysis: RunAnalysis, finding: Finding, settings: _Settings
                     ) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    pretrained = transfer.icl_means.get("pre-trained", float("nan"))
    tuned = transfer.icl_means.get("instruction-tuned", float("nan"))
    if math.isnan(pretrained) or math.isnan(tuned):
        return _undefined(finding, "ICL loss missing for one of the two models")
    per_task = transfer.per_task_icl
    test = paired_test(per_task["pretrained"], per_task["instruction_tuned"])
    gap = tuned - pretrained
    return FindingResult(finding, _verdict([gap < 0], [_passes(test, -1.0)]), gap,
                         _nan_to_none(test.p_value),
                         f"ICL loss PT {pretrained:.3f} → IT {tuned:.3f} ({gap:+.3f})",
                         test=f"Wilcoxon signed-rank over tasks: {test.describe()}")


def _correlation_result(finding: Finding, correlation: Correlation, extra: str = "",
                        partial: PartialCorrelation | None = None) -> FindingResult:
    """A claimed positive correlation: ✓ when ρ > 0 and Spearman's test has p < α."""
    if partial is not None:
        extra += f"; {partial.describe()}"
    if not correlation.defined:
        return FindingResult(finding, UNDEFINED, None, None, correlation.describe() + extra,
                             correlation)
    verdict = _verdict([correlation.rho > 0], [correlation.p_value < ALPHA])
    return FindingResult(finding, verdict, correlation.rho, correlation.p_value,
                         correlation.describe() + extra, correlation,
                         test=f"Spearman's test: ρ={correlation.rho:.3f}, "
                              f"p={correlation.p_value:.2g}, n={correlation.n}")


def _ft_icl_correlation(analysis: RunAnalysis, finding: Finding, settings: _Settings
                        ) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    return _correlation_result(finding, transfer.correlation, partial=transfer.partial)


# --- §3.2 ----------------------------------------------------------------------------------


def _less_data_helps(analysis: RunAnalysis, finding: Finding, settings: _Settings
                     ) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    summary = limits.summary.dropna(subset=["icl_loss", "finetune_loss"], how="all")
    if len(summary) < 2:
        return _undefined(finding, f"needs two data limits with results, has {len(summary)}")
    smallest, largest = summary.iloc[0], summary.iloc[-1]
    directions, significant, p_values, parts, tests = [], [], [], [], []
    for method, name in (("icl", "ICL"), ("finetune", "FT")):
        gap = smallest[f"{method}_loss"] - largest[f"{method}_loss"]
        if math.isnan(gap):
            continue
        extremes = limits.extremes
        test = (paired_test(extremes[f"{method}_before"], extremes[f"{method}_after"])
                if not extremes.empty else paired_test(pd.Series(), pd.Series()))
        directions.append(bool(gap < 0))
        significant.append(_passes(test, -1.0))
        p_values.append(test.p_value)
        parts.append(f"{name} loss {gap:+.3f}")
        tests.append(f"{name}: {test.describe()}")
    if not directions:
        return _undefined(finding, "no ICL or fine-tuning loss at the smallest and largest limit")
    text = f"limit {smallest['limit']} − limit {largest['limit']}: " + ", ".join(parts)
    return FindingResult(finding, _verdict(directions, significant),
                         float(np.nanmean([smallest["icl_loss"] - largest["icl_loss"],
                                           smallest["finetune_loss"] - largest["finetune_loss"]])),
                         _largest_p(p_values), text,
                         test="Wilcoxon signed-rank over tasks, smallest vs largest limit ("
                              + "; ".join(tests) + ")")


def _delta_correlation(analysis: RunAnalysis, finding: Finding, settings: _Settings
                       ) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    return _correlation_result(finding, limits.correlation,
                               f"; Δ = {limits.after} − {limits.before}", limits.partial)


# --- §4 ------------------------------------------------------------------------------------


def _proportional_best(analysis: RunAnalysis, finding: Finding, settings: _Settings
                       ) -> FindingResult:
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    compared = samplers.compared.set_index("sampler")
    proportional = [name for name, kind in compared["sampler_kind"].items()
                    if kind == "proportional"]
    if not proportional:
        return _undefined(finding, "no proportional-sampling model in this run")
    if len(compared) < 2:
        return _undefined(finding, "needs proportional and at least one of the samplers it is "
                                   "compared with")
    best = proportional[0]
    directions, significant, p_values, parts, tests = [], [], [], [], []
    for column, per_task, label in (("seen_test_loss", samplers.per_task_seen_test, "seen test"),
                                    ("icl_loss", samplers.per_task_icl, "unseen ICL")):
        values = compared[column].dropna()
        if best not in values.index or len(values) < 2:
            parts.append(f"{label}: not measured")
            continue
        rank = int(values.rank(method="min")[best])
        stability = ranking_stability(per_task, best, n_boot=settings.n_boot,
                                      seed=settings.seed)
        directions.append(rank == 1)
        significant.append(stability.share_first >= RANKING_CONFIDENCE)
        # The share of resamples in which the ranking fails plays the role of a p-value.
        p_values.append(1.0 - stability.share_first)
        parts.append(f"{label} rank {rank}/{len(values)}")
        tests.append(f"{label}: {stability.describe()}")
    among = ", ".join(compared.index)
    return FindingResult(finding, _verdict(directions, significant), None,
                         _largest_p(p_values), f"{best} among {{{among}}}: " + "; ".join(parts),
                         test=f"bootstrap over tasks, ✓ needs first in ≥ "
                              f"{RANKING_CONFIDENCE:.0%} (" + "; ".join(tests) + ")")


# --- §5.1 ----------------------------------------------------------------------------------


def _phase_difference(trajectory: TrajectoryAnalysis, settings: _Settings
                      ) -> CorrelationDifference:
    phases = trajectory.phases
    return correlation_difference(phases.early_table, phases.late_table, "finetune_delta",
                                  "icl_delta", n_boot=settings.n_boot, seed=settings.seed)


def _early_phase(analysis: RunAnalysis, finding: Finding, settings: _Settings
                 ) -> FindingResult:
    """"The correlation is very low" in the first phase: ✓ when ρ_early < WEAK_RHO and either
    its one-sided 95% bootstrap bound is below WEAK_RHO or it is significantly below the late
    phase's ρ (paired bootstrap); ≈ when only the point estimate is below WEAK_RHO; ◐ when it
    is significantly below the late phase but not weak. Merely smaller is not weak."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    early, late = trajectory.phases.early, trajectory.phases.late
    label = (f"; steps 0 → {trajectory.phases.split_step}; "
             f"{trajectory.early_partial.describe()}")
    if not early.defined:
        return FindingResult(finding, UNDEFINED, None, None, early.describe() + label, early)
    weak = rho_below(trajectory.phases.early_table, "finetune_delta", "icl_delta", WEAK_RHO,
                     n_boot=settings.n_boot, seed=settings.seed)
    difference = _phase_difference(trajectory, settings) if late.defined else None
    below_late = difference is not None and difference.defined and difference.ci_low > 0
    if early.rho < WEAK_RHO:
        verdict = REPRODUCES if weak.holds or below_late else NOT_SIGNIFICANT
    else:
        verdict = PARTLY if below_late else FAILS
    tests = [weak.describe()]
    # Either route shows "weak", so the verdict rests on the stronger of the two tests.
    p_values = [weak.p_value]
    if difference is not None:
        tests.append(f"late − early: {difference.describe()}")
        p_values.append(difference.p_value)
    finite = [p for p in p_values if not math.isnan(p)]
    late_text = f" (late phase ρ={late.rho:.3f})" if late.defined else " (late phase undefined)"
    return FindingResult(finding, verdict, early.rho, min(finite) if finite else None,
                         f"{early.describe()}{label}{late_text}", early, test="; ".join(tests))


def _late_phase(analysis: RunAnalysis, finding: Finding, settings: _Settings
                ) -> FindingResult:
    """"Much more tightly correlated" after the first phase: ✓ when ρ_late > 0 with p < α and
    ρ_late − ρ_early > 0 with a paired bootstrap CI above 0."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    phases = trajectory.phases
    early, late = phases.early, phases.late
    label = (f"; steps {phases.split_step} → {phases.final_step}; "
             f"{trajectory.late_partial.describe()}")
    if not late.defined:
        return FindingResult(finding, UNDEFINED, None, None, late.describe() + label, late)
    directions, significant = [late.rho > 0], [late.p_value < ALPHA]
    p_values = [late.p_value]
    tests = [f"Spearman's test: ρ_late={late.rho:.3f}, p={late.p_value:.2g}"]
    if early.defined:
        difference = _phase_difference(trajectory, settings)
        directions.append(late.rho > early.rho)
        significant.append(difference.defined and difference.ci_low > 0)
        p_values.append(difference.p_value)
        tests.append(f"late − early: {difference.describe()}")
        label += f" (early phase ρ={early.rho:.3f})"
    return FindingResult(finding, _verdict(directions, significant), late.rho,
                         _largest_p(p_values), late.describe() + label, late,
                         test="; ".join(tests))


def _step_tests(points: pd.DataFrame, method: str, steps: Sequence[int]
                ) -> list[tuple[int, int, PairedTest]]:
    """Paired tests of ``method``'s per-task loss between consecutive ``steps``."""
    wide = points.pivot_table(index="task", columns="step", values=method)
    return [(before, after, paired_test(wide[before], wide[after]))
            for before, after in itertools.pairwise(steps)
            if before in wide.columns and after in wide.columns]


def _icl_improves_throughout(analysis: RunAnalysis, finding: Finding, settings: _Settings
                             ) -> FindingResult:
    """"ICL generalization increases throughout the entire training process": a paired test
    between every two consecutive checkpoints, each of which must show a decrease."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    icl = _method_curve(trajectory.curves, "icl")
    if len(icl) < 2:
        return _undefined(finding, f"needs ICL loss at two steps, has {len(icl)}")
    steps = [int(step) for step in icl.index]
    tests = _step_tests(trajectory.points, "icl", steps)
    decreases = [bool(later < earlier) for earlier, later in itertools.pairwise(icl)]
    significant = [_passes(test, -1.0) for _, _, test in tests] if tests else [False]
    text = (f"ICL loss {icl.iloc[0]:.3f} (step {icl.index[0]}) → {icl.iloc[-1]:.3f} "
            f"(step {icl.index[-1]}); decreases at {sum(decreases)}/{len(decreases)} "
            "checkpoints")
    return FindingResult(finding, _verdict(decreases, significant),
                         float(icl.iloc[-1] - icl.iloc[0]),
                         _largest_p([test.p_value for _, _, test in tests]), text,
                         test=_steps_text(tests))


def _steps_text(tests: Sequence[tuple[int, int, PairedTest]]) -> str:
    return ("Wilcoxon signed-rank over tasks at each step (" + "; ".join(
        f"{before}→{after}: {test.describe()}" for before, after, test in tests) + ")")


def _method_curve(curves: pd.DataFrame, method: str) -> pd.Series:
    chosen = curves[curves["method"] == method]
    return chosen.set_index("step")["mean"].sort_index().dropna()


def _forgetting_then_recovery(analysis: RunAnalysis, finding: Finding, settings: _Settings
                              ) -> FindingResult:
    """Fine-tuning loss rises from step 0 to the split step, then falls to the end: a paired
    test for each phase."""
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    tuned = _method_curve(trajectory.curves, "finetune")
    split = trajectory.phases.split_step
    if 0 not in tuned.index or split not in tuned.index or len(tuned) < 3:
        return _undefined(finding, "needs FT loss at step 0, the split step and a later step")
    final = int(tuned.index[-1])
    start, middle, end = tuned.loc[0], tuned.loc[split], tuned.iloc[-1]
    tests = _step_tests(trajectory.points, "finetune", [0, split, final])
    signs = {(0, split): 1.0, (split, final): -1.0}
    significant = [_passes(test, signs[(before, after)]) for before, after, test in tests]
    text = (f"FT loss {start:.3f} (step 0) → {middle:.3f} (step {split}) → {end:.3f} "
            f"(step {final})")
    return FindingResult(finding, _verdict([middle > start, end < middle],
                                           significant if len(tests) == 2 else [False]),
                         float(middle - start),
                         _largest_p([test.p_value for _, _, test in tests]), text,
                         test=_steps_text(tests))


# --- §5.2 ----------------------------------------------------------------------------------


def _mixing_effect(method: str) -> Evaluator:
    name = "FT" if method == "finetune" else "ICL"

    def evaluate(analysis: RunAnalysis, finding: Finding, settings: _Settings) -> FindingResult:
        mixing = analysis.of(MixingAnalysis)
        assert mixing is not None
        curves = mixing.curves[(mixing.curves["method"] == method) & (mixing.curves["step"] > 0)]
        wide = curves.pivot_table(index="step", columns="label", values="mean")
        if {"with mixing", "without mixing"} - set(wide.columns):
            return _undefined(finding, f"{name} loss missing with or without mixing")
        gaps = (wide["with mixing"] - wide["without mixing"]).dropna()
        if gaps.empty:
            return _undefined(finding, "no common step > 0 with and without mixing")
        points = mixing.points
        tests = []
        for step in gaps.index:
            at_step = points[points["step"] == step].pivot_table(
                index="task", columns="label", values=method)
            if {"with mixing", "without mixing"} <= set(at_step.columns):
                tests.append((int(step), paired_test(at_step["without mixing"],
                                                     at_step["with mixing"])))
        lower = [bool(gap < 0) for gap in gaps]
        significant = [_passes(test, -1.0) for _, test in tests] if tests else [False]
        final = float(gaps.iloc[-1])
        text = (f"{name} loss with − without mixing {final:+.3f} at step {gaps.index[-1]}; "
                f"lower at {sum(lower)}/{gaps.size} common steps")
        return FindingResult(
            finding, _verdict(lower, significant), final,
            _largest_p([test.p_value for _, test in tests]), text,
            test="Wilcoxon signed-rank over tasks at each step (" + "; ".join(
                f"step {step}: {test.describe()}" for step, test in tests) + ")")

    return evaluate
