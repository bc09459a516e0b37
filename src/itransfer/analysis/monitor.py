"""What the transfer monitor recorded during a training run: its rows as a table and a figure.

The rows are those of ``train_log.jsonl`` with a ``monitor`` entry
(:mod:`itransfer.train.monitoring`, read by :mod:`itransfer.runs.monitor_log`); the figure puts
the few-shot transfer loss and the ICL loss over the training steps, each with its step-0 value
as a dashed line, so that a rise above it (forgetting) reads at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from itransfer.analysis.plotting import LINE_STYLES, MARKERS, SHADES, new_figure, save
from itransfer.errors import DataError
from itransfer.runs.monitor_log import LOG_FILE, MONITOR_KEY, read_monitor_rows

FIGURE_FILE = "monitor.png"
# (key in a probe row, label): the series of the table and the figure.
SERIES = (("finetune_loss", "few-shot transfer loss"), ("icl_loss", "ICL loss"))


def monitor_rows_of(run_dir: Path) -> list[dict[str, Any]]:
    """The probe rows of a training run folder, or a one-line error saying what is missing."""
    rows = read_monitor_rows(run_dir)
    if not rows:
        raise DataError(Path(run_dir) / LOG_FILE,
                        "no monitor rows (train with train.monitor set, e.g. "
                        "--set 'train.monitor={}')")
    return rows


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per probe: the step, the losses with their change since step 0, Spearman's
    rho, k, the probe's size and time, and whether the run is forgetting."""
    first = rows[0][MONITOR_KEY]
    flat = []
    for row in rows:
        probe = row[MONITOR_KEY]
        flat.append({
            "step": row["step"],
            **{key: probe.get(key) for key, _ in SERIES},
            **{f"{key}_change": _change(probe.get(key), first.get(key)) for key, _ in SERIES},
            "spearman": probe.get("spearman"),
            "k": probe.get("k"), "tasks": probe.get("tasks"), "seconds": probe.get("seconds"),
            "forgetting": bool(probe.get("forgetting")),
        })
    return flat


def _change(value: float | None, start: float | None) -> float | None:
    return None if value is None or start is None else value - start


def plot_monitor(rows: list[dict[str, Any]], path: Path) -> Path:
    """Transfer and ICL loss over the steps, one panel each, the step-0 value dashed."""
    figure, axes = new_figure(ncols=len(SERIES), width_per_panel=4.5, height=3.5)
    steps = [row["step"] for row in rows]
    for index, (axis, (key, label)) in enumerate(zip(axes, SERIES, strict=True)):
        values = [row[MONITOR_KEY].get(key) for row in rows]
        axis.plot(steps, values, color=SHADES[index], marker=MARKERS[index],
                  linestyle=LINE_STYLES[0], label=label)
        start = rows[0][MONITOR_KEY].get(key) if rows[0]["step"] == 0 else None
        if start is not None:
            axis.axhline(start, color=SHADES[2], linestyle="--", label="step 0")
        axis.set_xlabel("instruction-tuning step")
        axis.set_ylabel(f"{label} (probe tasks)")
        axis.legend(fontsize="small")
    probe = rows[-1][MONITOR_KEY]
    figure.suptitle(f"Probe: {probe.get('tasks')} tasks, k={probe.get('k')}", fontsize="medium")
    return save(figure, path)
