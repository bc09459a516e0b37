"""Counterparts of the paper's Figures 1–4, drawn from a :class:`RunAnalysis`.

Each ``plot_*`` function saves one PNG under ``out_dir`` and returns its path, or None when
its section is absent from the run (or has nothing to draw). Figures use matplotlib's object
API (no pyplot state) and tell series apart by line style, marker and hatching as well as by
shade, so they read in black and white.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from itransfer.analysis.correlations import Correlation
from itransfer.analysis.sections import (
    DataLimitsAnalysis,
    MixingAnalysis,
    RunAnalysis,
    SamplersAnalysis,
    TrajectoryAnalysis,
    TransferAnalysis,
)
from itransfer.io_utils import atomic_write_bytes

logger = logging.getLogger(__name__)

# Shades, markers and line styles vary together so each series survives greyscale printing.
SHADES = ("#000000", "#666666", "#999999", "#333333", "#bbbbbb")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINE_STYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "xx", "..", "\\\\")
DPI = 110


def _figure(ncols: int = 1, width_per_panel: float = 5.0, height: float = 4.0
            ) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width_per_panel * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _style(index: int) -> dict[str, str]:
    return {"color": SHADES[index % len(SHADES)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}


def _errorbar(axes: Axes, x: Sequence[float], curve: pd.DataFrame, **style: str) -> None:
    sem = curve["sem"].to_numpy(dtype=float)
    yerr = None if np.all(np.isnan(sem)) else np.nan_to_num(sem)
    axes.errorbar(x, curve["mean"].to_numpy(dtype=float), yerr=yerr, capsize=3,
                  markersize=6, linewidth=1.6, markerfacecolor="white", **style)


def _scatter(axes: Axes, x: pd.Series, y: pd.Series, correlation: Correlation, *,
             xlabel: str, ylabel: str, title: str, zero_lines: bool = False) -> None:
    axes.scatter(x, y, s=28, facecolors="white", edgecolors="black", linewidths=1.0)
    if zero_lines:
        axes.axhline(0.0, color="#888888", linestyle=":", linewidth=1.0)
        axes.axvline(0.0, color="#888888", linestyle=":", linewidth=1.0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(f"{title}\n{correlation.describe()}", fontsize=9)
    axes.grid(True, alpha=0.3)


# --- Figure 1 ------------------------------------------------------------------------------


def plot_transfer_curves(transfer: TransferAnalysis | None, out_dir: Path) -> Path | None:
    """F1 left: mean fine-tuning loss (and ROUGE-L) vs k, pre-trained vs IT, per context."""
    if transfer is None or transfer.loss_curves.empty:
        return None
    panels = [("loss", transfer.loss_curves, "mean test loss (NLL) ↓")]
    if not transfer.rouge_curves.empty:
        panels.append(("rougeL", transfer.rouge_curves, "mean ROUGE-L ↑"))
    figure, axes_list = _figure(len(panels))
    labels = sorted(transfer.loss_curves["label"].unique(), key=lambda name: name != "pre-trained")
    contexts = ["none", *sorted(set(transfer.loss_curves["context"]) - {"none"})]
    for axes, (metric, curves, ylabel) in zip(axes_list, panels, strict=True):
        for label_index, label in enumerate(labels):
            for context_index, context in enumerate(contexts):
                curve = curves[(curves["label"] == label) & (curves["context"] == context)]
                if curve.empty:
                    continue
                _errorbar(axes, curve["shots"].tolist(), curve,
                          color=SHADES[label_index], marker=MARKERS[label_index],
                          linestyle=LINE_STYLES[context_index % len(LINE_STYLES)],
                          label=f"{label}, context: {context}")
        if metric == "loss":
            for label_index, label in enumerate(labels):
                icl = transfer.icl_means.get(label, math.nan)
                if not math.isnan(icl):
                    axes.axhline(icl, color=SHADES[label_index], linestyle=":", linewidth=1.2,
                                 label=f"{label}, ICL (no tuning)")
        axes.set_xlabel("fine-tuning examples per task (k)")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Figure 1 (left): few-shot LoRA transfer to unseen tasks", fontsize=10)
    return _save(figure, out_dir / "fig1_transfer_curves.png")


def plot_transfer_vs_icl(transfer: TransferAnalysis | None, out_dir: Path) -> Path | None:
    """F1 right: per unseen task, IT model's k-shot fine-tuning loss vs its ICL loss."""
    if transfer is None or transfer.scatter.empty:
        return None
    spec = transfer.spec
    figure, (axes,) = _figure()
    _scatter(axes, transfer.scatter["finetune"], transfer.scatter["icl"], transfer.correlation,
             xlabel=f"{spec.correlation_shots}-shot fine-tuning test loss "
                    f"(context: {spec.correlation_context})",
             ylabel="in-context learning test loss",
             title=f"Figure 1 (right): FT vs ICL per unseen task ({spec.instruction_tuned})")
    return _save(figure, out_dir / "fig1_ft_vs_icl.png")


# --- Figure 2 ------------------------------------------------------------------------------


def plot_data_limits(limits: DataLimitsAnalysis | None, out_dir: Path) -> Path | None:
    """F2 left: mean ICL and k-shot fine-tuning loss against the per-task data limit."""
    if limits is None or limits.summary[["icl_loss", "finetune_loss"]].isna().all(axis=None):
        return None
    summary = limits.summary
    positions = np.arange(len(summary))
    figure, (axes,) = _figure()
    for index, (column, label) in enumerate(
        (("icl_loss", "in-context learning"),
         ("finetune_loss", f"{limits.spec.shots}-shot fine-tuning"))
    ):
        axes.plot(positions, summary[column], label=label, markersize=7,
                  markerfacecolor="white", linewidth=1.6, **_style(index))
    axes.set_xticks(positions, [str(limit) for limit in summary["limit"]])
    axes.set_xlabel("training examples per task (data limit)")
    axes.set_ylabel("mean unseen-task test loss ↓")
    axes.set_title("Figure 2 (left): data per task vs transfer and ICL", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, out_dir / "fig2_data_limits.png")


def plot_data_limit_deltas(limits: DataLimitsAnalysis | None, out_dir: Path) -> Path | None:
    """F2 right: per task, change in fine-tuning loss vs change in ICL loss between two limits."""
    if limits is None or limits.deltas.empty:
        return None
    figure, (axes,) = _figure()
    _scatter(axes, limits.deltas["finetune_delta"], limits.deltas["icl_delta"],
             limits.correlation, zero_lines=True,
             xlabel=f"Δ {limits.spec.shots}-shot fine-tuning loss",
             ylabel="Δ in-context learning loss",
             title=f"Figure 2 (right): per-task change, {limits.after} − {limits.before}")
    return _save(figure, out_dir / "fig2_delta_scatter.png")


# --- Figure 3 ------------------------------------------------------------------------------


def plot_sampler_summary(samplers: SamplersAnalysis | None, out_dir: Path) -> Path | None:
    """F3 left: per compared sampler, mean seen train/test loss and unseen ICL loss (bars)."""
    bars = (("seen_train_loss", "seen tasks: train loss"),
            ("seen_test_loss", "seen tasks: test loss"),
            ("icl_loss", "unseen tasks: ICL loss"))
    if samplers is None or samplers.compared[[c for c, _ in bars]].isna().all(axis=None):
        return None
    summary = samplers.compared  # the paper's four; the report lists the others in a table
    positions = np.arange(len(summary))
    width = 0.8 / len(bars)
    figure, (axes,) = _figure(width_per_panel=max(5.0, 1.6 * len(summary)))
    for index, (column, label) in enumerate(bars):
        values = summary[column].to_numpy(dtype=float)
        drawn = axes.bar(positions + (index - 1) * width, np.nan_to_num(values), width,
                         label=label, color=SHADES[index + 1] if index else "white",
                         edgecolor="black", hatch=HATCHES[index])
        axes.bar_label(drawn, labels=[f"{v:.2f}" if not math.isnan(v) else "n/a"
                                      for v in values], fontsize=7)
    axes.set_xticks(positions, list(summary["sampler"]))
    axes.set_xlabel("task sampler P(K)")
    axes.set_ylabel("mean loss ↓")
    axes.set_title("Figure 3 (left): multi-task fit vs ICL by sampler", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, axis="y", alpha=0.3)
    return _save(figure, out_dir / "fig3_samplers.png")


def plot_size_binned(samplers: SamplersAnalysis | None, out_dir: Path) -> Path | None:
    """F3 centre/right: seen-task train and test loss by training-set size bin, per sampler."""
    if samplers is None or samplers.binned.empty:
        return None
    binned = samplers.binned
    bins = list(dict.fromkeys(binned["bin"].astype(str)))
    positions = {name: index for index, name in enumerate(bins)}
    figure, axes_list = _figure(2)
    for axes, split, panel in zip(axes_list, ("train", "test"), ("centre", "right"),
                                  strict=True):
        for index, label in enumerate(dict.fromkeys(binned["label"])):
            curve = binned[(binned["label"] == label) & (binned["split"] == split)]
            curve = curve[curve["n_tasks"] > 0]
            if curve.empty:
                continue
            _errorbar(axes, [positions[str(name)] for name in curve["bin"]], curve,
                      label=label, **_style(index))
        axes.set_xticks(range(len(bins)), bins, rotation=20, fontsize=8)
        axes.set_xlabel("task training-set size (log-spaced bins)")
        axes.set_ylabel(f"mean seen-task {split} loss ↓")
        axes.set_title(f"Figure 3 ({panel}): {split} loss by task size", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, title="sampler", title_fontsize=8)
    return _save(figure, out_dir / "fig3_size_bins.png")


# --- Figure 4 ------------------------------------------------------------------------------


def plot_trajectories(
    trajectory: TrajectoryAnalysis | None, mixing: MixingAnalysis | None, out_dir: Path
) -> Path | None:
    """F4 left: FT and ICL loss vs instruction-tuning step, with and without mixing."""
    series: dict[str, pd.DataFrame] = {}
    if mixing is not None:
        shots = mixing.spec.shots
        for label, curve in mixing.curves.groupby("label", sort=False):
            series[f"{label} ({curve['model'].iloc[0]})"] = curve
    elif trajectory is not None:
        shots = trajectory.spec.shots
        series[trajectory.spec.model] = trajectory.curves
    series = {label: curve for label, curve in series.items() if not curve.empty}
    if not series:
        return None
    figure, axes_list = _figure(2)
    for axes, method, name in zip(axes_list, ("finetune", "icl"),
                                  (f"{shots}-shot fine-tuning", "in-context learning"),
                                  strict=True):
        for index, (label, curves) in enumerate(series.items()):
            curve = curves[curves["method"] == method].sort_values("step")
            if not curve.empty:
                _errorbar(axes, curve["step"].tolist(), curve, label=label, **_style(index))
        if trajectory is not None:
            axes.axvline(trajectory.spec.phase_split_step, color="#888888", linestyle=":",
                         linewidth=1.0, label="phase split")
        axes.set_xlabel("instruction-tuning step (0 = pre-trained)")
        axes.set_ylabel(f"mean unseen-task {name} loss ↓")
        axes.set_title(name, fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Figure 4 (left): transfer and ICL through instruction tuning", fontsize=10)
    return _save(figure, out_dir / "fig4_trajectories.png")


def plot_phase_deltas(trajectory: TrajectoryAnalysis | None, out_dir: Path) -> Path | None:
    """F4 centre/right: per task, Δ FT vs Δ ICL loss in the early and the late phase."""
    if trajectory is None:
        return None
    phases = trajectory.phases
    if phases.early_table.empty and phases.late_table.empty:
        return None
    figure, axes_list = _figure(2)
    panels = (
        (phases.early_table, phases.early, f"Figure 4 (centre): steps 0 → {phases.split_step}"),
        (phases.late_table, phases.late,
         f"Figure 4 (right): steps {phases.split_step} → {phases.final_step}"),
    )
    for axes, (table, correlation, title) in zip(axes_list, panels, strict=True):
        _scatter(axes, table["finetune_delta"], table["icl_delta"], correlation,
                 xlabel=f"Δ {trajectory.spec.shots}-shot fine-tuning loss",
                 ylabel="Δ in-context learning loss", title=title, zero_lines=True)
    return _save(figure, out_dir / "fig4_phase_scatter.png")


def draw_all(analysis: RunAnalysis, out_dir: Path) -> dict[str, Path]:
    """Every figure this run's sections allow, keyed by the paper figure it reproduces."""
    transfer, limits = analysis.of(TransferAnalysis), analysis.of(DataLimitsAnalysis)
    samplers, trajectory = analysis.of(SamplersAnalysis), analysis.of(TrajectoryAnalysis)
    drawers: dict[str, Callable[[], Path | None]] = {
        "Figure 1 (left)": lambda: plot_transfer_curves(transfer, out_dir),
        "Figure 1 (right)": lambda: plot_transfer_vs_icl(transfer, out_dir),
        "Figure 2 (left)": lambda: plot_data_limits(limits, out_dir),
        "Figure 2 (right)": lambda: plot_data_limit_deltas(limits, out_dir),
        "Figure 3 (left)": lambda: plot_sampler_summary(samplers, out_dir),
        "Figure 3 (centre, right)": lambda: plot_size_binned(samplers, out_dir),
        "Figure 4 (left)": lambda: plot_trajectories(trajectory, analysis.of(MixingAnalysis),
                                                     out_dir),
        "Figure 4 (centre, right)": lambda: plot_phase_deltas(trajectory, out_dir),
    }
    drawn = {}
    for name, draw in drawers.items():
        path = draw()
        if path is None:
            logger.info("%s: nothing to draw in this run", name)
        else:
            drawn[name] = path
    return drawn
