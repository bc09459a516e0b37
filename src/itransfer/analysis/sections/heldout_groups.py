"""§2.4 and Appendix A: every evaluation group of Table 2's setup beside ``unseen``.

The YAML keys (``sections.heldout_groups``) and the analysis; the paper reports no number for
these groups, so the section has no finding and no figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from itransfer.analysis import correlations as corr
from itransfer.analysis.html import table
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.registry import Section, register_section
from itransfer.analysis.rows import evaluated_step, task_groups_of
from itransfer.analysis.seeds import spread_by_point, spread_html
from itransfer.config.schema import EVALUATION_TASK_GROUPS, ContextConfig, EvalConfig
from itransfer.runs.eval_plan import EvalPlan, Need

KEY = "heldout_groups"
SUMMARY_COLUMNS = ["group", "model", "n_tasks", "icl_loss", "finetune_loss", "icl_rougeL",
                   "finetune_rougeL"]


@dataclass(frozen=True)
class HeldoutGroupsAnalysis:
    """§2.4 / Appendix A: every evaluation group beside ``unseen`` (no figure in the paper)."""

    section: HeldoutGroupsSection
    summary: pd.DataFrame  # per group × model: n_tasks, mean ICL / k-shot losses and ROUGE-L
    max_tasks: int | None  # eval.max_tasks: at most this many tasks of each group were run
    # per group and model: the seeds behind its k-shot fine-tuning loss and their spread
    seed_spread: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: HeldoutGroupsSection,
                *, n_boot: int, seed: int) -> HeldoutGroupsAnalysis:
        groups = task_groups_of(frame)
        records = [
            _group_record(frame, manifest, section, frame[groups == group], group, name, label)
            for group in section.groups for name, label in section.models.items()
        ]
        summary = pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)
        # A group that no model has a task of has none in the selection (the section asked
        # for every group it lists on every model it names).
        measured = summary.groupby("group")["n_tasks"].transform("sum") > 0
        summary["note"] = measured.map({True: "", False: "no tasks"})
        max_tasks = manifest.config.get("eval", {}).get("max_tasks")
        spreads = [spread_by_point(frame[groups == group],
                                   {f"{group}, {name}": (label, evaluated_step(frame, manifest,
                                                                              label))
                                    for name, label in section.models.items()},
                                   shots=section.shots, context=section.context)
                   for group in section.groups]
        return cls(section=section, summary=summary,
                   max_tasks=int(max_tasks) if max_tasks is not None else None,
                   seed_spread=pd.concat(spreads, ignore_index=True))

    def tables_html(self) -> str:
        section = self.section
        capped = (f" At most {self.max_tasks} tasks of each group were evaluated "
                  "(<code>eval.max_tasks</code>)." if self.max_tasks is not None else "")
        return ("<p>Mean over each group's tasks: ICL test loss (exemplars in context), "
                f"{section.shots}-shot fine-tuning test loss "
                f"(context <code>{section.context}</code>) "
                "and ROUGE-L where generations were scored. The sections above read the "
                f"<code>unseen</code> group only.{capped}</p>"
                "<h3>Mean loss by evaluation group</h3>" + table(self.summary)
                + spread_html(self.seed_spread, f"the {section.shots}-shot fine-tuning loss per "
                              "group and model"))


def _group_record(frame: pd.DataFrame, manifest: RunManifest, section: HeldoutGroupsSection,
                  in_group: pd.DataFrame, group: str, name: str, label: str) -> dict[str, Any]:
    """One row of the summary: one model's means over one group's tasks."""
    rows = corr.model_rows(in_group, label, evaluated_step(frame, manifest, label))
    values = {
        "icl_loss": corr.icl_values(rows),
        "finetune_loss": corr.finetune_values(rows, section.shots, section.context),
        "icl_rougeL": corr.icl_values(rows, "rougeL"),
        "finetune_rougeL": corr.finetune_values(rows, section.shots, section.context, "rougeL"),
    }
    tasks = set().union(*(series.index for series in values.values()))
    return {"group": group, "model": name, "n_tasks": len(tasks),
            **{column: float(series.mean()) if not series.empty else float("nan")
               for column, series in values.items()}}


@register_section(KEY)
class HeldoutGroupsSection(Section):
    """§2.4 and Appendix A: every evaluation group of Table 2's setup beside ``unseen``.

    The paper evaluates on unseen NLU tasks and names three more groups it never trains on
    (synthetic unseen tasks, tasks of held-out domains and of adversarial sources) without
    reporting them; this section measures the named models on each ``groups`` entry (added to
    their evaluations whatever ``eval.task_groups`` says) and tabulates them side by side.
    """

    title = "Evaluation groups: unseen, synthetic, held-out domains and adversarial sources"
    paper_section = "A"  # Appendix A: after the numbered sections
    analysis = HeldoutGroupsAnalysis
    task_groups = EVALUATION_TASK_GROUPS

    models: dict[str, str]  # display name → variant label, e.g. pre-trained, instruction-tuned
    groups: list[str] = Field(default_factory=lambda: list(EVALUATION_TASK_GROUPS), min_length=1)
    shots: int = Field(default=5, ge=0)  # the k of the k-shot fine-tuning loss shown
    context: str = "none"  # the fine-tuning context of that loss

    @model_validator(mode="after")
    def _known_groups_and_context(self) -> HeldoutGroupsSection:
        unknown = [group for group in self.groups if group not in EVALUATION_TASK_GROUPS]
        if unknown:
            # Rows record a task's own group, so the heldout_generalization union is not one.
            raise ValueError(f"groups: unknown {unknown}; known: {list(EVALUATION_TASK_GROUPS)}")
        ContextConfig._known_context(self.context)
        return self

    def model_labels(self) -> list[str]:
        return list(self.models.values())

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = EvalPlan(icl=True, shots=frozenset({self.shots}),
                        contexts=frozenset({self.context}), task_groups=frozenset(self.groups))
        return [Need(label, "final", plan) for label in dict.fromkeys(self.model_labels())]
