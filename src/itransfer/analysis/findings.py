"""Each of the paper's findings recomputed on one run, with an honest verdict.

Verdicts: "reproduces", "reproduces (not significant)" (right direction, p ≥ 0.05),
"partly reproduces", "does not reproduce", and "undefined" (too few tasks or points to say).
Findings whose section the experiment did not run are left out, not marked as failures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from itransfer.analysis.correlations import MIN_TASKS, Correlation, PartialCorrelation
from itransfer.analysis.paper import PAPER_FINDINGS, Finding
from itransfer.analysis.sections import (
    DataLimitsAnalysis,
    MixingAnalysis,
    RunAnalysis,
    SamplersAnalysis,
    TrajectoryAnalysis,
    TransferAnalysis,
)

ALPHA = 0.05
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
    run_p: float | None
    run_text: str
    correlation: Correlation | None = None


def evaluate_findings(analysis: RunAnalysis) -> list[FindingResult]:
    """Every paper finding whose section this run has, in the paper's order."""
    evaluators: dict[str, Callable[[RunAnalysis, Finding], FindingResult]] = {
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
    results = []
    for finding in PAPER_FINDINGS:
        if finding.section not in analysis.sections:
            continue
        results.append(evaluators[finding.id](analysis, finding))
    return results


def _undefined(finding: Finding, why: str) -> FindingResult:
    return FindingResult(finding, UNDEFINED, None, None, why)


def _paired_p(first: pd.Series, second: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p-value over tasks (NaN when too few tasks)."""
    differences = (second - first).dropna().to_numpy(dtype=float)
    if differences.size < MIN_TASKS:
        return float("nan")
    if np.all(differences == 0):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def _qualify(verdict: str, p_value: float) -> str:
    """Downgrade a full reproduction to "not significant" when its paired test says so."""
    if verdict == REPRODUCES and not math.isnan(p_value) and p_value >= ALPHA:
        return NOT_SIGNIFICANT
    return verdict


def _count_verdict(agree: int, total: int) -> str:
    if total == 0:
        return UNDEFINED
    if agree == total:
        return REPRODUCES
    return PARTLY if agree else FAILS


def _p_text(p_value: float) -> str:
    return "" if math.isnan(p_value) else f", Wilcoxon p={p_value:.2g}"


# --- §3.1 ----------------------------------------------------------------------------------


def _it_harms_transfer(metric: str) -> Callable[[RunAnalysis, Finding], FindingResult]:
    """§3.1: "Pre-trained models adapt faster and with higher accuracy to unseen tasks than
    instruction-tuned models, even when fine-tuning leverages in-context exemplars" — judged on
    every fine-tuning context run (no context and exemplars), for loss (IT higher is harm) or
    ROUGE-L (IT lower is harm), each context with its paired Wilcoxon test over tasks."""
    name, harm_sign = ("loss", 1.0) if metric == "loss" else ("ROUGE-L", -1.0)

    def evaluate(analysis: RunAnalysis, finding: Finding) -> FindingResult:
        transfer = analysis.of(TransferAnalysis)
        assert transfer is not None
        curves = transfer.loss_curves if metric == "loss" else transfer.rouge_curves
        if curves.empty:
            return _undefined(finding, f"no fine-tuning {name} measured")
        curves = curves[curves["shots"] > 0]
        harmed = total = 0
        p_values, parts, mean_gaps = [], [], []
        for context in _contexts_none_first(curves["context"]):
            wide = curves[curves["context"] == context].pivot_table(
                index="shots", columns="label", values="mean")
            if {"pre-trained", "instruction-tuned"} - set(wide.columns):
                continue
            gaps = (wide["instruction-tuned"] - wide["pre-trained"]).dropna()
            if gaps.empty:
                continue
            per_task = transfer.per_task_finetune.get((context, metric))
            p_value = (float("nan") if per_task is None else
                       _paired_p(per_task["pretrained"], per_task["instruction_tuned"]))
            context_harmed = int((harm_sign * gaps > 0).sum())
            harmed, total = harmed + context_harmed, total + gaps.size
            p_values.append(p_value)
            mean_gaps.append(float(gaps.mean()))
            parts.append(f"context {context}: IT − PT {gaps.mean():+.3f}, IT worse at "
                         f"{context_harmed}/{gaps.size} k{_p_text(p_value)}")
        if not total:
            return _undefined(finding, f"fine-tuning {name} missing for one of the two models")
        verdict = _count_verdict(harmed, total)
        if verdict == REPRODUCES and any(math.isnan(p) or p >= ALPHA for p in p_values):
            verdict = NOT_SIGNIFICANT
        worst_p = max(p_values) if not any(math.isnan(p) for p in p_values) else float("nan")
        return FindingResult(finding, verdict, float(np.mean(mean_gaps)), _nan_to_none(worst_p),
                             "; ".join(parts))

    return evaluate


def _contexts_none_first(contexts: pd.Series) -> list[str]:
    return sorted(set(contexts.dropna()), key=lambda context: (context != "none", context))


def _it_improves_icl(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    pretrained = transfer.icl_means.get("pre-trained", float("nan"))
    tuned = transfer.icl_means.get("instruction-tuned", float("nan"))
    if math.isnan(pretrained) or math.isnan(tuned):
        return _undefined(finding, "ICL loss missing for one of the two models")
    per_task = transfer.per_task_icl
    p_value = _paired_p(per_task["pretrained"], per_task["instruction_tuned"])
    gap = tuned - pretrained
    verdict = _qualify(REPRODUCES if gap < 0 else FAILS, p_value)
    text = f"ICL loss PT {pretrained:.3f} → IT {tuned:.3f} ({gap:+.3f}{_p_text(p_value)})"
    return FindingResult(finding, verdict, gap, _nan_to_none(p_value), text)


def _correlation_result(finding: Finding, correlation: Correlation, extra: str = "",
                        partial: PartialCorrelation | None = None) -> FindingResult:
    if partial is not None:
        extra += f"; {partial.describe()}"
    if not correlation.defined:
        return FindingResult(finding, UNDEFINED, None, None, correlation.describe() + extra,
                             correlation)
    if correlation.rho <= 0:
        verdict = FAILS
    elif correlation.p_value < ALPHA:
        verdict = REPRODUCES
    else:
        verdict = NOT_SIGNIFICANT
    return FindingResult(finding, verdict, correlation.rho, correlation.p_value,
                         correlation.describe() + extra, correlation)


def _ft_icl_correlation(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    return _correlation_result(finding, transfer.correlation, partial=transfer.partial)


# --- §3.2 ----------------------------------------------------------------------------------


def _less_data_helps(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    summary = limits.summary.dropna(subset=["icl_loss", "finetune_loss"], how="all")
    if len(summary) < 2:
        return _undefined(finding, f"needs two data limits with results, has {len(summary)}")
    smallest, largest = summary.iloc[0], summary.iloc[-1]
    icl_gap = smallest["icl_loss"] - largest["icl_loss"]
    ft_gap = smallest["finetune_loss"] - largest["finetune_loss"]
    gaps = [gap for gap in (icl_gap, ft_gap) if not math.isnan(gap)]
    verdict = _count_verdict(sum(gap < 0 for gap in gaps), len(gaps))
    text = (f"limit {smallest['limit']} − limit {largest['limit']}: ICL loss {icl_gap:+.3f}, "
            f"FT loss {ft_gap:+.3f}")
    return FindingResult(finding, verdict, float(np.nanmean(gaps)) if gaps else None, None, text)


def _delta_correlation(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    return _correlation_result(finding, limits.correlation,
                               f"; Δ = {limits.after} − {limits.before}", limits.partial)


# --- §4 ------------------------------------------------------------------------------------


def _proportional_best(analysis: RunAnalysis, finding: Finding) -> FindingResult:
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
    ranks, parts = [], []
    for column, label in (("seen_test_loss", "seen test"), ("icl_loss", "unseen ICL")):
        values = compared[column].dropna()
        if best not in values.index or len(values) < 2:
            parts.append(f"{label}: not measured")
            continue
        rank = int(values.rank(method="min")[best])
        ranks.append(rank)
        parts.append(f"{label} rank {rank}/{len(values)}")
    verdict = _count_verdict(sum(rank == 1 for rank in ranks), len(ranks))
    among = ", ".join(compared.index)
    return FindingResult(finding, verdict, None, None,
                         f"{best} among {{{among}}}: " + "; ".join(parts))


# --- §5.1 ----------------------------------------------------------------------------------


def _early_phase(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    early, late = trajectory.phases.early, trajectory.phases.late
    label = f"; steps 0 → {trajectory.phases.split_step}; {trajectory.early_partial.describe()}"
    if not early.defined:
        return FindingResult(finding, UNDEFINED, None, None, early.describe() + label, early)
    if not late.defined:
        return FindingResult(finding, UNDEFINED, early.rho, early.p_value,
                             early.describe() + label + " (late phase undefined: no comparison)",
                             early)
    verdict = REPRODUCES if early.rho < late.rho else FAILS
    return FindingResult(finding, verdict, early.rho, early.p_value,
                         f"{early.describe()}{label} (late phase ρ={late.rho:.3f})", early)


def _late_phase(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    phases = trajectory.phases
    early, late = phases.early, phases.late
    label = f"; steps {phases.split_step} → {phases.final_step}"
    result = _correlation_result(finding, late, label, trajectory.late_partial)
    if result.verdict in (UNDEFINED, FAILS):
        return result
    if not early.defined:
        return result
    if late.rho <= early.rho:
        return FindingResult(finding, FAILS, late.rho, late.p_value,
                             f"{late.describe()}{label} — not above the early phase "
                             f"(ρ={early.rho:.3f}); {trajectory.late_partial.describe()}", late)
    return result


def _method_curve(curves: pd.DataFrame, method: str) -> pd.Series:
    chosen = curves[curves["method"] == method]
    return chosen.set_index("step")["mean"].sort_index().dropna()


def _icl_improves_throughout(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    icl = _method_curve(trajectory.curves, "icl")
    if len(icl) < 2:
        return _undefined(finding, f"needs ICL loss at two steps, has {len(icl)}")
    decreases = int((icl.diff().dropna() < 0).sum())
    overall = float(icl.iloc[-1] - icl.iloc[0])
    verdict = REPRODUCES if decreases == len(icl) - 1 else PARTLY if overall < 0 else FAILS
    text = (f"ICL loss {icl.iloc[0]:.3f} (step {icl.index[0]}) → {icl.iloc[-1]:.3f} "
            f"(step {icl.index[-1]}); decreases at {decreases}/{len(icl) - 1} checkpoints")
    return FindingResult(finding, verdict, overall, None, text)


def _forgetting_then_recovery(analysis: RunAnalysis, finding: Finding) -> FindingResult:
    trajectory = analysis.of(TrajectoryAnalysis)
    assert trajectory is not None
    tuned = _method_curve(trajectory.curves, "finetune")
    split = trajectory.phases.split_step
    if 0 not in tuned.index or split not in tuned.index or len(tuned) < 3:
        return _undefined(finding, "needs FT loss at step 0, the split step and a later step")
    start, middle, end = tuned.loc[0], tuned.loc[split], tuned.iloc[-1]
    rises, falls = middle > start, end < middle
    verdict = _count_verdict(int(rises) + int(falls), 2)
    text = (f"FT loss {start:.3f} (step 0) → {middle:.3f} (step {split}) → {end:.3f} "
            f"(step {tuned.index[-1]})")
    return FindingResult(finding, verdict, float(middle - start), None, text)


# --- §5.2 ----------------------------------------------------------------------------------


def _mixing_effect(method: str) -> Callable[[RunAnalysis, Finding], FindingResult]:
    name = "FT" if method == "finetune" else "ICL"

    def evaluate(analysis: RunAnalysis, finding: Finding) -> FindingResult:
        mixing = analysis.of(MixingAnalysis)
        assert mixing is not None
        curves = mixing.curves[(mixing.curves["method"] == method) & (mixing.curves["step"] > 0)]
        wide = curves.pivot_table(index="step", columns="label", values="mean")
        if {"with mixing", "without mixing"} - set(wide.columns):
            return _undefined(finding, f"{name} loss missing with or without mixing")
        gaps = (wide["with mixing"] - wide["without mixing"]).dropna()
        if gaps.empty:
            return _undefined(finding, "no common step > 0 with and without mixing")
        lower = int((gaps < 0).sum())
        verdict = _count_verdict(lower, gaps.size)
        final = float(gaps.iloc[-1])
        text = (f"{name} loss with − without mixing {final:+.3f} at step {gaps.index[-1]}; "
                f"lower at {lower}/{gaps.size} common steps")
        return FindingResult(finding, verdict, final, None, text)

    return evaluate


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
