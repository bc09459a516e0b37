"""§5.2: trajectories with and without unsupervised data mixed in.

The YAML keys (``sections.mixing``), the analysis and the section's two findings; its curves
are drawn into Figure 4 (left) with §5.1's (:mod:`.trajectory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import pandas as pd
from pydantic import ConfigDict, Field

from itransfer.analysis import correlations as corr
from itransfer.analysis.block_bootstrap import Robustness, combine, paired_check
from itransfer.analysis.html import table
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.registry import Section, register_section
from itransfer.analysis.rows import trajectory_steps
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.sections.trajectory import FIGURE_4_LEFT
from itransfer.analysis.seeds import spread_by_point, spread_html
from itransfer.analysis.significance import PairedTest, paired_test
from itransfer.analysis.verdicts import (
    BootstrapOptions,
    Finding,
    FindingResult,
    Parts,
    undefined,
)
from itransfer.config.schema import EvalConfig
from itransfer.runs.eval_plan import Need, trajectory_needs

KEY = "mixing"


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixingAnalysis:
    """§5.2, Figure 4 (left)."""

    section: MixingSection
    curves: pd.DataFrame  # label (with | without), step, method → mean loss
    points: pd.DataFrame  # label, step, task → icl, finetune loss (for the paired tests)
    # per label and step > 0: the seeds behind its k-shot fine-tuning loss and their spread
    seed_spread: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: MixingSection, *,
                n_boot: int, seed: int) -> MixingAnalysis:
        curves, points = [], []
        spread_points: dict[str, tuple[str, int | None]] = {}
        for label, model in (("with mixing", section.with_), ("without mixing", section.without)):
            steps = trajectory_steps(frame, manifest, model)
            spread_points |= {f"{label}, step {step}": (model, step) for step in steps if step}
            curve = corr.trajectory_curves(frame, model, steps, pretrained=manifest.pretrained,
                                           shots=section.shots)
            curves.append(curve.assign(label=label))
            points.append(corr.trajectory_points(frame, model, steps,
                                                 pretrained=manifest.pretrained,
                                                 shots=section.shots).assign(label=label))
        return cls(section=section, curves=pd.concat(curves, ignore_index=True),
                   points=pd.concat(points, ignore_index=True),
                   seed_spread=spread_by_point(frame, spread_points, shots=section.shots))

    def tables_html(self) -> str:
        return (f"<p>Drawn in {FIGURE_4_LEFT} above.</p><h3>Mean loss by step</h3>"
                + table(self.curves.pivot_table(index=["method", "label"], columns="step",
                                                values="mean"), index=True)
                + spread_html(self.seed_spread, f"the {self.section.shots}-shot fine-tuning loss "
                              "with and without mixing"))


# --- findings: the tests behind the verdicts -------------------------------------------------


def _mixing_effect(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions, *,
                   method: str, final_only: bool) -> FindingResult:
    """With − without mixing < 0 at each common step > 0 (``final_only``: at the last common
    step), each step with a paired test one-sided for "with mixing lower"."""
    name = "FT" if method == "finetune" else "ICL"
    mixing = analysis.of(MixingAnalysis)
    assert mixing is not None
    gaps = _gaps(mixing, method)
    if gaps is None:
        return undefined(finding, f"{name} loss missing with or without mixing")
    if gaps.empty:
        return undefined(finding, "no common step > 0 with and without mixing")
    if final_only:
        gaps = gaps.iloc[-1:]
    tests = _step_tests(mixing.points, method, gaps.index)
    judged = Parts()
    for step, gap in gaps.items():
        test = tests.get(int(step), paired_test(pd.Series(), pd.Series(), -1.0))
        judged.add_paired(test, fallback=bool(gap < 0))
    final = float(gaps.iloc[-1])
    text = (f"{name} loss with − without mixing {final:+.3f} at step {gaps.index[-1]}; "
            f"mean lower at {int((gaps < 0).sum())}/{gaps.size} and ranks lower at "
            f"{sum(judged.directions)}/{gaps.size} of the steps judged")
    return FindingResult(
        finding, judged.verdict(), final, judged.largest_p(), text,
        test="Wilcoxon signed-rank over tasks, one-sided, at each step judged (" + "; ".join(
            f"step {step}: {test.describe()}" for step, test in tests.items()) + ")")


def _gaps(mixing: MixingAnalysis, method: str) -> pd.Series | None:
    """Mean loss with − without mixing at each common step > 0; None when one side is
    missing altogether."""
    curves = mixing.curves[(mixing.curves["method"] == method) & (mixing.curves["step"] > 0)]
    wide = curves.pivot_table(index="step", columns="label", values="mean")
    if {"with mixing", "without mixing"} - set(wide.columns):
        return None
    return (wide["with mixing"] - wide["without mixing"]).dropna()


def _per_task_at(points: pd.DataFrame, method: str, step: int) -> pd.DataFrame | None:
    """Each task's loss with and without mixing at ``step``, or None without both."""
    at_step = points[points["step"] == step].pivot_table(
        index="task", columns="label", values=method)
    return at_step if {"with mixing", "without mixing"} <= set(at_step.columns) else None


def _step_tests(points: pd.DataFrame, method: str, steps: pd.Index) -> dict[int, PairedTest]:
    """At each step, the paired test over tasks of without vs with mixing (claimed: lower)."""
    tests = {}
    for step in steps:
        if (at_step := _per_task_at(points, method, step)) is not None:
            tests[int(step)] = paired_test(at_step["without mixing"], at_step["with mixing"],
                                           -1.0, opposite="mixing worse")
    return tests


# --- findings: the same tests under the category-block bootstrap -----------------------------


def _mixing_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions, *,
                       method: str, final_only: bool) -> Robustness:
    """At each step the verdict judges (each common step > 0, or the last), without vs with
    mixing, tasks resampled by category."""
    mixing = analysis.of(MixingAnalysis)
    assert mixing is not None
    gaps = _gaps(mixing, method)
    steps = [] if gaps is None else list(gaps.index[-1:] if final_only else gaps.index)
    checks = []
    for step in steps:
        if (wide := _per_task_at(mixing.points, method, step)) is not None:
            checks.append(paired_check(
                f"step {step}: with − without", wide["without mixing"], wide["with mixing"],
                analysis.categories, sign=-1.0, n_boot=bootstrap.n_boot, seed=bootstrap.seed))
    return combine(checks)


# --- findings: the paper's claims ------------------------------------------------------------

MIXING_REDUCES_FORGETTING = Finding(
    id="5.2-mixing-reduces-forgetting", paper_section="5.2", section=KEY, figure=FIGURE_4_LEFT,
    claim="Mixing in unsupervised data reduces forgetting (lower fine-tuning loss)",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="with mixing: lower FT loss throughout training",
    how_to_compute="Mean 5-shot LoRA loss with vs without mixing at each common step > 0, "
                   "with a paired Wilcoxon test over tasks at each, one-sided (with mixing "
                   "lower); every step must hold (\"throughout training\").",
    evaluate=partial(_mixing_effect, method="finetune", final_only=False),
    robustness=partial(_mixing_robustness, method="finetune", final_only=False),
)
MIXING_IMPROVES_ICL = Finding(
    id="5.2-mixing-improves-icl", paper_section="5.2", section=KEY, figure=FIGURE_4_LEFT,
    claim="Mixing in unsupervised data improves ICL by the end of training",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="with mixing: lower ICL loss at the end of training",
    how_to_compute="Mean unseen ICL loss with vs without mixing at the last common step "
                   "(§5.2 says mixing 'leads to a significant increase in ICL "
                   "generalization', an outcome of training; only forgetting is claimed "
                   "'throughout training'), with a one-sided paired Wilcoxon test over tasks.",
    evaluate=partial(_mixing_effect, method="icl", final_only=True),
    robustness=partial(_mixing_robustness, method="icl", final_only=True),
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class MixingSection(Section):
    """§5.2: trajectories with and without unsupervised data mixed in."""

    title = "§5.2 Continual training on unsupervised data"
    paper_section = "5.2"
    analysis = MixingAnalysis
    findings = (MIXING_REDUCES_FORGETTING, MIXING_IMPROVES_ICL)  # no figure of its own

    with_: str = Field(alias="with")
    without: str
    shots: int = 5

    # The YAML key is "with" (a Python keyword); "with_" is accepted too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    def model_labels(self) -> list[str]:
        return [self.with_, self.without]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return trajectory_needs(self.model_labels(), self.shots)
