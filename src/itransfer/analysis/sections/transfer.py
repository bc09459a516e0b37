"""§3.1: pre-trained vs instruction-tuned transfer, and FT-vs-ICL per task (Figure 1).

The YAML keys (``sections.transfer``), the analysis, Figure 1 and the section's four findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.rows import evaluated_step
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.significance import paired_test
from itransfer.analysis.verdicts import (
    Evaluator,
    Finding,
    FindingResult,
    RobustnessCheck,
    Settings,
    correlation_result,
    largest_p,
    nan_to_none,
    passes,
    undefined,
    verdict,
)
from itransfer.config import EvalConfig
from itransfer.schema import (
    DIFFICULTY_PLAN,
    PRETRAINED,
    Need,
    RunManifest,
    Section,
    register_section,
    transfer_plan,
)

KEY = "transfer"
FIGURE_1_LEFT = "Figure 1 (left)"
FIGURE_1_RIGHT = "Figure 1 (right)"


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferAnalysis:
    """§3.1, Figure 1."""

    spec: TransferSection
    loss_curves: pd.DataFrame  # label, context, shots → mean fine-tuning loss
    rouge_curves: pd.DataFrame  # the same for ROUGE-L (empty when nothing was generated)
    scatter: pd.DataFrame  # per task: finetune, icl (IT model)
    correlation: corr.Correlation
    partial: corr.PartialCorrelation  # the correlation with task difficulty partialled out
    icl_means: dict[str, float]  # label → mean ICL loss
    # (context, metric) → per task: pretrained, instruction_tuned (mean over k > 0)
    per_task_finetune: dict[tuple[str, str], pd.DataFrame]
    per_task_icl: pd.DataFrame  # per task: pretrained, instruction_tuned
    # per task: mean, std, n_seeds of the IT model's correlation_shots fine-tuning loss
    seed_spread: pd.DataFrame

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: TransferSection, *,
                n_boot: int, seed: int) -> TransferAnalysis:
        labels = {"pre-trained": section.pretrained,
                  "instruction-tuned": section.instruction_tuned}
        steps = {label: step for label, model in labels.items()
                 if (step := evaluated_step(frame, manifest, model)) is not None}
        tuned_step = steps.get("instruction-tuned")
        scatter = corr.transfer_vs_icl(
            frame, section.instruction_tuned, shots=section.correlation_shots,
            context=section.correlation_context, step=tuned_step,
        )
        pretrained_rows = corr.model_rows(frame, section.pretrained, steps.get("pre-trained"))
        tuned_rows = corr.model_rows(frame, section.instruction_tuned, tuned_step)
        return cls(
            spec=section,
            loss_curves=corr.transfer_curves(frame, labels, metric="loss", steps=steps),
            rouge_curves=corr.transfer_curves(frame, labels, metric="rougeL", steps=steps),
            scatter=scatter,
            correlation=corr.spearman(scatter["finetune"], scatter["icl"], n_boot=n_boot,
                                      seed=seed),
            partial=corr.difficulty_partial(
                scatter, "finetune", "icl",
                corr.zero_shot_difficulty(frame, section.pretrained), seed=seed),
            icl_means={label: float(corr.icl_values(rows).mean())
                       for label, rows in (("pre-trained", pretrained_rows),
                                           ("instruction-tuned", tuned_rows))},
            per_task_finetune=_per_task_finetune(pretrained_rows, tuned_rows),
            per_task_icl=_paired(corr.icl_values(pretrained_rows), corr.icl_values(tuned_rows)),
            seed_spread=corr.seed_spread(
                frame, section.instruction_tuned, shots=section.correlation_shots,
                context=section.correlation_context, step=tuned_step,
            ),
        )

    def tables_html(self) -> str:
        curves = self.loss_curves.pivot_table(index=["label", "context"], columns="shots",
                                              values="mean")
        return ("<h3>Mean fine-tuning test loss by k</h3>" + table(curves, index=True)
                + details(f"Per-task values ({len(self.scatter)} tasks)",
                          table(self.scatter, index=True))
                + self._seed_spread_html())

    def _seed_spread_html(self) -> str:
        # With one seed there is no spread to show (every std would be undefined).
        if self.seed_spread.empty or self.seed_spread["n_seeds"].max() < 2:
            return ""
        spec = self.spec
        summary = corr.summarize_spread(self.seed_spread).describe()
        # The line is the summary of a <details>: always visible, the per-task table folded.
        return details(
            f"Seed spread of the {spec.correlation_shots}-shot fine-tuning loss (context "
            f"{spec.correlation_context}) of {spec.instruction_tuned} (the values above average "
            f"the seeds): {summary}",
            table(self.seed_spread, index=True),
        )


def _per_task_finetune(pretrained_rows: pd.DataFrame, tuned_rows: pd.DataFrame
                       ) -> dict[tuple[str, str], pd.DataFrame]:
    """(context, metric) → per task: both models' fine-tuning metric averaged over k > 0."""
    return {(context, metric): _paired(_few_shot_mean(pretrained_rows, context, metric),
                                       _few_shot_mean(tuned_rows, context, metric))
            for context in _finetune_contexts(pretrained_rows, tuned_rows)
            for metric in ("loss", "rougeL")}


def _finetune_contexts(*frames: pd.DataFrame) -> list[str]:
    """The fine-tuning contexts run, "none" first (the paper's main curve)."""
    found = set()
    for rows in frames:
        found |= set(rows.loc[rows["method"] == "finetune", "context"].dropna())
    return sorted(found, key=lambda context: (context != "none", context))


def _few_shot_mean(rows: pd.DataFrame, context: str = "none", metric: str = "loss"
                   ) -> pd.Series:
    """Per task: a fine-tuning metric (one context) averaged over every k > 0 that was run."""
    tuned = rows[(rows["method"] == "finetune") & (rows["split"] == "test")
                 & (rows["metric"] == metric) & (rows["context"] == context)
                 & (rows["shots"] > 0)]
    return tuned.groupby(["task", "shots"])["value"].mean().groupby("task").mean()


def _paired(pretrained: pd.Series, tuned: pd.Series) -> pd.DataFrame:
    return pd.concat({"pretrained": pretrained, "instruction_tuned": tuned}, axis=1).dropna()


# --- Figure 1 --------------------------------------------------------------------------------


def draw_transfer_curves(analysis: RunAnalysis, path: Path) -> Path | None:
    """F1 left: mean fine-tuning loss (and ROUGE-L) vs k, pre-trained vs IT, per context."""
    transfer = analysis.of(TransferAnalysis)
    if transfer is None or transfer.loss_curves.empty:
        return None
    panels = [("loss", transfer.loss_curves, "mean test loss (NLL) ↓")]
    if not transfer.rouge_curves.empty:
        panels.append(("rougeL", transfer.rouge_curves, "mean ROUGE-L ↑"))
    figure, axes_list = plotting.new_figure(len(panels))
    labels = sorted(transfer.loss_curves["label"].unique(), key=lambda name: name != "pre-trained")
    contexts = ["none", *sorted(set(transfer.loss_curves["context"]) - {"none"})]
    for axes, (metric, curves, ylabel) in zip(axes_list, panels, strict=True):
        for label_index, label in enumerate(labels):
            for context_index, context in enumerate(contexts):
                curve = curves[(curves["label"] == label) & (curves["context"] == context)]
                if curve.empty:
                    continue
                plotting.errorbar(axes, curve["shots"].tolist(), curve,
                                  color=plotting.SHADES[label_index],
                                  marker=plotting.MARKERS[label_index],
                                  linestyle=plotting.LINE_STYLES[context_index
                                                                 % len(plotting.LINE_STYLES)],
                                  label=f"{label}, context: {context}")
        if metric == "loss":
            for label_index, label in enumerate(labels):
                icl = transfer.icl_means.get(label, math.nan)
                if not math.isnan(icl):
                    axes.axhline(icl, color=plotting.SHADES[label_index], linestyle=":",
                                 linewidth=1.2, label=f"{label}, ICL (no tuning)")
        axes.set_xlabel("fine-tuning examples per task (k)")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"{FIGURE_1_LEFT}: few-shot LoRA transfer to unseen tasks", fontsize=10)
    return plotting.save(figure, path)


def draw_transfer_vs_icl(analysis: RunAnalysis, path: Path) -> Path | None:
    """F1 right: per unseen task, IT model's k-shot fine-tuning loss vs its ICL loss."""
    transfer = analysis.of(TransferAnalysis)
    if transfer is None or transfer.scatter.empty:
        return None
    spec = transfer.spec
    figure, (axes,) = plotting.new_figure()
    plotting.scatter(
        axes, transfer.scatter["finetune"], transfer.scatter["icl"], transfer.correlation,
        xlabel=f"{spec.correlation_shots}-shot fine-tuning test loss "
               f"(context: {spec.correlation_context})",
        ylabel="in-context learning test loss",
        title=f"{FIGURE_1_RIGHT}: FT vs ICL per unseen task ({spec.instruction_tuned})")
    return plotting.save(figure, path)


PLOTS = (PaperFigure(FIGURE_1_LEFT, "fig1_transfer_curves.png", draw_transfer_curves),
         PaperFigure(FIGURE_1_RIGHT, "fig1_ft_vs_icl.png", draw_transfer_vs_icl))


# --- findings: the tests behind the verdicts -------------------------------------------------


def _it_harms_transfer(metric: str) -> Evaluator:
    """§3.1: "Pre-trained models adapt faster and with higher accuracy to unseen tasks than
    instruction-tuned models, even when fine-tuning leverages in-context exemplars" — judged on
    every fine-tuning context run (no context and exemplars), for loss (IT higher is harm) or
    ROUGE-L (IT lower is harm), each context with its paired Wilcoxon test over tasks on the
    metric averaged over k > 0."""
    name = "loss" if metric == "loss" else "ROUGE-L"

    def evaluate(analysis: RunAnalysis, finding: Finding, settings: Settings) -> FindingResult:
        transfer = analysis.of(TransferAnalysis)
        assert transfer is not None
        curves = transfer.loss_curves if metric == "loss" else transfer.rouge_curves
        if curves.empty:
            return undefined(finding, f"no fine-tuning {name} measured")
        judged = _harm_per_context(transfer, curves[curves["shots"] > 0], metric)
        if not judged.directions:
            return undefined(finding, f"fine-tuning {name} missing for one of the two models")
        return FindingResult(finding, verdict(judged.directions, judged.significant),
                             float(np.mean(judged.mean_gaps)), largest_p(judged.p_values),
                             "; ".join(judged.parts),
                             test="Wilcoxon signed-rank over tasks, per context (" +
                                  "; ".join(judged.tests) + ")")

    return evaluate


@dataclass
class _Harm:
    """What :func:`_harm_per_context` found, context by context."""

    directions: list[bool]
    significant: list[bool]
    p_values: list[float]
    parts: list[str]
    tests: list[str]
    mean_gaps: list[float]


def _harm_per_context(transfer: TransferAnalysis, curves: pd.DataFrame, metric: str) -> _Harm:
    """IT − PT at each k > 0 of each context, and each context's paired test over tasks."""
    harm_sign = 1.0 if metric == "loss" else -1.0
    found = _Harm([], [], [], [], [], [])
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
        found.directions += harmed
        found.significant.append(passes(test, harm_sign))
        found.p_values.append(test.p_value)
        found.mean_gaps.append(float(gaps.mean()))
        found.parts.append(f"context {context}: IT − PT {gaps.mean():+.3f}, IT worse at "
                           f"{sum(harmed)}/{gaps.size} k")
        found.tests.append(f"context {context}: {test.describe()}")
    return found


def _contexts_none_first(contexts: pd.Series) -> list[str]:
    return sorted(set(contexts.dropna()), key=lambda context: (context != "none", context))


def _it_improves_icl(analysis: RunAnalysis, finding: Finding, settings: Settings
                     ) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    pretrained = transfer.icl_means.get("pre-trained", float("nan"))
    tuned = transfer.icl_means.get("instruction-tuned", float("nan"))
    if math.isnan(pretrained) or math.isnan(tuned):
        return undefined(finding, "ICL loss missing for one of the two models")
    per_task = transfer.per_task_icl
    test = paired_test(per_task["pretrained"], per_task["instruction_tuned"])
    gap = tuned - pretrained
    return FindingResult(finding, verdict([gap < 0], [passes(test, -1.0)]), gap,
                         nan_to_none(test.p_value),
                         f"ICL loss PT {pretrained:.3f} → IT {tuned:.3f} ({gap:+.3f})",
                         test=f"Wilcoxon signed-rank over tasks: {test.describe()}")


def _ft_icl_correlation(analysis: RunAnalysis, finding: Finding, settings: Settings
                        ) -> FindingResult:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    return correlation_result(finding, transfer.correlation, partial=transfer.partial)


# --- findings: the same tests under the category-block bootstrap -----------------------------


def _harm_robustness(metric: str) -> RobustnessCheck:
    """Each context's paired test of "IT harms transfer", tasks resampled by category."""
    harm_sign = 1.0 if metric == "loss" else -1.0

    def check(analysis: RunAnalysis, settings: Settings) -> Robustness:
        transfer = analysis.of(TransferAnalysis)
        assert transfer is not None
        return combine([
            paired_check(f"context {context}: IT − PT", per_task["pretrained"],
                         per_task["instruction_tuned"], analysis.categories, sign=harm_sign,
                         n_boot=settings.n_boot, seed=settings.seed)
            for (context, measured), per_task in transfer.per_task_finetune.items()
            if measured == metric])

    return check


def _icl_robustness(analysis: RunAnalysis, settings: Settings) -> Robustness:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    per_task = transfer.per_task_icl
    return combine([paired_check("ICL IT − PT", per_task["pretrained"],
                                 per_task["instruction_tuned"], analysis.categories, sign=-1.0,
                                 n_boot=settings.n_boot, seed=settings.seed)])


def _correlation_robustness(analysis: RunAnalysis, settings: Settings) -> Robustness:
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    common = {"n_boot": settings.n_boot, "seed": settings.seed}
    return combine([correlation_check("ρ", transfer.scatter, "finetune", "icl",
                                      analysis.categories, **common)],
                   notes=[partial_check("partial ρ", transfer.scatter, "finetune", "icl",
                                        analysis.difficulty, analysis.categories, **common)])


# --- findings: the paper's claims and numbers ------------------------------------------------

IT_HARMS_TRANSFER = Finding(
    id="3.1-it-harms-transfer", paper_section="3.1", section=KEY, figure=FIGURE_1_LEFT,
    claim="Instruction tuning harms few-shot fine-tuning transfer to unseen tasks (loss), "
          "with and without exemplars in fine-tuning",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="IT fine-tune loss > pre-trained at every k > 0, with and without exemplars",
    how_to_compute="Mean unseen-task test loss after k-shot LoRA of the instruction-tuned "
                   "and the pre-trained model at each k > 0, for each fine-tuning context "
                   "run (none, exemplars); per context a paired Wilcoxon test over tasks on "
                   "the loss averaged over k > 0. Reproduces when IT is worse at every "
                   "(context, k) and every context's test has p < 0.05.",
    evaluate=_it_harms_transfer("loss"), robustness=_harm_robustness("loss"),
)
IT_HARMS_TRANSFER_ROUGE = Finding(
    id="3.1-it-harms-transfer-rouge", paper_section="3.1", section=KEY, figure=FIGURE_1_LEFT,
    claim="Instruction tuning harms few-shot fine-tuning transfer to unseen tasks "
          "(ROUGE-L), with and without exemplars in fine-tuning",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="pre-trained models adapt \"with higher accuracy\": IT ROUGE-L lower at "
               "k > 0",
    how_to_compute="As the loss finding, on the mean ROUGE-L of the LoRA-tuned models' "
                   "greedy generations (IT lower is harm).",
    evaluate=_it_harms_transfer("rougeL"), robustness=_harm_robustness("rougeL"),
)
IT_IMPROVES_ICL = Finding(
    id="3.1-it-improves-icl", paper_section="3.1", section=KEY, figure=FIGURE_1_LEFT,
    claim="ICL improves through instruction tuning despite the loss of transfer",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="IT ICL loss < pre-trained ICL loss",
    how_to_compute="Mean unseen-task ICL test loss (3 exemplars) of the instruction-tuned "
                   "vs the pre-trained model; paired Wilcoxon test over tasks.",
    evaluate=_it_improves_icl, robustness=_icl_robustness,
)
FT_ICL_CORRELATION = Finding(
    id="3.1-ft-icl-correlation", paper_section="3.1", section=KEY, figure=FIGURE_1_RIGHT,
    claim="Per-task few-shot fine-tuning loss correlates with ICL loss",
    kind="correlation", paper_value=0.936, paper_p=4.96e-42,
    paper_text="Spearman ρ = 0.936 (p = 4.96e-42, 93 tasks)",
    how_to_compute="Spearman's rho across unseen tasks between the IT model's 5-shot LoRA "
                   "test loss (no context) and its ICL test loss; bootstrap CI over tasks.",
    evaluate=_ft_icl_correlation, robustness=_correlation_robustness,
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class TransferSection(Section):
    """§3.1: pre-trained vs instruction-tuned transfer, and FT-vs-ICL per task."""

    title = "§3.1 Instruction tuning harms transfer; transfer correlates with ICL"
    paper_section = "3.1"
    analysis = TransferAnalysis
    plots = PLOTS
    findings = (IT_HARMS_TRANSFER, IT_HARMS_TRANSFER_ROUGE, IT_IMPROVES_ICL, FT_ICL_CORRELATION)

    pretrained: str = PRETRAINED
    instruction_tuned: str
    correlation_shots: int = 5
    correlation_context: str = "none"

    def model_labels(self) -> list[str]:
        return [self.pretrained, self.instruction_tuned]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = transfer_plan(eval_config.shots, eval_config.transfer_contexts)
        return [*(Need(label, "final", plan) for label in self.model_labels()),
                Need(self.pretrained, "final", DIFFICULTY_PLAN)]
