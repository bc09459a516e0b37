"""A figure of P(K) over training, to check a sampler config before spending compute on it."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from pathlib import Path

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
    """Plot P(K) for the ``top_k`` largest tasks and the effective number of tasks; save a PNG.

    The effective number of tasks is exp(entropy of P(K)): K under uniform sampling, smaller
    the more the mass concentrates on a few tasks.
    """
    # Imported here so the training loop can import samplers without loading matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if task_names is not None and len(task_names) != sampler.num_tasks:
        raise ValueError(f"got {len(task_names)} task names for {sampler.num_tasks} tasks")
    if num_points < 2 or top_k < 1:
        raise ValueError(f"need num_points >= 2 and top_k >= 1, got {num_points} and {top_k}")
    steps = np.unique(np.linspace(0, sampler.total_steps, num_points).round().astype(np.int64))
    schedule = sampling_schedule(sampler, steps.tolist())
    # Stable sort on negated sizes: largest first, ties in task order.
    largest_tasks = np.argsort(-sampler.task_sizes, kind="stable")[:top_k]

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    weights_axes, spread_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    styles = cycle([(style, marker) for marker in _MARKERS for style in _LINE_STYLES])
    mark_every = max(1, len(steps) // 10)
    for task, (line_style, marker) in zip(largest_tasks, styles, strict=False):
        label = task_names[task] if task_names is not None else f"task {task}"
        weights_axes.plot(
            steps,
            schedule[:, task],
            linestyle=line_style,
            marker=marker,
            markersize=4,
            markevery=mark_every,
            label=f"{label} (n={sampler.task_sizes[task]})",
        )
    weights_axes.axhline(1 / sampler.num_tasks, color="gray", linestyle=":", label="uniform 1/K")
    weights_axes.set(
        xlabel="optimizer step",
        ylabel="P(task)",
        title=f"{sampler.name}: P(K) of the {len(largest_tasks)} largest tasks",
    )
    weights_axes.legend(fontsize="x-small", loc="best")

    spread_axes.plot(steps, effective_num_tasks(schedule), color="black", label="exp(entropy)")
    spread_axes.axhline(
        sampler.num_tasks, color="gray", linestyle=":", label=f"K = {sampler.num_tasks}"
    )
    spread_axes.set(
        xlabel="optimizer step",
        ylabel="effective number of tasks",
        title="spread of P(K)",
        ylim=(0, sampler.num_tasks * 1.05),
    )
    spread_axes.legend(fontsize="x-small", loc="best")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
