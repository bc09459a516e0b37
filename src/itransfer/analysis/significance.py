"""The statistical tests behind the report's verdicts, each over tasks.

A verdict compares this run with a claim of the paper; each kind of claim gets the test a
reviewer would ask for:

* paired losses of two models or two steps on the same tasks: Wilcoxon's signed-rank test,
  one-sided in the claimed direction (:func:`paired_test`);
* two Spearman correlations on the same tasks (§5.1's early vs late phase): a paired bootstrap
  over tasks of their difference, one-sided p-values for a rise and a fall
  (:func:`correlation_difference`);
* "the correlation is weak": a bootstrap CI of ρ inside (−bound, bound) (:func:`rho_within`);
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
    """Wilcoxon signed-rank test of ``after − before`` over tasks, one-sided in the claimed
    direction: ``claimed_sign`` −1 claims ``after`` is lower, +1 that it is higher.

    A two-sided test with the direction read from the mean can call a claim significant when
    most tasks go against it and one outlier sets the mean; here the direction is the ranks'
    (:attr:`favours_claim`), and the opposite direction gets its own one-sided p-value so the
    report can say when the evidence is for the other effect.
    """

    statistic: float  # W: the sum of the ranks of the tasks that go the claimed way
    p_value: float  # one-sided, in the claimed direction
    n: int
    mean_difference: float
    claimed_sign: float
    opposite_p: float  # one-sided, in the opposite direction
    rank_total: float  # the sum of all ranks (zero differences dropped): W + W_opposite
    opposite: str = "the opposite direction"  # what the other way means, for the report

    @property
    def defined(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def favours_claim(self) -> bool:
        """The ranks lean the claimed way: W is more than half of all the ranks."""
        return self.defined and 2 * self.statistic > self.rank_total

    @property
    def goes_opposite(self) -> bool:
        return self.defined and 2 * self.statistic < self.rank_total

    def describe(self) -> str:
        if not self.defined:
            return f"Wilcoxon undefined (n={self.n})"
        text = (f"Wilcoxon W={self.statistic:g} of {self.rank_total:g} for the claim, "
                f"one-sided p={self.p_value:.2g}, n={self.n}")
        if self.goes_opposite:
            text += f"; opposite: p={self.opposite_p:.2g} for {self.opposite}"
        return text


def paired_test(before: pd.Series, after: pd.Series, claimed_sign: float, *,
                opposite: str = "the opposite direction") -> PairedTest:
    """Paired Wilcoxon signed-rank test over the tasks both series have, one-sided in the
    direction ``claimed_sign`` (−1: ``after`` lower; +1: higher); ``opposite`` names the other
    direction in the report's words (e.g. "IT better")."""
    if claimed_sign not in (-1.0, 1.0):
        raise ValueError(f"claimed_sign must be -1 or +1, not {claimed_sign!r}")
    joined = pd.concat({"before": before, "after": after}, axis=1).dropna()
    differences = (joined["after"] - joined["before"]).to_numpy(dtype=float)
    n = int(differences.size)
    mean = float(differences.mean()) if n else float("nan")
    nan = float("nan")
    if n < MIN_PAIRS:
        return PairedTest(nan, nan, n, mean, claimed_sign, nan, nan, opposite)
    if np.all(differences == 0):
        return PairedTest(0.0, 1.0, n, mean, claimed_sign, 1.0, 0.0, opposite)
    # Turned so that "greater" is the claim; scipy's one-sided statistic is then W.
    claimed = claimed_sign * differences
    towards = stats.wilcoxon(claimed, alternative="greater")
    away = stats.wilcoxon(claimed, alternative="less")
    nonzero = int(np.count_nonzero(claimed))
    return PairedTest(float(towards.statistic), float(towards.pvalue), n, mean, claimed_sign,
                      float(away.pvalue), nonzero * (nonzero + 1) / 2, opposite)


@dataclass(frozen=True)
class CorrelationDifference:
    """ρ(second) − ρ(first) on the same tasks, with a paired bootstrap CI and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided: twice the smaller share of resampled differences beyond 0
    n: int
    confidence: float = 0.95
    # One-sided, for a claimed rise (second > first) or fall: the share of resampled
    # differences at or beyond 0 against the claim, at least one resample's worth.
    p_rise: float = float("nan")
    p_fall: float = float("nan")

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
    p_rise, p_fall = (max(float(np.mean(against)), 1.0 / differences.size)
                      for against in (differences <= 0, differences >= 0))
    p_value = min(1.0, 2.0 * min(p_rise, p_fall))
    return CorrelationDifference(observed, float(low), float(high), p_value, n, confidence,
                                 p_rise, p_fall)


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


# --- one-sided tests of correlations (verdicts in the claimed direction) ---------------------


def one_sided_p(p_two_sided: float, estimate: float, claimed_sign: float) -> float:
    """The p-value in the claimed direction from a two-sided one whose null distribution is
    symmetric (Spearman's t approximation in scipy): half of it when the estimate goes the
    claimed way, else one minus that half."""
    if math.isnan(p_two_sided) or math.isnan(estimate):
        return float("nan")
    half = p_two_sided / 2.0
    return half if claimed_sign * estimate > 0 else 1.0 - half


@dataclass(frozen=True)
class WithinBound:
    """Is Spearman's rho inside (−bound, bound)? Its two-sided percentile bootstrap CI over
    tasks must lie inside; the p-value is that of both one-sided tests together (twice the
    larger, so p < α exactly when each side's p < α/2, as the two-sided CI's tails)."""

    bound: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float = 0.95

    @property
    def holds(self) -> bool:
        return (not math.isnan(self.ci_low) and -self.bound < self.ci_low
                and self.ci_high < self.bound)

    def describe(self) -> str:
        return (f"ρ inside (−{self.bound:g}, {self.bound:g}): bootstrap {self.confidence:.0%} "
                f"CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}], p={self.p_value:.2g}")


def rho_within(table: pd.DataFrame, x: str, y: str, bound: float, *, n_boot: int = 2000,
               seed: int = 0, confidence: float = 0.95) -> WithinBound:
    """Test "|ρ(x, y)| < bound" over the tasks of ``table`` (e.g. "the correlation is weak"),
    resampling tasks as :func:`rho_below` and the correlations' own CIs do."""
    clean = table[[x, y]].dropna()
    nan = float("nan")
    if len(clean) < MIN_PAIRS or n_boot < 1:
        return WithinBound(bound, nan, nan, nan, confidence)
    xs, ys = clean[x].to_numpy(dtype=float), clean[y].to_numpy(dtype=float)
    index = np.random.default_rng(seed).integers(0, len(clean), size=(n_boot, len(clean)))
    rhos = rowwise_spearman(xs[index], ys[index])
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return WithinBound(bound, nan, nan, nan, confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(rhos, [tail, 100.0 - tail])
    # A resample at a bound counts against the claim, as in rho_below.
    sides = ((1 + int(np.sum(rhos >= bound))) / (1 + rhos.size),
             (1 + int(np.sum(rhos <= -bound))) / (1 + rhos.size))
    return WithinBound(bound, float(low), float(high), min(1.0, 2.0 * max(sides)), confidence)
