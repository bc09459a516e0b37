"""Which rows of the results table a section reads: the step it evaluates a model at, a
model's trajectory, and the evaluation groups it covers."""

from __future__ import annotations

import pandas as pd

from itransfer.analysis.manifest import RunManifest
from itransfer.config.schema import EVALUATION_TASK_GROUPS

# The results rows' ROUGE-L metrics. The paper scores "with the 'Rouge-L r' metric" (§2), so
# recall is the primary number; the F-measure, which Wang et al.'s SNI scorer reports, stands
# beside it.
ROUGE_RECALL = "rougeL_recall"
ROUGE_F = "rougeL"


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
