"""Mixing rates as pure functions of the task sizes (seqio / T5 style).

Every function takes the per-task training-set sizes (after any per-task data cap) and returns
a float64 probability vector over tasks. They hold no state and know nothing of training, so
they can be unit-tested against their formulas; the sampler classes wrap them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np


def _as_sizes(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    task_sizes = np.asarray(sizes, dtype=np.float64)
    if task_sizes.ndim != 1 or task_sizes.size == 0:
        raise ValueError(f"task sizes must be a non-empty 1-D sequence, got {task_sizes.shape}")
    if not np.all(np.isfinite(task_sizes)) or np.any(task_sizes <= 0):
        raise ValueError("task sizes must be finite and positive")
    return task_sizes


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Subtracting the max keeps exp() from overflowing; the result is mathematically unchanged.
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def proportional_rates(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """p_k ∝ n_k: the instruction-tuning default (Wang et al., 2022)."""
    task_sizes = _as_sizes(sizes)
    return task_sizes / task_sizes.sum()


def uniform_rates(num_tasks: int) -> np.ndarray:
    """p_k = 1/K."""
    if num_tasks <= 0:
        raise ValueError(f"need at least one task, got {num_tasks}")
    return np.full(num_tasks, 1.0 / num_tasks, dtype=np.float64)


def temperature_rates(sizes: Sequence[int] | np.ndarray, temperature: float) -> np.ndarray:
    """p_k ∝ n_k^(1/T); T=1 is proportional and T→∞ tends to uniform."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # In log space so that T near 0 (n_k^(1/T) overflows) stays finite.
    return _softmax(np.log(_as_sizes(sizes)) / temperature)


AnnealingSchedule = Literal["linear", "inverse_linear", "log_linear"]
"""How a temperature moves from its start to its end value over a run (see
:func:`annealed_temperature`)."""
ANNEALING_SCHEDULES: tuple[str, ...] = get_args(AnnealingSchedule)


def annealed_temperature(
    step: int, total_steps: int, *, start: float, end: float, schedule: AnnealingSchedule = "linear"
) -> float:
    """The temperature at ``step`` of ``total_steps`` as it heats from ``start`` to ``end``.

    With progress ``p = min(step / total_steps, 1)`` (held at ``end`` past the last step):

    - ``linear``: ``T = start + (end - start) * p``;
    - ``inverse_linear``: ``1/T = 1/start + (1/end - 1/start) * p``;
    - ``log_linear``: ``log T = log start + (log end - log start) * p`` (geometric).

    For ``p_k ∝ n_k^(1/T)`` the exponent 1/T is what shapes P(K): ``linear`` brings it near 0
    (near-uniform sampling) within the first percent of a run heated to 1,000,
    ``inverse_linear`` moves it at a constant rate, ``log_linear`` in between.
    """
    if schedule not in ANNEALING_SCHEDULES:
        raise ValueError(
            f"unknown temperature schedule {schedule!r}; known: {', '.join(ANNEALING_SCHEDULES)}"
        )
    if not 0 < start <= end:
        raise ValueError(f"need 0 < start <= end, got start={start} and end={end}")
    if total_steps < 1 or step < 0:
        raise ValueError(f"need total_steps >= 1 and step >= 0, got {total_steps} and {step}")
    progress = min(step / total_steps, 1.0)
    # The end points are returned as given, so no schedule misses T_max by a rounding error.
    if progress == 0.0:
        return float(start)
    if progress == 1.0:
        return float(end)
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "inverse_linear":
        return 1.0 / (1.0 / start + (1.0 / end - 1.0 / start) * progress)
    return math.exp(math.log(start) + (math.log(end) - math.log(start)) * progress)


def capped_rates(sizes: Sequence[int] | np.ndarray, cap: float) -> np.ndarray:
    """p_k ∝ min(n_k, cap): T5's examples-proportional mixing with an artificial size limit."""
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    capped = np.minimum(_as_sizes(sizes), float(cap))
    return capped / capped.sum()


def unimax_allocation(
    sizes: Sequence[int] | np.ndarray, budget: float, max_epochs: float
) -> np.ndarray:
    """Examples allotted to each task by UniMax (Chung et al., 2023).

    Visit tasks from smallest to largest; each gets an equal share of what is left of the
    budget, but never more than ``max_epochs`` passes over its own data, so the leftovers of
    small tasks flow to larger ones. Ties in size are visited in index order.
    """
    task_sizes = _as_sizes(sizes)
    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if not max_epochs > 0:
        raise ValueError(f"max_epochs must be > 0, got {max_epochs}")
    allocation = np.zeros_like(task_sizes)
    remaining_budget = float(budget)
    order = np.argsort(task_sizes, kind="stable")
    for position, task in enumerate(order):
        fair_share = remaining_budget / (task_sizes.size - position)
        allocation[task] = min(fair_share, max_epochs * task_sizes[task])
        remaining_budget -= allocation[task]
    return allocation


def unimax_rates(sizes: Sequence[int] | np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """p_k ∝ UniMax allocation of ``budget`` examples (see :func:`unimax_allocation`)."""
    allocation = unimax_allocation(sizes, budget, max_epochs)
    return allocation / allocation.sum()


def loss_ratio_rates(
    base_rates: np.ndarray, loss_ratios: np.ndarray, temperature: float
) -> np.ndarray:
    """p_k ∝ base_k · exp(r_k / T): DWA's softmax over loss ratios, tilting a base distribution."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _softmax(np.log(base_rates) + np.asarray(loss_ratios, dtype=np.float64) / temperature)


def entropy(weights: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each distribution along the last axis; 0·log 0 counts as 0."""
    probabilities = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    return -terms.sum(axis=-1)


def effective_num_tasks(weights: np.ndarray) -> np.ndarray:
    """exp(entropy in nats) of each P(K) along the last axis (its perplexity): K for uniform
    sampling, 1 when a single task gets all the mass, and in between how many equally likely
    tasks would spread the mass as evenly."""
    return np.exp(entropy(weights))
