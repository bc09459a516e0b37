"""What the transfer monitor recorded during a training run: its rows as a table and a figure.

The rows are those of ``train_log.jsonl`` with a ``monitor`` entry
(:mod:`itransfer.train.monitoring`, read by :mod:`itransfer.runs.monitor_log`); the figure puts
the few-shot transfer loss and the ICL loss over the training steps, each with its step-0 value
as a dashed line, so that a rise above it (forgetting) reads at a glance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from itransfer.analysis.correlations import PhaseCorrelations, phase_correlations, trajectory_curves
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.plotting import LINE_STYLES, MARKERS, SHADES, new_figure, save
from itransfer.analysis.rows import rows_of_groups, trajectory_steps
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


# --- the monitor beside the transfer grid (the experiment report) --------------------------

# (probe row key, the grid's method in trajectory_curves)
GRID_METHODS = (("finetune_loss", "finetune"), ("icl_loss", "icl"))


@dataclass(frozen=True)
class SeriesAgreement:
    """How one monitored series follows the grid's over the steps that both measured."""

    steps: int  # steps with both a probe row and grid rows
    same_direction: int  # steps after 0 whose change since step 0 has the grid's sign
    changes: int  # steps after 0 compared (step 0 measured by both)
    spearman: float  # across the common steps; NaN with fewer than 3


@dataclass(frozen=True)
class MonitorComparison:
    """One monitored model: its probe rows beside the grid's means on the unseen tasks at the
    steps both measured (the grid at its trajectory checkpoints; the pre-trained model at 0)."""

    model: str
    probe_k: int | None
    grid_k: int | None  # None: the grid measured no few-shot transfer of the model
    table: pd.DataFrame  # step, monitor_<series>, grid_<series>
    agreement: dict[str, SeriesAgreement]  # by probe row key

    def sentence(self) -> str:
        if self.grid_k is None:
            return (f"{self.model}: probe k = {self.probe_k}; the grid measured no few-shot "
                    "transfer of this model on unseen tasks, so its probes stand alone.")
        parts = []
        for key, label in SERIES:
            found = self.agreement[key]
            rho = "n/a" if math.isnan(found.spearman) else f"{found.spearman:.2f}"
            direction = (f"moved the grid's way from step 0 at {found.same_direction} of "
                         f"{found.changes} checkpoints" if found.changes else
                         "has no step 0 in both to compare directions from")
            parts.append(f"{label} {direction}; Spearman ρ across the {found.steps} common "
                         f"steps = {rho}")
        few = min(found.steps for found in self.agreement.values()) < 3
        hint = (" Too few common steps for a correlation: probe at the trajectory checkpoints "
                "(train.monitor.every_steps = train.checkpoint_every) to compare more."
                if few else "")
        return (f"{self.model}: probe k = {self.probe_k}, grid k = {self.grid_k} (unseen "
                f"tasks). " + "; ".join(parts) + "." + hint)


def grid_k(frame: pd.DataFrame, label: str, probe_k: int | None) -> int | None:
    """The grid's fine-tuning k closest to the probe's (the smaller on a tie); None without
    k-shot rows for the model."""
    rows = frame[(frame["model"] == label) & (frame["method"] == "finetune")]
    available = sorted({int(k) for k in rows["shots"].dropna() if int(k) > 0})
    if not available:
        return None
    return min(available, key=lambda k: (abs(k - (probe_k or 0)), k))


def compare_with_grid(frame: pd.DataFrame, manifest: RunManifest, label: str,
                      rows: list[dict[str, Any]]) -> MonitorComparison:
    """The probe rows of ``label`` beside the grid's unseen-task means at the same steps (no
    grid columns' values when the grid has no k-shot rows for the model: a model trained with
    the monitor is shown all the same)."""
    unseen = rows_of_groups(frame, ("unseen",))
    probe_k = rows[-1][MONITOR_KEY].get("k") if rows else None
    k = grid_k(unseen, label, probe_k)
    grid = pd.DataFrame(index=pd.Index([], name="step", dtype=int))
    if k is not None:
        curves = trajectory_curves(unseen, label, trajectory_steps(unseen, manifest, label),
                                   pretrained=manifest.pretrained, shots=k)
        grid = curves.pivot_table(index="step", columns="method", values="mean")
    monitor = pd.DataFrame([{"step": row["step"], **{f"monitor_{key}": row[MONITOR_KEY].get(key)
                                                     for key, _ in GRID_METHODS}}
                            for row in rows]).drop_duplicates("step", keep="last")
    table = monitor.merge(pd.DataFrame({
        f"grid_{key}": grid[method] if method in grid else pd.Series(dtype=float)
        for key, method in GRID_METHODS}).rename_axis("step").reset_index(),
        on="step", how="left").sort_values("step", ignore_index=True)
    agreement = {key: _agreement(table, key) for key, _ in GRID_METHODS}
    return MonitorComparison(label, probe_k, k, table, agreement)


def _agreement(table: pd.DataFrame, key: str) -> SeriesAgreement:
    both = table[["step", f"monitor_{key}", f"grid_{key}"]].dropna()
    monitored, grid = both[f"monitor_{key}"].to_numpy(float), both[f"grid_{key}"].to_numpy(float)
    same = changes = 0
    if len(both) and both["step"].iloc[0] == 0:
        monitor_change, grid_change = monitored[1:] - monitored[0], grid[1:] - grid[0]
        changes = len(monitor_change)
        same = int(sum(math.copysign(1, a) == math.copysign(1, b)
                       for a, b in zip(monitor_change, grid_change, strict=True)))
    rho = float(stats.spearmanr(monitored, grid).statistic) if len(both) >= 3 else math.nan
    return SeriesAgreement(len(both), same, changes, rho)


def monitored_models(run_dir: Path, manifest: RunManifest) -> dict[str, list[dict[str, Any]]]:
    """Each model of the run whose training stage logged probe rows, with its rows. A stage
    folder recorded relative to where the pipeline ran is also looked for in ``run_dir``."""
    found = {}
    for label, info in manifest.models.items():
        if not info.stage:
            continue
        stage = Path(info.stage)
        stores = [Path(manifest.store)] if manifest.store else []
        for folder in (stage, Path(run_dir) / stage,
                       *(store / stage.name for store in [*stores, Path(run_dir) / "stages"])):
            if folder.is_dir():
                rows = read_monitor_rows(folder)
                if rows:
                    found[label] = rows
                break
    return found


# --- §5.1's two phases on the probe rows -----------------------------------------------------

MONITOR_MODEL = "monitor"  # the probe rows' model label in a results-shaped frame


def monitor_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The probe rows' per-task losses as results rows (one model, ``monitor``), so that the
    analysis of the grid's trajectory runs on them unchanged: ICL at k = 0 and the LoRA loss at
    each probe k, fine-tuned without context."""
    records = []
    for row in rows:
        for task, values in (row[MONITOR_KEY].get("per_task") or {}).items():
            common = {"model": MONITOR_MODEL, "checkpoint_step": int(row["step"]), "task": task,
                      "metric": "loss", "split": "test", "context": "none"}
            records.append({**common, "method": "icl", "shots": 0, "value": values["icl_loss"]})
            records += [{**common, "method": "finetune", "shots": int(key.rpartition("k")[2]),
                         "value": value}
                        for key, value in values.items() if key.startswith("finetune_loss_k")]
    return pd.DataFrame.from_records(records, columns=[
        "model", "checkpoint_step", "task", "metric", "split", "context", "method", "shots",
        "value"])


def monitor_phases(rows: list[dict[str, Any]], split_step: int, *, seed: int = 0
                   ) -> PhaseCorrelations:
    """§5.1 on the probe rows: per probe task, the change of transfer and of ICL loss from
    step 0 to ``split_step`` (early) and from there to the last probe (late), correlated."""
    steps = sorted(int(row["step"]) for row in rows)
    if split_step not in steps or steps[0] != 0 or split_step >= steps[-1]:
        raise DataError(LOG_FILE, f"--phase-split {split_step}: needs a probe at 0, at the split "
                                  f"and after it; probes at steps {steps}")
    k = int(rows[-1][MONITOR_KEY].get("k") or 0)
    return phase_correlations(monitor_frame(rows), MONITOR_MODEL, split_step=split_step,
                              final_step=steps[-1], pretrained=MONITOR_MODEL, shots=k,
                              seed=seed)
