"""Every table and correlation one run's report needs, computed once per paper section.

Each section class of :mod:`itransfer.schema` points (``analysis = "module:Class"``) at its
analysis here: a class whose ``compute`` turns (results table, manifest, section) into the
section's tables and whose ``tables_html`` renders them for the report. :func:`analyse` runs
the analysis of every section the manifest has; the figures, the findings and the report all
read from the resulting :class:`RunAnalysis`, so each number is computed in one place.
"""

from __future__ import annotations

import html
import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pandas as pd

from itransfer.analysis import correlations as corr
from itransfer.analysis import seen_fit
from itransfer.analysis.html import details, table
from itransfer.config import EVALUATION_TASK_GROUPS
from itransfer.schema import (
    DataLimitsSection,
    HeldoutGroupsSection,
    MixingSection,
    RunManifest,
    SamplersSection,
    Section,
    TrajectorySection,
    TransferSection,
)


class SectionAnalysis(Protocol):
    """What a section's ``analysis`` pointer names."""

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: Any, *,
                n_boot: int, seed: int) -> SectionAnalysis: ...

    def tables_html(self) -> str: ...


AnalysisT = TypeVar("AnalysisT")


@dataclass(frozen=True)
class RunAnalysis:
    manifest: RunManifest
    num_rows: int
    sections: dict[str, SectionAnalysis] = field(default_factory=dict)  # by section key

    def of(self, kind: type[AnalysisT]) -> AnalysisT | None:
        """This run's analysis of class ``kind``; None when the run lacks that section."""
        for found in self.sections.values():
            if isinstance(found, kind):
                return found
        return None


def analysis_class(section: Section) -> type[SectionAnalysis]:
    """The class ``type(section).analysis`` names ("module:Class")."""
    module_name, _, class_name = type(section).analysis.partition(":")
    found: type[SectionAnalysis] = getattr(importlib.import_module(module_name), class_name)
    return found


def analyse(
    frame: pd.DataFrame, manifest: RunManifest, *, n_boot: int = 2000, seed: int = 0
) -> RunAnalysis:
    """Compute every section the manifest names, in the manifest's (the registry's) order,
    each on the rows of the task groups it reads (:func:`rows_of_groups`)."""
    sections = {
        key: analysis_class(section).compute(rows_of_groups(frame, type(section).task_groups),
                                             manifest, section, n_boot=n_boot, seed=seed)
        for key, section in manifest.sections.items()
    }
    return RunAnalysis(manifest=manifest, num_rows=len(frame), sections=sections)


def evaluated_step(frame: pd.DataFrame, manifest: RunManifest, label: str) -> int | None:
    """The step a section evaluates ``label`` at: the manifest's final step when measured.

    None (the last step with rows) when the manifest does not name a step that has rows, so a
    manifest written before the evaluations finished still gives a report.
    """
    step = manifest.final_step(label)
    mine = frame[frame["model"] == label]
    if step is not None and (mine["checkpoint_step"] == step).any():
        return step
    return None


def trajectory_steps(frame: pd.DataFrame, manifest: RunManifest, label: str) -> tuple[int, ...]:
    """Steps of ``label``'s trajectory (0 = pre-trained) from the manifest, else from the rows."""
    steps = manifest.trajectory_of(label)
    if len(steps) > 1:
        return steps
    found = frame.loc[frame["model"] == label, "checkpoint_step"].dropna().astype(int)
    return tuple(sorted({0, *found.tolist()}))


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
        scatter = corr.transfer_vs_icl(
            frame, section.instruction_tuned, shots=section.correlation_shots,
            context=section.correlation_context, step=steps.get("instruction-tuned"),
        )
        pretrained_rows = corr.model_rows(frame, section.pretrained, steps.get("pre-trained"))
        tuned_rows = corr.model_rows(frame, section.instruction_tuned,
                                     steps.get("instruction-tuned"))
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
            per_task_finetune={
                (context, metric): _paired(_few_shot_mean(pretrained_rows, context, metric),
                                           _few_shot_mean(tuned_rows, context, metric))
                for context in _finetune_contexts(pretrained_rows, tuned_rows)
                for metric in ("loss", "rougeL")
            },
            per_task_icl=_paired(corr.icl_values(pretrained_rows), corr.icl_values(tuned_rows)),
            seed_spread=corr.seed_spread(
                frame, section.instruction_tuned, shots=section.correlation_shots,
                context=section.correlation_context, step=steps.get("instruction-tuned"),
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


@dataclass(frozen=True)
class DataLimitsAnalysis:
    """§3.2, Figure 2."""

    spec: DataLimitsSection
    summary: pd.DataFrame  # per limit: icl_loss, finetune_loss, the model's budget and steps
    before: str
    after: str
    deltas: pd.DataFrame  # per task: icl/finetune before, after, delta
    correlation: corr.Correlation
    partial: corr.PartialCorrelation  # the correlation with task difficulty partialled out
    # per task: the largest limit ("before") and the smallest ("after"), for the paired tests
    extremes: pd.DataFrame

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
        # Which step budget trained each model: under "epochs" a smaller limit also means
        # fewer steps, so the report must say which one produced each number (§3.2).
        infos = [manifest.models.get(model) for model in summary["model"]]
        summary = summary.assign(
            budget=[info.budget if info else None for info in infos],
            # object, so the report shows whole step counts and "—" where none is recorded
            total_steps=pd.Series([info.total_steps if info else None for info in infos],
                                  index=summary.index, dtype=object),
        )
        return cls(
            spec=section,
            summary=summary, extremes=extremes,
            before=before, after=after, deltas=deltas,
            correlation=corr.delta_correlation(deltas, n_boot=n_boot, seed=seed),
            partial=corr.difficulty_partial(
                deltas, "finetune_delta", "icl_delta",
                corr.zero_shot_difficulty(frame, manifest.pretrained), seed=seed),
        )

    def tables_html(self) -> str:
        return ("<h3>Mean loss by data limit</h3>" + _budget_note(self.summary["budget"])
                + table(self.summary)
                + details(f"Per-task changes, {self.after} − {self.before} "
                          f"({len(self.deltas)} tasks)", table(self.deltas, index=True)))


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


@dataclass(frozen=True)
class TrajectoryAnalysis:
    """§5.1, Figure 4 (left, centre, right)."""

    spec: TrajectorySection
    curves: pd.DataFrame  # step, method (icl | finetune) → mean loss
    points: pd.DataFrame  # per step and task: icl, finetune loss (for the paired tests)
    phases: corr.PhaseCorrelations
    early_partial: corr.PartialCorrelation  # each phase's correlation, difficulty partialled out
    late_partial: corr.PartialCorrelation

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
            spec=section,
            curves=corr.trajectory_curves(frame, section.model, steps,
                                          pretrained=manifest.pretrained, shots=section.shots),
            points=corr.trajectory_points(frame, section.model, steps,
                                          pretrained=manifest.pretrained, shots=section.shots),
            phases=phases,
            early_partial=corr.difficulty_partial(phases.early_table, "finetune_delta",
                                                  "icl_delta", difficulty, seed=seed),
            late_partial=corr.difficulty_partial(phases.late_table, "finetune_delta",
                                                 "icl_delta", difficulty, seed=seed),
        )

    def tables_html(self) -> str:
        phases = self.phases
        return ("<h3>Mean loss by step</h3>"
                + table(self.curves.pivot_table(index="method", columns="step",
                                                values="mean"), index=True)
                + details(f"Early phase per task: {phases.early.describe()}",
                          table(phases.early_table, index=True))
                + details(f"Late phase per task: {phases.late.describe()}",
                          table(phases.late_table, index=True)))


@dataclass(frozen=True)
class MixingAnalysis:
    """§5.2, Figure 4 (left)."""

    spec: MixingSection
    curves: pd.DataFrame  # label (with | without), step, method → mean loss
    points: pd.DataFrame  # label, step, task → icl, finetune loss (for the paired tests)

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: MixingSection, *,
                n_boot: int, seed: int) -> MixingAnalysis:
        curves, points = [], []
        for label, model in (("with mixing", section.with_), ("without mixing", section.without)):
            steps = trajectory_steps(frame, manifest, model)
            curve = corr.trajectory_curves(frame, model, steps, pretrained=manifest.pretrained,
                                           shots=section.shots)
            curves.append(curve.assign(label=label))
            points.append(corr.trajectory_points(frame, model, steps,
                                                 pretrained=manifest.pretrained,
                                                 shots=section.shots).assign(label=label))
        return cls(spec=section, curves=pd.concat(curves, ignore_index=True),
                   points=pd.concat(points, ignore_index=True))

    def tables_html(self) -> str:
        return ("<p>Drawn in Figure 4 (left) above.</p><h3>Mean loss by step</h3>"
                + table(self.curves.pivot_table(index=["method", "label"], columns="step",
                                                values="mean"), index=True))


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


# --- evaluation groups -------------------------------------------------------------------------

LEGACY_GROUP = "unseen"  # what a row without task_group was: no config evaluated others then


def task_groups_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's task group; rows written before the ``task_group`` column existed count as
    ``unseen`` (seen-task rows as ``seen``)."""
    fallback = pd.Series(LEGACY_GROUP, index=frame.index, dtype=object).where(
        frame["method"] != "seen", "seen")
    if "task_group" not in frame.columns:
        return fallback
    return frame["task_group"].astype(object).where(frame["task_group"].notna(), fallback)


def rows_of_groups(frame: pd.DataFrame, groups: tuple[str, ...]) -> pd.DataFrame:
    """The rows of tasks in the evaluation ``groups``, plus every seen-task row."""
    other_groups = set(EVALUATION_TASK_GROUPS) - set(groups)
    if not other_groups or frame.empty:
        return frame
    return frame[~task_groups_of(frame).isin(other_groups)]


@dataclass(frozen=True)
class HeldoutGroupsAnalysis:
    """§2.4 / Appendix A: every evaluation group beside ``unseen`` (no figure in the paper)."""

    spec: HeldoutGroupsSection
    summary: pd.DataFrame  # per group × model: n_tasks, mean ICL / k-shot losses and ROUGE-L
    max_tasks: int | None  # eval.max_tasks: at most this many tasks of each group were run

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: HeldoutGroupsSection,
                *, n_boot: int, seed: int) -> HeldoutGroupsAnalysis:
        groups = task_groups_of(frame)
        records = []
        for group in section.groups:
            in_group = frame[groups == group]
            for name, label in section.models.items():
                rows = corr.model_rows(in_group, label, evaluated_step(frame, manifest, label))
                values = {
                    "icl_loss": corr.icl_values(rows),
                    "finetune_loss": corr.finetune_values(rows, section.shots, section.context),
                    "icl_rougeL": corr.icl_values(rows, "rougeL"),
                    "finetune_rougeL": corr.finetune_values(rows, section.shots,
                                                            section.context, "rougeL"),
                }
                tasks = set().union(*(series.index for series in values.values()))
                records.append({
                    "group": group, "model": name, "n_tasks": len(tasks),
                    **{column: float(series.mean()) if not series.empty else float("nan")
                       for column, series in values.items()},
                })
        summary = pd.DataFrame.from_records(records, columns=[
            "group", "model", "n_tasks", "icl_loss", "finetune_loss", "icl_rougeL",
            "finetune_rougeL"])
        # A group that no model has a task of has none in the selection (the section asked
        # for every group it lists on every model it names).
        measured = summary.groupby("group")["n_tasks"].transform("sum") > 0
        summary["note"] = measured.map({True: "", False: "no tasks"})
        max_tasks = manifest.config.get("eval", {}).get("max_tasks")
        return cls(spec=section, summary=summary,
                   max_tasks=int(max_tasks) if max_tasks is not None else None)

    def tables_html(self) -> str:
        spec = self.spec
        capped = (f" At most {self.max_tasks} tasks of each group were evaluated "
                  "(<code>eval.max_tasks</code>)." if self.max_tasks is not None else "")
        return ("<p>Mean over each group's tasks: ICL test loss (exemplars in context), "
                f"{spec.shots}-shot fine-tuning test loss (context <code>{spec.context}</code>) "
                "and ROUGE-L where generations were scored. The sections above read the "
                f"<code>unseen</code> group only.{capped}</p>"
                "<h3>Mean loss by evaluation group</h3>" + table(self.summary))
