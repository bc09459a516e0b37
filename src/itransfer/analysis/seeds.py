"""How many k-shot fine-tuning seeds stand behind the report's numbers, and their spread.

A fine-tuning seed is a k-shot draw, a LoRA initialisation and dropout masks; every per-task
fine-tuning value the report shows is a mean over seeds (:func:`correlations.task_values`).
The report's header says how many there were (:func:`finetune_seed_count`), and each section
with fine-tuning numbers shows how far the seeds spread (:func:`spread_by_point`,
:func:`spread_html`) when there are several, rather than averaging them silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from itransfer.analysis import correlations as corr
from itransfer.analysis.html import details, table

# The cells one fine-tuning run fills: seeds are counted per cell.
CELL = ["model", "checkpoint_step", "task", "shots", "context"]
SPREAD_COLUMNS = ["label", "model", "step", "n_tasks", "seeds", "median_std",
                  "between_task_std"]


@dataclass(frozen=True)
class SeedCount:
    """Seeds per k-shot (k > 0) fine-tuning cell (model, step, task, k, context)."""

    min_seeds: int
    max_seeds: int
    n_cells: int

    @property
    def several(self) -> bool:
        return self.max_seeds > 1

    def describe(self) -> str:
        if self.n_cells == 0:
            return "no k-shot fine-tuning in this run"
        seeds = (f"{self.max_seeds}" if self.min_seeds == self.max_seeds
                 else f"{self.min_seeds}–{self.max_seeds}")
        noun = "seed" if self.max_seeds == 1 else "seeds"
        if not self.several:
            return (f"{seeds} fine-tuning {noun} behind every k-shot fine-tuning number "
                    "(k-shot draw, LoRA initialisation, dropout): no spread across seeds "
                    "can be shown")
        return (f"{seeds} fine-tuning {noun} behind every k-shot fine-tuning number "
                "(k-shot draw, LoRA initialisation, dropout), averaged per task; each section "
                "shows their spread")


def finetune_seed_count(frame: pd.DataFrame) -> SeedCount:
    """How many seeds each k-shot fine-tuning test-loss cell of ``frame`` has."""
    if frame.empty:
        return SeedCount(0, 0, 0)
    tuned = frame[(frame["method"] == "finetune") & (frame["shots"] > 0)
                  & (frame["split"] == "test") & (frame["metric"] == "loss")]
    if tuned.empty:
        return SeedCount(0, 0, 0)
    counts = tuned.groupby(CELL)["seed"].nunique()
    return SeedCount(int(counts.min()), int(counts.max()), int(counts.size))


def spread_by_point(
    frame: pd.DataFrame, points: Mapping[str, tuple[str, int | None]], *, shots: int,
    context: str = "none", pretrained: str | None = None,
) -> pd.DataFrame:
    """One row per labelled point (model, step; None = its last step): the seeds behind its
    ``shots``-shot fine-tuning test loss, the median per-task std across them and the std of
    the task means (:func:`correlations.summarize_spread`)."""
    records = []
    for label, (model, step) in points.items():
        spread = corr.seed_spread(frame, model, shots=shots, context=context, step=step,
                                  pretrained=pretrained)
        if spread.empty:
            continue
        summary = corr.summarize_spread(spread)
        seeds = (f"{summary.max_seeds}" if summary.min_seeds == summary.max_seeds
                 else f"{summary.min_seeds}–{summary.max_seeds}")
        records.append({"label": label, "model": model, "step": step,
                        "n_tasks": summary.n_tasks, "seeds": seeds,
                        "max_seeds": summary.max_seeds, "median_std": summary.median_std,
                        "between_task_std": summary.between_task_std})
    if not records:
        return pd.DataFrame(columns=[*SPREAD_COLUMNS, "max_seeds"])
    # object, so that a point at its last step shows "—", not NaN
    return pd.DataFrame.from_records(records).astype({"step": object})


def spread_html(spread: pd.DataFrame, what: str) -> str:
    """The section's seed-spread line (a <details> summary, the table folded under it); empty
    when no point has two seeds, since then there is no spread to show."""
    if spread.empty or spread["max_seeds"].max() < 2:
        return ""
    several = spread[spread["max_seeds"] > 1]
    low, high = several["median_std"].min(), several["median_std"].max()
    stds = f"{low:.3f}" if f"{low:.3f}" == f"{high:.3f}" else f"{low:.3f}–{high:.3f}"
    seeds = "/".join(dict.fromkeys(several["seeds"]))
    between = several["between_task_std"].median()
    summary = (f"Seed spread of {what} (the values above average the seeds): {seeds} seeds "
               f"per task; median per-task std across seeds {stds} over {len(several)} "
               f"point{'s' if len(several) > 1 else ''} (std of the task means {between:.3f})")
    return details(summary, table(spread[SPREAD_COLUMNS]))
