"""The category-block bootstrap: every test over tasks again, with tasks not independent.

The unseen tasks cluster in categories (93 tasks in 11 in the paper) and share source
datasets, so two tasks of one category are not two independent draws; every p-value over
tasks treats them as if they were. :func:`block_bootstrap` resamples the way the tasks were
drawn: categories with replacement, then tasks with replacement within each drawn category
(a two-stage cluster bootstrap). With one task per category it is the ordinary bootstrap over
tasks; with a shared per-category effect its CI widens by as much as the effect makes tasks of
one category alike (2.9× the task bootstrap's for Spearman's rho, 88 tasks in 11 categories,
x and y driven by a category effect).

Without any category effect it is a little wider than the task bootstrap (1.35× on average
over 30 such data sets, 1.1–1.7×): the two stages count the spread within a category twice.
That errs on the safe side for a robustness check; resampling whole categories alone was
0.92× on average but as narrow as 0.47×, since 11 categories are few draws to bootstrap.

The report reruns each finding's tests this way (:class:`Robustness`): a correlation's CI,
a paired difference's CI, a ranking's share of resamples. A ✓ whose tests do not hold under
it rests on the assumption that tasks are independent, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from itransfer.analysis.significance import rowwise_spearman

MIN_CATEGORIES = 2  # one category resampled is the same category every time: no spread
MIN_TASKS = 3  # as correlations.MIN_TASKS: fewer and no statistic over tasks means anything
NAME = "category bootstrap"

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class BlockBootstrap:
    """A statistic over tasks and its category-block bootstrap: percentile CI and p-value."""

    estimate: float  # the statistic on all tasks
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, against ``null``: twice the smaller share beyond it
    share_above: float  # the share of resamples whose statistic is above ``null``
    n_tasks: int
    n_categories: int
    n_boot: int
    null: float = 0.0
    confidence: float = 0.95
    reason: str = ""  # why it is undefined, when it is

    @property
    def defined(self) -> bool:
        return not math.isnan(self.ci_low)

    def describe(self, name: str = "statistic") -> str:
        if not self.defined:
            return f"{name}: {NAME} undefined ({self.reason})"
        return (f"{name}={self.estimate:+.3f}, {NAME} {self.confidence:.0%} CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], p={self.p_value:.2g} "
                f"({self.n_tasks} tasks in {self.n_categories} categories)")


def _undefined(estimate: float, n_tasks: int, n_categories: int, n_boot: int, null: float,
               confidence: float, reason: str) -> BlockBootstrap:
    nan = float("nan")
    return BlockBootstrap(estimate, nan, nan, nan, nan, n_tasks, n_categories, n_boot, null,
                          confidence, reason)


def _block_indices(codes: np.ndarray, n_boot: int, rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """``n_boot`` resamples of row positions: categories (``codes``, 0..C−1) with replacement,
    then each drawn category's rows with replacement, as many as it has."""
    order = np.argsort(codes, kind="stable")  # rows grouped by category
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    resamples = []
    for _ in range(n_boot):
        drawn = rng.integers(0, sizes.size, size=sizes.size)
        counts = sizes[drawn]
        offsets = np.floor(rng.random(counts.sum()) * np.repeat(counts, counts)).astype(int)
        resamples.append(order[np.repeat(starts[drawn], counts) + offsets])
    return resamples


def block_bootstrap(
    values: pd.DataFrame, categories: pd.Series, statistic: Statistic, *,
    n_boot: int = 2000, seed: int = 0, confidence: float = 0.95, null: float = 0.0,
) -> BlockBootstrap:
    """The category-block bootstrap of ``statistic`` over the tasks (rows) of ``values``.

    ``values`` is indexed by task; rows with a NaN are dropped. ``categories`` maps a task to
    its category; a task it does not name is a category of its own (nothing known ties it to
    another). ``statistic`` gets the rows of one resample as an array (rows × columns of
    ``values``) and returns a float; a resample where it is NaN (e.g. a constant side) is left
    out. Undefined with fewer than :data:`MIN_CATEGORIES` categories.
    """
    clean = values.dropna()
    array = clean.to_numpy(dtype=float)
    estimate = float(statistic(array)) if len(clean) else float("nan")
    named = categories.reindex(clean.index)
    # A task without a category gets its own label, which no real category can equal.
    own = pd.Series("\0" + clean.index.astype(str), index=clean.index)
    codes = pd.factorize(named.astype(object).where(named.notna(), own))[0]
    n_categories = int(codes.max()) + 1 if codes.size else 0
    common = (len(clean), n_categories, n_boot, null, confidence)
    if len(clean) < MIN_TASKS:
        return _undefined(estimate, *common, f"fewer than {MIN_TASKS} tasks (n={len(clean)})")
    if not named.notna().any():
        return _undefined(estimate, *common, "no task categories recorded")
    if n_categories < MIN_CATEGORIES or n_boot < 1:
        return _undefined(estimate, *common,
                          f"{n_categories} categor{'y' if n_categories == 1 else 'ies'}")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(array[rows]) for rows in _block_indices(codes, n_boot, rng)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or math.isnan(estimate):
        return _undefined(estimate, *common, "the statistic is undefined on the resamples")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    beyond = min(np.mean(draws <= null), np.mean(draws >= null))
    p_value = min(1.0, 2.0 * max(float(beyond), 1.0 / draws.size))
    return BlockBootstrap(estimate, float(low), float(high), p_value,
                          float(np.mean(draws > null)), *common)


# --- statistics ------------------------------------------------------------------------------


def spearman_statistic(rows: np.ndarray) -> float:
    """Spearman's rho of the two columns (NaN for a constant side or one distinct task)."""
    return float(rowwise_spearman(rows[None, :, 0], rows[None, :, 1])[0])


def partial_statistic(rows: np.ndarray) -> float:
    """Spearman's rho of columns 0 and 1 given column 2, as
    :func:`correlations.partial_spearman` computes it (ranks, each residualised on the
    control's ranks); NaN when a side is constant."""
    ranks = stats.rankdata(rows, axis=0)
    centred = ranks - ranks.mean(axis=0)
    control = centred[:, 2]
    scale = control @ control
    if scale == 0:
        return float("nan")
    residual_x = centred[:, 0] - control * (centred[:, 0] @ control) / scale
    residual_y = centred[:, 1] - control * (centred[:, 1] @ control) / scale
    norm = np.sqrt((residual_x @ residual_x) * (residual_y @ residual_y))
    # Residuals of rounding size: a side is a linear function of the control in this resample.
    if norm < 1e-9 * len(rows) ** 2:
        return float("nan")
    return float((residual_x @ residual_y) / norm)


def correlation_difference_statistic(rows: np.ndarray) -> float:
    """Spearman's rho of columns 2 and 3 minus that of columns 0 and 1 (same tasks)."""
    return spearman_statistic(rows[:, 2:4]) - spearman_statistic(rows[:, 0:2])


def mean_difference_statistic(rows: np.ndarray) -> float:
    """Mean over tasks of column 1 − column 0 (``after − before``)."""
    return float(np.mean(rows[:, 1] - rows[:, 0]))


def lead_statistic(target: int) -> Statistic:
    """How far column ``target``'s mean is below the lowest other column's (positive when it is
    first, lower being better): its share of resamples above 0 is how often it stays first."""

    def lead(rows: np.ndarray) -> float:
        means = rows.mean(axis=0)
        return float(np.delete(means, target).min() - means[target])

    return lead


def task_categories(frame: pd.DataFrame) -> pd.Series:
    """Task → category from result rows (empty when the rows carry no category)."""
    if "category" not in frame.columns or frame.empty:
        return pd.Series(dtype=object)
    named = frame.dropna(subset=["category"])
    return named.groupby("task")["category"].first()


# --- a finding's tests, rerun ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One of a finding's tests under the block bootstrap, and whether it holds there."""

    label: str
    result: BlockBootstrap
    holds: bool


@dataclass(frozen=True)
class Robustness:
    """A finding's tests under the category-block bootstrap (the report's robustness column).

    ``survives`` is None when the bootstrap cannot run (one category, or none recorded), else
    whether every test the verdict rests on holds under it.
    """

    survives: bool | None
    text: str


def in_direction(result: BlockBootstrap, sign: float) -> bool:
    """The block CI excludes ``null`` on the claimed side (two-sided α = 1 − confidence)."""
    if not result.defined:
        return False
    return result.ci_low > result.null if sign > 0 else result.ci_high < result.null


def correlation_check(label: str, table: pd.DataFrame, x: str, y: str, categories: pd.Series,
                      *, n_boot: int, seed: int, sign: float = 1.0) -> Check:
    """Spearman's rho of ``x`` and ``y`` over the tasks of ``table``; holds when its block CI
    is on the claimed side of 0."""
    result = block_bootstrap(table[[x, y]], categories, spearman_statistic, n_boot=n_boot,
                             seed=seed)
    return Check(label, result, in_direction(result, sign))


def partial_check(label: str, table: pd.DataFrame, x: str, y: str, control: pd.Series,
                  categories: pd.Series, *, n_boot: int, seed: int) -> Check:
    """The partial rho of ``x`` and ``y`` given ``control`` (per task, e.g. difficulty); holds
    when its block CI is above 0."""
    joined = table[[x, y]].join(control.rename("control"), how="inner")
    result = block_bootstrap(joined, categories, partial_statistic, n_boot=n_boot, seed=seed)
    return Check(label, result, in_direction(result, 1.0))


def paired_check(label: str, before: pd.Series, after: pd.Series, categories: pd.Series, *,
                 sign: float, n_boot: int, seed: int) -> Check:
    """The mean paired difference ``after − before`` over tasks; holds when its block CI is on
    the side of 0 that ``sign`` claims (the block counterpart of a paired Wilcoxon test)."""
    joined = pd.concat({"before": before, "after": after}, axis=1)
    result = block_bootstrap(joined, categories, mean_difference_statistic, n_boot=n_boot,
                             seed=seed)
    return Check(label, result, in_direction(result, sign))


def combine(checks: Sequence[Check], *, any_of: bool = False, notes: Sequence[Check] = ()
            ) -> Robustness:
    """Every check must hold (``any_of``: one is enough, for a claim shown either way);
    ``notes`` are shown after them but decide nothing (e.g. the difficulty-controlled rho,
    which the verdict does not rest on)."""
    if not checks:
        return Robustness(None, "—")
    text = "; ".join(check.result.describe(check.label) for check in [*checks, *notes])
    defined = [check for check in checks if check.result.defined]
    complete = len(defined) == len(checks)
    # An undefined check decides nothing: the verdict survives or not on the defined ones
    # only when they settle it whatever the undefined ones would have said.
    if any_of:
        survives = True if any(check.holds for check in defined) else (False if complete
                                                                        else None)
    else:
        survives = False if not all(check.holds for check in defined) else (True if complete
                                                                             else None)
    return Robustness(survives, text)
