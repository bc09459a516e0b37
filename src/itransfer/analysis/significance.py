"""The statistical tests behind the report's verdicts, each over tasks.

A verdict compares this run with a claim of the paper; each kind of claim gets the test a
reviewer would ask for:

* paired losses of two models or two steps on the same tasks: Wilcoxon's signed-rank test
  (:func:`paired_test`);
* two Spearman correlations on the same tasks (§5.1's early vs late phase): a paired bootstrap
  over tasks of their difference (:func:`correlation_difference`);
* a ranking (§4: proportional sampling first): how often it holds when the tasks are resampled
  (:func:`ranking_stability`);
* and, across the report's findings, Holm's step-down adjustment (:func:`holm`).

Holm is written here because scipy has only the Benjamini–Hochberg family
(``scipy.stats.false_discovery_control``) and statsmodels would be a heavy dependency for five
lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_PAIRS = 3  # fewer paired tasks and no test is run


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank test of ``after − before`` over tasks (two-sided)."""

    statistic: float  # W, the smaller of the signed-rank sums
    p_value: float
    n: int
    mean_difference: float

    @property
    def defined(self) -> bool:
        return not math.isnan(self.p_value)

    def describe(self) -> str:
        if not self.defined:
            return f"Wilcoxon undefined (n={self.n})"
        return f"Wilcoxon W={self.statistic:g}, p={self.p_value:.2g}, n={self.n}"


def paired_test(before: pd.Series, after: pd.Series) -> PairedTest:
    """Paired Wilcoxon signed-rank test over the tasks both series have."""
    joined = pd.concat({"before": before, "after": after}, axis=1).dropna()
    differences = (joined["after"] - joined["before"]).to_numpy(dtype=float)
    n = int(differences.size)
    mean = float(differences.mean()) if n else float("nan")
    if n < MIN_PAIRS:
        return PairedTest(float("nan"), float("nan"), n, mean)
    if np.all(differences == 0):
        return PairedTest(0.0, 1.0, n, mean)
    result = stats.wilcoxon(differences)
    return PairedTest(float(result.statistic), float(result.pvalue), n, mean)


@dataclass(frozen=True)
class CorrelationDifference:
    """ρ(second) − ρ(first) on the same tasks, with a paired bootstrap CI and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided: twice the smaller share of resampled differences beyond 0
    n: int
    confidence: float = 0.95

    @property
    def defined(self) -> bool:
        return not math.isnan(self.difference)

    def describe(self) -> str:
        if not self.defined:
            return f"Δρ undefined (n={self.n})"
        return (f"Δρ={self.difference:+.3f}, paired bootstrap {self.confidence:.0%} CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], p={self.p_value:.2g}, n={self.n}")


def rowwise_spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson's r on average ranks); NaN for a constant row."""
    rank_x = stats.rankdata(xs, axis=1)
    rank_y = stats.rankdata(ys, axis=1)
    rank_x -= rank_x.mean(axis=1, keepdims=True)
    rank_y -= rank_y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rank_x**2).sum(axis=1) * (rank_y**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_x * rank_y).sum(axis=1) / denominator


def correlation_difference(
    first: pd.DataFrame, second: pd.DataFrame, x: str, y: str, *, n_boot: int = 2000,
    seed: int = 0, confidence: float = 0.95,
) -> CorrelationDifference:
    """Paired bootstrap over tasks of ρ_second(x, y) − ρ_first(x, y).

    Both tables are indexed by task; only tasks in both count, and each resample draws the
    same tasks for both correlations, so what the two share (the tasks) is held fixed.
    """
    joined = pd.merge(first[[x, y]], second[[x, y]], left_index=True, right_index=True,
                      how="inner", suffixes=("_1", "_2")).dropna()
    n = len(joined)
    nan = float("nan")
    if n < MIN_PAIRS + 1 or n_boot < 1:
        return CorrelationDifference(nan, nan, nan, nan, n, confidence)
    columns = [joined[f"{x}_1"], joined[f"{y}_1"], joined[f"{x}_2"], joined[f"{y}_2"]]
    x1, y1, x2, y2 = (column.to_numpy(dtype=float) for column in columns)
    observed = float(rowwise_spearman(x2[None], y2[None])[0]
                     - rowwise_spearman(x1[None], y1[None])[0])
    if math.isnan(observed):
        return CorrelationDifference(nan, nan, nan, nan, n, confidence)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    differences = (rowwise_spearman(x2[index], y2[index])
                   - rowwise_spearman(x1[index], y1[index]))
    differences = differences[np.isfinite(differences)]
    if differences.size == 0:
        return CorrelationDifference(observed, nan, nan, nan, n, confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    beyond = min(np.mean(differences <= 0), np.mean(differences >= 0))
    p_value = min(1.0, 2.0 * max(float(beyond), 1.0 / differences.size))
    return CorrelationDifference(observed, float(low), float(high), p_value, n, confidence)


@dataclass(frozen=True)
class BelowBound:
    """Is Spearman's rho below ``bound``? A one-sided percentile bootstrap over tasks."""

    bound: float
    upper: float  # the one-sided upper confidence bound of rho
    p_value: float  # (1 + #{resampled rho ≥ bound}) / (1 + resamples)
    confidence: float = 0.95

    @property
    def holds(self) -> bool:
        return not math.isnan(self.upper) and self.upper < self.bound

    def describe(self) -> str:
        return (f"ρ below {self.bound:g}: one-sided {self.confidence:.0%} bootstrap bound "
                f"{self.upper:.2f}, p={self.p_value:.2g}")


def rho_below(table: pd.DataFrame, x: str, y: str, bound: float, *, n_boot: int = 2000,
              seed: int = 0, confidence: float = 0.95) -> BelowBound:
    """Test "ρ(x, y) < bound" over the tasks of ``table`` (e.g. "the correlation is weak")."""
    clean = table[[x, y]].dropna()
    nan = float("nan")
    if len(clean) < MIN_PAIRS or n_boot < 1:
        return BelowBound(bound, nan, nan, confidence)
    xs, ys = clean[x].to_numpy(dtype=float), clean[y].to_numpy(dtype=float)
    index = np.random.default_rng(seed).integers(0, len(clean), size=(n_boot, len(clean)))
    rhos = rowwise_spearman(xs[index], ys[index])
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return BelowBound(bound, nan, nan, confidence)
    upper = float(np.percentile(rhos, confidence * 100.0))
    p_value = (1 + int((rhos >= bound).sum())) / (1 + rhos.size)
    return BelowBound(bound, upper, p_value, confidence)


@dataclass(frozen=True)
class RankingStability:
    """How often ``target`` has the lowest mean when the tasks are resampled."""

    target: str
    observed_first: bool
    share_first: float  # over bootstrap resamples of the tasks
    n_tasks: int
    n_boot: int

    def describe(self) -> str:
        return (f"first in {self.share_first:.0%} of {self.n_boot} task resamples "
                f"(n={self.n_tasks})")


def ranking_stability(per_task: pd.DataFrame, target: str, *, n_boot: int = 2000,
                      seed: int = 0) -> RankingStability:
    """``per_task``: one row per task, one column per candidate (lower is better).

    Tasks missing for any candidate are dropped so every candidate is ranked on the same tasks.
    """
    complete = per_task.dropna()
    n = len(complete)
    if target not in complete.columns or n == 0 or complete.shape[1] < 2:
        return RankingStability(target, False, float("nan"), n, n_boot)
    values = complete.to_numpy(dtype=float)
    column = list(complete.columns).index(target)
    observed = bool(np.argmin(values.mean(axis=0)) == column)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    means = values[index].mean(axis=1)  # (n_boot, candidates)
    share = float(np.mean(np.argmin(means, axis=1) == column))
    return RankingStability(target, observed, share, n, n_boot)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(values))
    if tested.size == 0:
        return adjusted.tolist()
    order = tested[np.argsort(values[tested], kind="stable")]
    m = order.size
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()
