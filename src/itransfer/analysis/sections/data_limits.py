"""§3.2: models by per-task data limit (Figure 2).

The YAML keys (``sections.data_limits``), the analysis, Figure 2 and the section's two findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from itransfer.analysis import correlations as corr
from itransfer.analysis import plotting
from itransfer.analysis.block_bootstrap import (
    Robustness,
    combine,
    correlation_check,
    paired_check,
    partial_check,
)
from itransfer.analysis.html import details, table
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.registry import Section, register_section
from itransfer.analysis.rows import evaluated_step
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.seeds import spread_by_point, spread_html
from itransfer.analysis.significance import paired_test
from itransfer.analysis.verdicts import (
    BootstrapOptions,
    Finding,
    FindingResult,
    Parts,
    correlation_result,
    undefined,
)
from itransfer.config.paper_constants import PAPER_TASKS
from itransfer.config.schema import EvalConfig
from itransfer.runs.eval_plan import DIFFICULTY_PLAN, PRETRAINED, Need, transfer_plan

KEY = "data_limits"
FIGURE_2_LEFT = "Figure 2 (left)"
FIGURE_2_RIGHT = "Figure 2 (right)"


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataLimitsAnalysis:
    """§3.2, Figure 2."""

    section: DataLimitsSection
    summary: pd.DataFrame  # per limit: icl_loss, finetune_loss, the model's budget and steps
    before: str
    after: str
    deltas: pd.DataFrame  # per task: icl/finetune before, after, delta
    correlation: corr.Correlation
    partial: corr.PartialCorrelation  # the correlation with task difficulty partialled out
    # per task: the largest limit ("before") and the smallest ("after"), for the paired tests
    extremes: pd.DataFrame
    # per limit: the seeds behind its k-shot fine-tuning loss and their spread
    seed_spread: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: DataLimitsSection, *,
                n_boot: int, seed: int) -> DataLimitsAnalysis:
        before, after = section.delta
        summary = corr.data_limit_summary(frame, section.models, shots=section.shots)
        measured = summary.dropna(subset=["icl_loss", "finetune_loss"], how="all")
        extremes = pd.DataFrame()
        if len(measured) >= 2:
            largest, smallest = measured.iloc[-1]["model"], measured.iloc[0]["model"]
            extremes = corr.model_deltas(
                frame, largest, smallest, shots=section.shots,
                before_step=evaluated_step(frame, manifest, largest),
                after_step=evaluated_step(frame, manifest, smallest))
        deltas = corr.model_deltas(
            frame, before, after, shots=section.shots,
            before_step=evaluated_step(frame, manifest, before),
            after_step=evaluated_step(frame, manifest, after),
        )
        return cls(
            section=section,
            summary=_with_budgets(summary, manifest), extremes=extremes,
            before=before, after=after, deltas=deltas,
            correlation=corr.delta_correlation(deltas, n_boot=n_boot, seed=seed),
            partial=corr.difficulty_partial(
                deltas, "finetune_delta", "icl_delta",
                corr.zero_shot_difficulty(frame, manifest.pretrained), seed=seed),
            seed_spread=spread_by_point(
                frame, {f"limit {limit}": (model, evaluated_step(frame, manifest, model))
                        for limit, model in section.models.items()}, shots=section.shots),
        )

    def tables_html(self) -> str:
        return ("<h3>Mean loss by data limit</h3>" + _budget_note(self.summary["budget"])
                + table(self.summary)
                + details(f"Per-task changes, {self.after} − {self.before} "
                          f"({len(self.deltas)} tasks)", table(self.deltas, index=True))
                + spread_html(self.seed_spread,
                              f"the {self.section.shots}-shot fine-tuning loss per data limit"))


def _with_budgets(summary: pd.DataFrame, manifest: RunManifest) -> pd.DataFrame:
    """Which step budget trained each model: under "epochs" a smaller limit also means fewer
    steps, so the report must say which one produced each number (§3.2)."""
    infos = [manifest.models.get(model) for model in summary["model"]]
    return summary.assign(
        budget=[info.budget if info else None for info in infos],
        # object, so the report shows whole step counts and "—" where none is recorded
        total_steps=pd.Series([info.total_steps if info else None for info in infos],
                              index=summary.index, dtype=object),
    )


BUDGET_MEANINGS = {
    "epochs": "train.epochs passes over the model's own (limited) training data",
    "steps": "as many steps as the same run without the data limit",
    "fixed": "train.steps, set explicitly",
}


def _budget_note(budgets: pd.Series) -> str:
    """One line saying what set each model's step count (``budget`` column of the summary)."""
    named = [budget for budget in dict.fromkeys(budgets.dropna()) if budget in BUDGET_MEANINGS]
    if not named:
        return "<p>Step budget: not recorded (a manifest written before version 3).</p>"
    meanings = "; ".join(f"<b>{budget}</b>: {BUDGET_MEANINGS[budget]}" for budget in named)
    mixed = " The models differ in budget." if len(named) > 1 else ""
    return f"<p>Step budget (column <code>budget</code>): {meanings}.{mixed}</p>"


# --- Figure 2 --------------------------------------------------------------------------------


def draw_data_limits(analysis: RunAnalysis, path: Path) -> Path | None:
    """F2 left: mean ICL and k-shot fine-tuning loss against the per-task data limit."""
    limits = analysis.of(DataLimitsAnalysis)
    if limits is None or limits.summary[["icl_loss", "finetune_loss"]].isna().all(axis=None):
        return None
    summary = limits.summary
    positions = np.arange(len(summary))
    figure, (axes,) = plotting.new_figure()
    for index, (column, label) in enumerate(
        (("icl_loss", "in-context learning"),
         ("finetune_loss", f"{limits.section.shots}-shot fine-tuning"))
    ):
        axes.plot(positions, summary[column], label=label, markersize=7,
                  markerfacecolor="white", linewidth=1.6, **plotting.style(index))
    axes.set_xticks(positions, [str(limit) for limit in summary["limit"]])
    axes.set_xlabel("training examples per task (data limit)")
    axes.set_ylabel("mean unseen-task test loss ↓")
    axes.set_title(f"{FIGURE_2_LEFT}: data per task vs transfer and ICL", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return plotting.save(figure, path)


def draw_data_limit_deltas(analysis: RunAnalysis, path: Path) -> Path | None:
    """F2 right: per task, change in fine-tuning loss vs change in ICL loss between two limits."""
    limits = analysis.of(DataLimitsAnalysis)
    if limits is None or limits.deltas.empty:
        return None
    figure, (axes,) = plotting.new_figure()
    plotting.scatter(
        axes, limits.deltas["finetune_delta"], limits.deltas["icl_delta"],
        limits.correlation, zero_lines=True,
        xlabel=f"Δ {limits.section.shots}-shot fine-tuning loss",
        ylabel="Δ in-context learning loss",
        title=f"{FIGURE_2_RIGHT}: per-task change, {limits.after} − {limits.before}")
    return plotting.save(figure, path)


PLOTS = (PaperFigure(FIGURE_2_LEFT, "fig2_data_limits.png", draw_data_limits),
         PaperFigure(FIGURE_2_RIGHT, "fig2_delta_scatter.png", draw_data_limit_deltas))


# --- findings: the tests behind the verdicts -------------------------------------------------


def _less_data_helps(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                     ) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    summary = limits.summary.dropna(subset=["icl_loss", "finetune_loss"], how="all")
    if len(summary) < 2:
        return undefined(finding, f"needs two data limits with results, has {len(summary)}")
    smallest, largest = summary.iloc[0], summary.iloc[-1]
    judged, parts, tests = Parts(), [], []
    for method, name in (("icl", "ICL"), ("finetune", "FT")):
        gap = smallest[f"{method}_loss"] - largest[f"{method}_loss"]
        if math.isnan(gap):
            continue
        extremes = limits.extremes
        test = (paired_test(extremes[f"{method}_before"], extremes[f"{method}_after"], -1.0,
                            opposite="more data better")
                if not extremes.empty else paired_test(pd.Series(), pd.Series(), -1.0))
        judged.add_paired(test, fallback=bool(gap < 0))
        parts.append(f"{name} loss {gap:+.3f}")
        tests.append(f"{name}: {test.describe()}")
    if not judged.directions:
        return undefined(finding, "no ICL or fine-tuning loss at the smallest and largest limit")
    text = f"limit {smallest['limit']} − limit {largest['limit']}: " + ", ".join(parts)
    return FindingResult(finding, judged.verdict(),
                         float(np.nanmean([smallest["icl_loss"] - largest["icl_loss"],
                                           smallest["finetune_loss"] - largest["finetune_loss"]])),
                         judged.largest_p(), text,
                         test="Wilcoxon signed-rank over tasks, smallest vs largest limit ("
                              + "; ".join(tests) + ")")


def _delta_correlation(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                       ) -> FindingResult:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    return correlation_result(finding, limits.correlation,
                              f"; Δ = {limits.after} − {limits.before}", limits.partial)


# --- findings: the same tests under the category-block bootstrap -----------------------------


def _less_data_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions) -> Robustness:
    """The smallest vs the largest limit's paired tests, tasks resampled by category."""
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    extremes = limits.extremes
    if extremes.empty:
        return combine([])
    return combine([
        paired_check(f"{name} smallest − largest limit", extremes[f"{method}_before"],
                     extremes[f"{method}_after"], analysis.categories, sign=-1.0,
                     n_boot=bootstrap.n_boot, seed=bootstrap.seed)
        for method, name in (("icl", "ICL"), ("finetune", "FT"))])


def _delta_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions) -> Robustness:
    limits = analysis.of(DataLimitsAnalysis)
    assert limits is not None
    common = {"n_boot": bootstrap.n_boot, "seed": bootstrap.seed}
    return combine([correlation_check("ρ", limits.deltas, "finetune_delta", "icl_delta",
                                      analysis.categories, **common)],
                   notes=[partial_check("partial ρ", limits.deltas, "finetune_delta",
                                        "icl_delta", analysis.difficulty, analysis.categories,
                                        **common)])


# --- findings: the paper's claims and numbers ------------------------------------------------

LESS_DATA_HELPS = Finding(
    id="3.2-less-data-helps", paper_section="3.2", section=KEY, figure=FIGURE_2_LEFT,
    claim="Less data per task improves both ICL and fine-tuning transfer",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="smallest limit has lower ICL and FT loss than the largest",
    how_to_compute="Mean ICL loss and 5-shot fine-tuning loss of the smallest-limit model "
                   "minus those of the largest-limit model (both should be negative); a "
                   "paired Wilcoxon test over tasks for each, one-sided (smaller limit "
                   "lower).",
    evaluate=_less_data_helps, robustness=_less_data_robustness,
)
DELTA_CORRELATION = Finding(
    id="3.2-delta-correlation", paper_section="3.2", section=KEY, figure=FIGURE_2_RIGHT,
    claim="Per-task changes in fine-tuning loss correlate with changes in ICL loss",
    kind="correlation", paper_value=0.705, paper_p=6.31e-15,
    paper_text=f"Spearman ρ = 0.705, p = 6.31e-15; {PAPER_TASKS}; 5,000 → 50 per task",
    how_to_compute="Spearman's rho across unseen tasks between Δ 5-shot LoRA loss and "
                   "Δ ICL loss from the first to the second model of `data_limits.delta`.",
    evaluate=_delta_correlation, robustness=_delta_robustness,
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class DataLimitsSection(Section):
    """§3.2: models by per-task data limit; ``delta`` = (before, after) for the change scatter."""

    title = "§3.2 Less data per task improves transfer and ICL"
    paper_section = "3.2"
    analysis = DataLimitsAnalysis
    plots = PLOTS
    findings = (LESS_DATA_HELPS, DELTA_CORRELATION)

    models: dict[str, str]  # limit (as text) → variant label
    delta: tuple[str, str]  # the two variants whose per-task changes are correlated
    shots: int = 5

    def model_labels(self) -> list[str]:
        return [*self.models.values(), *self.delta]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = transfer_plan({self.shots})
        return [*(Need(label, "final", plan) for label in dict.fromkeys(self.model_labels())),
                Need(PRETRAINED, "final", DIFFICULTY_PLAN)]
