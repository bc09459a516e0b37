"""§4: models by task sampler, the paper's four compared (Figure 3).

The YAML keys (``sections.samplers``), the analysis, Figure 3 and the section's finding.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from itransfer.analysis import correlations as corr
from itransfer.analysis import plotting, seen_fit
from itransfer.analysis.block_bootstrap import (
    Check,
    Robustness,
    block_bootstrap,
    combine,
    lead_statistic,
)
from itransfer.analysis.html import table
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.rows import evaluated_step
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.significance import ranking_stability
from itransfer.analysis.verdicts import (
    Finding,
    FindingResult,
    Settings,
    largest_p,
    undefined,
    verdict,
)
from itransfer.config import EvalConfig
from itransfer.schema import EvalPlan, Need, RunManifest, Section, register_section

KEY = "samplers"
FIGURE_3_LEFT = "Figure 3 (left)"
FIGURE_3_CENTRE_RIGHT = "Figure 3 (centre, right)"
# A ranking "holds" when the candidate is first in at least this share of task resamples.
RANKING_CONFIDENCE = 0.95


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplersAnalysis:
    """§4, Figure 3: the paper's four samplers compared, the rest beside them."""

    spec: SamplersSection
    summary: pd.DataFrame  # per sampler (every one trained): seen losses, ICL loss, role
    binned: pd.DataFrame  # per compared sampler, split and size bin: mean seen loss
    comparison: seen_fit.SamplerComparison
    per_task_seen_test: pd.DataFrame  # seen task × compared sampler: test loss
    per_task_icl: pd.DataFrame  # unseen task × compared sampler: ICL loss

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: SamplersSection, *,
                n_boot: int, seed: int) -> SamplersAnalysis:
        steps = {name: step for name, model in section.models.items()
                 if (step := evaluated_step(frame, manifest, model)) is not None}
        summary = seen_fit.sampler_summary(frame, section.models, steps=steps)
        infos = {name: manifest.models.get(model) for name, model in section.models.items()}
        kinds = {name: seen_fit.sampler_kind(name, info.sampler if info else None)
                 for name, info in infos.items()}
        comparison = seen_fit.compare_samplers(
            summary, kinds,
            {name: (info.sampler_spec or {}) if info else {} for name, info in infos.items()},
            keep=section.keep_reverse_annealing,
        )
        summary["sampler_kind"] = summary["sampler"].map(kinds)
        summary["in_figure_3"] = summary["sampler"].isin(comparison.compared)
        compared_models = {name: section.models[name] for name in comparison.compared}
        return cls(
            spec=section, summary=summary, comparison=comparison,
            binned=seen_fit.size_binned_seen_losses(frame, compared_models, steps=steps),
            per_task_seen_test=pd.DataFrame({
                name: seen_fit.seen_task_table(frame, model, steps.get(name))["test_loss"]
                for name, model in compared_models.items()}),
            per_task_icl=pd.DataFrame({
                name: corr.icl_values(corr.model_rows(frame, model, steps.get(name)))
                for name, model in compared_models.items()}),
        )

    @property
    def compared(self) -> pd.DataFrame:
        """The summary rows of the samplers Figure 3 compares, in its order."""
        return (self.summary.set_index("sampler").loc[list(self.comparison.compared)]
                .reset_index())

    @property
    def others(self) -> pd.DataFrame:
        return self.summary[~self.summary["in_figure_3"]].reset_index(drop=True)

    def tables_html(self) -> str:
        comparison = self.comparison
        columns = ["sampler", "model", "sampler_kind", "seen_train_loss", "seen_validation_loss",
                   "seen_test_loss", "icl_loss", "n_seen_tasks", "n_unseen_tasks"]
        body = ("<p>Compared as in Figure 3: proportional, uniform and the best "
                f"{self.spec.keep_reverse_annealing} reverse-annealing runs by mean seen-task "
                "validation loss (§4).</p>" + table(self.compared[columns]))
        if not comparison.sweep.empty:
            kept = comparison.sweep[comparison.sweep["kept"]]
            chosen = "; ".join(
                f"{row.sampler} (T_max={_number(row.max_temperature)}, {row.schedule} schedule, "
                f"validation loss {row.seen_validation_loss:.4f})" for row in kept.itertuples())
            body += ("<h3>Reverse-annealing sweep, ranked on seen validation loss</h3>"
                     f"<p>Kept: {html.escape(chosen or 'none (no validation loss)')}.</p>"
                     + table(comparison.sweep))
        if comparison.notes:
            body += "<p><em>" + html.escape("; ".join(comparison.notes)) + ".</em></p>"
        if not self.others.empty:
            body += ("<h3>Other samplers (not in the paper's comparison)</h3>"
                     + table(self.others[columns]))
        if not self.binned.empty:
            body += "<h3>Seen-task loss by training-set size</h3>" + table(
                self.binned.pivot_table(index=["split", "label"], columns="bin",
                                        values="mean", observed=True), index=True)
        return body


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


# --- Figure 3 --------------------------------------------------------------------------------


def draw_sampler_summary(analysis: RunAnalysis, path: Path) -> Path | None:
    """F3 left: per compared sampler, mean seen train/test loss and unseen ICL loss (bars)."""
    samplers = analysis.of(SamplersAnalysis)
    bars = (("seen_train_loss", "seen tasks: train loss"),
            ("seen_test_loss", "seen tasks: test loss"),
            ("icl_loss", "unseen tasks: ICL loss"))
    if samplers is None or samplers.compared[[c for c, _ in bars]].isna().all(axis=None):
        return None
    summary = samplers.compared  # the paper's four; the report lists the others in a table
    positions = np.arange(len(summary))
    width = 0.8 / len(bars)
    figure, (axes,) = plotting.new_figure(width_per_panel=max(5.0, 1.6 * len(summary)))
    for index, (column, label) in enumerate(bars):
        values = summary[column].to_numpy(dtype=float)
        drawn = axes.bar(positions + (index - 1) * width, np.nan_to_num(values), width,
                         label=label, color=plotting.SHADES[index + 1] if index else "white",
                         edgecolor="black", hatch=plotting.HATCHES[index])
        axes.bar_label(drawn, labels=[f"{v:.2f}" if not math.isnan(v) else "n/a"
                                      for v in values], fontsize=7)
    axes.set_xticks(positions, list(summary["sampler"]))
    axes.set_xlabel("task sampler P(K)")
    axes.set_ylabel("mean loss ↓")
    axes.set_title(f"{FIGURE_3_LEFT}: multi-task fit vs ICL by sampler", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, axis="y", alpha=0.3)
    return plotting.save(figure, path)


def draw_size_binned(analysis: RunAnalysis, path: Path) -> Path | None:
    """F3 centre/right: seen-task train and test loss by training-set size bin, per sampler."""
    samplers = analysis.of(SamplersAnalysis)
    if samplers is None or samplers.binned.empty:
        return None
    binned = samplers.binned
    bins = list(dict.fromkeys(binned["bin"].astype(str)))
    positions = {name: index for index, name in enumerate(bins)}
    figure, axes_list = plotting.new_figure(2)
    for axes, split, panel in zip(axes_list, ("train", "test"), ("centre", "right"),
                                  strict=True):
        for index, label in enumerate(dict.fromkeys(binned["label"])):
            curve = binned[(binned["label"] == label) & (binned["split"] == split)]
            curve = curve[curve["n_tasks"] > 0]
            if curve.empty:
                continue
            plotting.errorbar(axes, [positions[str(name)] for name in curve["bin"]], curve,
                              label=label, **plotting.style(index))
        axes.set_xticks(range(len(bins)), bins, rotation=20, fontsize=8)
        axes.set_xlabel("task training-set size (log-spaced bins)")
        axes.set_ylabel(f"mean seen-task {split} loss ↓")
        axes.set_title(f"Figure 3 ({panel}): {split} loss by task size", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, title="sampler", title_fontsize=8)
    return plotting.save(figure, path)


PLOTS = (PaperFigure(FIGURE_3_LEFT, "fig3_samplers.png", draw_sampler_summary),
         PaperFigure(FIGURE_3_CENTRE_RIGHT, "fig3_size_bins.png", draw_size_binned))


# --- findings: the test behind the verdict ---------------------------------------------------


def _proportional_best(analysis: RunAnalysis, finding: Finding, settings: Settings
                       ) -> FindingResult:
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    compared = samplers.compared.set_index("sampler")
    proportional = [name for name, kind in compared["sampler_kind"].items()
                    if kind == "proportional"]
    if not proportional:
        return undefined(finding, "no proportional-sampling model in this run")
    if len(compared) < 2:
        return undefined(finding, "needs proportional and at least one of the samplers it is "
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
    return FindingResult(finding, verdict(directions, significant), None,
                         largest_p(p_values), f"{best} among {{{among}}}: " + "; ".join(parts),
                         test=f"bootstrap over tasks, ✓ needs first in ≥ "
                              f"{RANKING_CONFIDENCE:.0%} (" + "; ".join(tests) + ")")


# --- findings: the same test under the category-block bootstrap ------------------------------


def _proportional_robustness(analysis: RunAnalysis, settings: Settings) -> Robustness:
    """How often proportional stays first when categories, then tasks, are resampled."""
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    kinds = samplers.compared.set_index("sampler")["sampler_kind"]
    proportional = [name for name, kind in kinds.items() if kind == "proportional"]
    checks = []
    for per_task, label in ((samplers.per_task_seen_test, "seen test"),
                            (samplers.per_task_icl, "unseen ICL")):
        if not proportional or proportional[0] not in per_task.columns or per_task.shape[1] < 2:
            continue
        target = list(per_task.columns).index(proportional[0])
        result = block_bootstrap(per_task, analysis.categories, lead_statistic(target),
                                 n_boot=settings.n_boot, seed=settings.seed)
        first = (f" first in {result.share_above:.0%} of resamples;" if result.defined else "")
        checks.append(Check(f"{label}:{first} {proportional[0]}'s lead", result,
                            result.defined and result.share_above >= RANKING_CONFIDENCE))
    return combine(checks)


# --- findings: the paper's claim -------------------------------------------------------------

PROPORTIONAL_BEST = Finding(
    id="4-proportional-best", paper_section="4", section=KEY, figure=FIGURE_3_LEFT,
    claim="Proportional sampling has the lowest seen-task test loss and unseen ICL loss",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="proportional ranks first on both",
    how_to_compute="Among the samplers of Figure 3 (proportional, uniform and the two "
                   "reverse-annealing runs with the lowest mean seen-task validation loss; "
                   "DWA and the other runs are reported apart), rank by mean seen-task test "
                   "loss and by mean unseen ICL loss; proportional should rank first on "
                   "both, and stay first in at least 95% of bootstrap resamples of the "
                   "tasks.",
    evaluate=_proportional_best, robustness=_proportional_robustness,
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class SamplersSection(Section):
    """§4: models by task sampler (the names are display labels, e.g. "proportional")."""

    title = "§4 Multi-task generalization vs ICL (task samplers)"
    paper_section = "4"
    analysis = SamplersAnalysis
    plots = PLOTS
    findings = (PROPORTIONAL_BEST,)

    models: dict[str, str]  # sampler name → variant label
    # §4: "We sweep over T = 10^{2,3,4,5} and report the two highest performing methods based
    # on seen task validation data": how many reverse-annealing runs Figure 3 keeps.
    keep_reverse_annealing: int = Field(default=2, ge=1)

    def model_labels(self) -> list[str]:
        return list(self.models.values())

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = EvalPlan(icl=True, seen=True)
        return [Need(label, "final", plan) for label in self.model_labels()]
