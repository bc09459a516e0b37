"""A figure of P(K) over training, to check a sampler config before spending compute on it."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

from itransfer.sampling.base import TaskSampler, sampling_schedule
from itransfer.sampling.rates import effective_num_tasks

# Styles and markers vary together with colour so the lines stay apart in black and white.
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*", "P", "h")


def plot_sampling_schedule(
    sampler: TaskSampler,
    path: Path,
    *,
    task_names: Sequence[str] | None = None,
    num_points: int = 50,
    top_k: int = 10,
) -> Path:
    """Plot P(K) over training for the ``top_k`` largest tasks, with the effective number of
    tasks on a second y-axis; save a PNG.

    The title names the sampler with every parameter of its config (for reverse annealing,
    its temperatures and ``schedule``), so the figure states the schedule it shows. The
    effective number of tasks is exp(entropy of P(K)) (:func:`effective_num_tasks`): K under
    uniform sampling, smaller the more the mass concentrates on a few tasks.
    """
    # Imported here so the training loop can import samplers without loading matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if task_names is not None and len(task_names) != sampler.num_tasks:
        raise ValueError(f"got {len(task_names)} task names for {sampler.num_tasks} tasks")
    if num_points < 2 or top_k < 1:
        raise ValueError(f"need num_points >= 2 and top_k >= 1, got {num_points} and {top_k}")
    steps = _plot_steps(sampler.total_steps, num_points)
    schedule = sampling_schedule(sampler, steps.tolist())
    # Stable sort on negated sizes: largest first, ties in task order.
    largest_tasks = np.argsort(-sampler.task_sizes, kind="stable")[:top_k]

    figure = Figure(figsize=(9, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    weights_axes = figure.subplots()
    spread_axes = weights_axes.twinx()
    _plot_task_weights(weights_axes, sampler, steps, schedule, largest_tasks, task_names)
    # Thick and black so it reads apart from the per-task lines it shares the plot with.
    spread_axes.plot(
        steps, effective_num_tasks(schedule), color="black", linewidth=2.5,
        label="effective number of tasks exp(H(P(K))) (right axis)",
    )
    spread_axes.set(
        ylabel=f"effective number of tasks (of K = {sampler.num_tasks})",
        ylim=(0, sampler.num_tasks * 1.05),
    )
    weights_axes.set_title(describe_sampler(sampler), fontsize=10)
    lines, labels = weights_axes.get_legend_handles_labels()
    spread_lines, spread_labels = spread_axes.get_legend_handles_labels()
    weights_axes.legend(lines + spread_lines, labels + spread_labels, fontsize="x-small",
                        loc="best")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _plot_task_weights(
    axes: Any, sampler: TaskSampler, steps: np.ndarray, schedule: np.ndarray,
    tasks: np.ndarray, task_names: Sequence[str] | None,
) -> None:
    """One line of P(task) over the steps per task in ``tasks``, and the uniform 1/K."""
    styles = cycle([(style, marker) for marker in _MARKERS for style in _LINE_STYLES])
    for task, (line_style, marker) in zip(tasks, styles, strict=False):
        label = task_names[task] if task_names is not None else f"task {task}"
        axes.plot(
            steps,
            schedule[:, task],
            linestyle=line_style,
            marker=marker,
            markersize=4,
            # A fraction of the axes, not every n-th point: the steps are denser at the start.
            markevery=0.1,
            label=f"{label} (n={sampler.task_sizes[task]})",
        )
    axes.axhline(1 / sampler.num_tasks, color="gray", linestyle=":", label="uniform 1/K")
    axes.set(
        xlabel="optimizer step",
        ylabel=f"P(task), the {len(tasks)} largest tasks",
        ylim=(0, None),
    )


def describe_sampler(sampler: TaskSampler) -> str:
    """``name (parameter=value, ...)`` from the sampler's config, defaults included."""
    parameters = sampler.config.model_dump(exclude={"name"})
    described = ", ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in parameters.items()
    )
    return f"{sampler.name} ({described})" if described else sampler.name


def _plot_steps(total_steps: int, num_points: int) -> np.ndarray:
    """``num_points`` evenly spaced steps, plus log-spaced ones inside the first interval: a
    schedule linear in T does nearly all its change to P(K) there."""
    even = np.linspace(0, total_steps, num_points)
    early = np.geomspace(1, max(1.0, total_steps / (num_points - 1)), max(2, num_points // 5))
    return np.unique(np.concatenate([even, early]).round().astype(np.int64))
