"""Per-task values, correlations and mean curves computed from the results table.

Pure functions on the tidy results DataFrame (:class:`itransfer.eval.results.ResultsTable`):
nothing here reads files or draws. Every per-task value is first averaged over ``seed`` (and
any other repeated measurement) so each task counts once, as in the paper's scatter plots; a
fine-tuning seed is a k-shot draw, a LoRA initialisation and dropout masks, and
:func:`seed_spread` shows how far a task's value moves between seeds.

A *point* of a trajectory is a model label and an instruction-tuning step; step 0 is the
pre-trained model, so ``pretrained=`` names the label whose rows stand in for step 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from itransfer.analysis.significance import rowwise_spearman

MIN_TASKS = 3  # fewer paired tasks than this and a rank correlation means nothing
ICL_CONTEXT = "exemplars"  # the paper's ICL context (§2.4): 3 SNI exemplars


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho across tasks, its p-value, and a percentile bootstrap CI over tasks."""

    rho: float
    p_value: float
    n: int
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    reason: str = ""  # why it is undefined, when it is

    @property
    def defined(self) -> bool:
        return not math.isnan(self.rho)

    def describe(self) -> str:
        """One line for titles and tables, e.g. ``ρ=0.94 (p=5e-42, n=93)``."""
        if not self.defined:
            return f"ρ undefined ({self.reason})"
        ci = ""
        if not (math.isnan(self.ci_low) or math.isnan(self.ci_high)):
            ci = f", {self.confidence:.0%} CI [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        # A perfect rank correlation underflows p to 0; say so rather than print "p=0".
        p_text = f"p={self.p_value:.2g}" if self.p_value > 0 else "p<1e-300"
        return f"ρ={self.rho:.3f} ({p_text}, n={self.n}{ci})"


def undefined_correlation(n: int, reason: str) -> Correlation:
    nan = float("nan")
    return Correlation(rho=nan, p_value=nan, n=n, ci_low=nan, ci_high=nan, reason=reason)


def spearman(
    x: Sequence[float] | np.ndarray | pd.Series,
    y: Sequence[float] | np.ndarray | pd.Series,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Correlation:
    """Spearman correlation of paired values, dropping pairs with a NaN.

    Undefined (NaN, with a reason) for fewer than :data:`MIN_TASKS` pairs or a constant side,
    rather than an error: a small experiment must still get a report.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"paired values differ in length: {xs.shape} vs {ys.shape}")
    keep = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[keep], ys[keep]
    n = int(xs.size)
    if n < MIN_TASKS:
        return undefined_correlation(n, f"fewer than {MIN_TASKS} tasks (n={n})")
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return undefined_correlation(n, f"constant values (n={n})")
    result = stats.spearmanr(xs, ys)
    low, high = _bootstrap_ci(xs, ys, n_boot=n_boot, seed=seed, confidence=confidence)
    return Correlation(
        rho=float(result.statistic), p_value=float(result.pvalue), n=n, ci_low=low, ci_high=high,
        confidence=confidence,
    )


def _bootstrap_ci(
    xs: np.ndarray, ys: np.ndarray, *, n_boot: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile CI of Spearman's rho, resampling tasks with replacement (vectorised)."""
    if n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, xs.size, size=(n_boot, xs.size))
    rhos = rowwise_spearman(xs[index], ys[index])
    rhos = rhos[np.isfinite(rhos)]  # a resample can draw one task only, or a constant side
    if rhos.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(rhos, [tail, 100.0 - tail])
    return float(low), float(high)


# --- the task-difficulty confound -----------------------------------------------------------

DIFFICULTY = "the pre-trained model's zero-shot loss"


@dataclass(frozen=True)
class PartialCorrelation:
    """Spearman's rho of x and y with a per-task control z partialled out of both, the plain
    rho on the same tasks, and a t-test p-value for the partial rho.

    Across tasks, fine-tuning loss and ICL loss can correlate only because some tasks have
    harder targets for every method; with ``z`` a measure of that difficulty, the partial
    rho is what is left of the relation once difficulty is accounted for.
    """

    rho: float
    p_value: float  # two-sided, Student's t on n − 3 degrees of freedom
    plain_rho: float  # Spearman's rho of x and y on the same n tasks
    n: int
    control: str = DIFFICULTY
    reason: str = ""

    @property
    def defined(self) -> bool:
        return not math.isnan(self.rho)

    @property
    def degrees_of_freedom(self) -> int:
        """n − 3: two for the correlation, one for the partialled-out control."""
        return self.n - 3

    @property
    def surviving(self) -> float:
        """The partial rho as a fraction of the plain one (NaN when the plain rho is 0)."""
        if not self.defined or self.plain_rho == 0 or math.isnan(self.plain_rho):
            return float("nan")
        return self.rho / self.plain_rho

    def surviving_text(self) -> str:
        """How much of the plain rho survives, readable at both ends: a partial rho at least
        as strong as the plain one (a share ≥ 100 %: difficulty was hiding part of the
        relation, not making it) is "all", one of the opposite sign is "none"."""
        share = self.surviving
        if math.isnan(share):
            return ""
        if share >= 1.0:
            return "all of ρ survives (|partial ρ| ≥ |ρ|)"
        if share < 0.0:
            return "none of ρ survives (partial ρ has the opposite sign)"
        return f"{share:.0%} of ρ survives"

    def describe(self) -> str:
        if not self.defined:
            return f"partial ρ undefined ({self.reason})"
        survives = self.surviving_text()
        survives = f", {survives}" if survives else ""
        return (f"partial ρ={self.rho:.3f} given {self.control} (t test on n − 3 df: p="
                f"{self.p_value:.2g}, n={self.n}{survives})")


def partial_t_p_value(rho: float | np.ndarray, n: int) -> np.ndarray:
    """Two-sided p-value of a first-order partial correlation: t = r·√((n−3)/(1−r²)) on
    n − 3 degrees of freedom.

    Chosen over permutations because, on ranks at n = 8 and 15 under nulls where x, y and the
    control are independent or one side is nearly a function of the control (FT loss tracks
    difficulty), its type-I error stayed at 0.045–0.055 in 20,000 draws each, while Kennedy's
    residual permutation reached 0.08 (independent) to 0.14 and Freedman–Lane's 0.11 at n = 8
    when one side nearly equals the control's ranks. It is also the rule scipy's ``spearmanr``
    applies to the plain rho (t on n − 2), so the two p-values in a row are alike.
    Vectorised over ``rho`` (one p-value per entry; |r| = 1 gives 0).
    """
    degrees = n - 3
    magnitude = np.abs(np.asarray(rho, dtype=float))
    with np.errstate(divide="ignore"):
        t_stat = magnitude * np.sqrt(degrees / (1.0 - np.minimum(magnitude, 1.0) ** 2))
    return np.asarray(2.0 * stats.t.sf(t_stat, degrees))


def partial_spearman(
    x: Sequence[float] | np.ndarray | pd.Series,
    y: Sequence[float] | np.ndarray | pd.Series,
    control: Sequence[float] | np.ndarray | pd.Series,
    *,
    label: str = DIFFICULTY,
) -> PartialCorrelation:
    """Partial Spearman correlation of x and y given ``control``, with a t-test p-value.

    The ranks of x and y are each regressed (least squares, with an intercept) on the ranks of
    ``control``; the partial rho is Pearson's r of the two residuals, which equals the usual
    first-order formula (r_xy − r_xz·r_yz) / √((1 − r_xz²)(1 − r_yz²)) on ranks. Its p-value
    is :func:`partial_t_p_value`. Triples with a NaN are dropped; fewer than
    :data:`MIN_TASKS` + 1 tasks, or a constant side, is undefined.
    """
    xs, ys, zs = (np.asarray(values, dtype=float) for values in (x, y, control))
    if not xs.shape == ys.shape == zs.shape:
        raise ValueError(f"values differ in length: {xs.shape}, {ys.shape}, {zs.shape}")
    keep = ~(np.isnan(xs) | np.isnan(ys) | np.isnan(zs))
    xs, ys, zs = xs[keep], ys[keep], zs[keep]
    n = int(xs.size)
    nan = float("nan")

    def undefined(reason: str) -> PartialCorrelation:
        return PartialCorrelation(nan, nan, nan, n, label, reason)

    # One more task than a plain correlation: partialling out the control costs a degree.
    if n < MIN_TASKS + 1:
        return undefined(f"fewer than {MIN_TASKS + 1} tasks (n={n})")
    if min(np.ptp(xs), np.ptp(ys), np.ptp(zs)) == 0:
        return undefined(f"constant values (n={n})")
    rank_x, rank_y = stats.rankdata(xs), stats.rankdata(ys)
    centred_z = stats.rankdata(zs) - (n + 1) / 2.0  # ranks average (n + 1) / 2

    def residual(ranks: np.ndarray) -> np.ndarray:
        # Least squares on [1, rank z], in closed form: a call takes ~0.1 ms, so that the
        # type-I error test can afford thousands of draws.
        centred = ranks - (n + 1) / 2.0
        return centred - centred_z * (centred @ centred_z) / (centred_z @ centred_z)

    residual_x, residual_y = residual(rank_x), residual(rank_y)
    # Ranks are O(n), so residuals this small are rounding: x or y is a linear function of the
    # control's ranks and nothing is left to relate.
    if min(np.abs(residual_x).max(), np.abs(residual_y).max()) < 1e-9 * n:
        return undefined(f"fully explained by {label} (n={n})")
    norm = math.sqrt(float((residual_x**2).sum() * (residual_y**2).sum()))
    rho = float(np.clip((residual_x * residual_y).sum() / norm, -1.0, 1.0))
    plain = float(np.corrcoef(rank_x, rank_y)[0, 1])  # Spearman's rho: Pearson's r on ranks
    return PartialCorrelation(rho, float(partial_t_p_value(rho, n)), plain, n, label)


def zero_shot_difficulty(frame: pd.DataFrame, pretrained: str) -> pd.Series:
    """Per task: the pre-trained model's test loss with no fine-tuning and no context (k = 0).

    The control for the difficulty confound: a task whose targets are long or rare is hard
    for every method, so its loss is high for fine-tuning and ICL alike.
    """
    rows = model_rows(frame, pretrained, 0)
    return finetune_values(rows, 0, "none")


def difficulty_partial(
    table: pd.DataFrame, x: str, y: str, difficulty: pd.Series, *, seed: int = 0,
) -> PartialCorrelation:
    """:func:`partial_spearman` of two columns of a per-task ``table`` given ``difficulty``.

    ``seed`` is unused since the p-value became a t test (no draws); it stays so that the
    sections' calls need not change.
    """
    if difficulty.empty:
        nan = float("nan")
        return PartialCorrelation(nan, nan, nan, 0, DIFFICULTY,
                                  "the pre-trained model's k = 0 loss was not measured")
    joined = table[[x, y]].join(difficulty.rename("difficulty"), how="inner")
    return partial_spearman(joined[x], joined[y], joined["difficulty"])


# --- selecting per-task values -------------------------------------------------------------


def model_rows(
    frame: pd.DataFrame, model: str, step: int | None = None, *, pretrained: str | None = None
) -> pd.DataFrame:
    """Rows of ``model`` at instruction-tuning ``step`` (its last step when None).

    Step 0 of a trajectory is the pre-trained model: when ``model`` has no rows at step 0 and
    ``pretrained`` is given, that label's step-0 rows are returned instead.
    """
    mine = frame[frame["model"] == model]
    if step is None:
        if mine.empty:
            return mine
        step = int(mine["checkpoint_step"].max())
    at_step = mine[mine["checkpoint_step"] == step]
    if at_step.empty and step == 0 and pretrained is not None:
        at_step = frame[(frame["model"] == pretrained) & (frame["checkpoint_step"] == 0)]
    return at_step


def _pick_icl_context(rows: pd.DataFrame) -> pd.DataFrame:
    contexts = rows["context"].dropna().unique()
    if len(contexts) <= 1:
        return rows
    chosen = ICL_CONTEXT if ICL_CONTEXT in contexts else rows["context"].mode().iloc[0]
    return rows[rows["context"] == chosen]


def task_values(
    rows: pd.DataFrame,
    *,
    method: str,
    metric: str = "loss",
    split: str = "test",
    shots: int | None = None,
    context: str | None = None,
) -> pd.Series:
    """One value per task (mean over seeds), indexed by task name.

    For ICL with no ``context`` given, the exemplar context is used when several were run.
    """
    chosen = rows[(rows["method"] == method) & (rows["metric"] == metric)
                  & (rows["split"] == split)]
    if shots is not None:
        chosen = chosen[chosen["shots"] == shots]
    if context is not None:
        chosen = chosen[chosen["context"] == context]
    elif method == "icl":
        chosen = _pick_icl_context(chosen)
    if chosen.empty:
        return pd.Series(dtype=float, name=metric)
    values = chosen.groupby("task")["value"].mean().astype(float)
    values.name = metric
    return values


def icl_values(rows: pd.DataFrame, metric: str = "loss") -> pd.Series:
    return task_values(rows, method="icl", metric=metric)


def finetune_values(
    rows: pd.DataFrame, shots: int, context: str = "none", metric: str = "loss"
) -> pd.Series:
    return task_values(rows, method="finetune", metric=metric, shots=shots, context=context)


# --- spread across fine-tuning seeds ---------------------------------------------------------


def seed_spread(
    frame: pd.DataFrame, model: str, *, shots: int = 5, context: str = "none",
    step: int | None = None, metric: str = "loss", pretrained: str | None = None,
) -> pd.DataFrame:
    """Per task: ``mean``, ``std`` (ddof 1; NaN for one seed) and ``n_seeds`` of one model's
    k-shot fine-tuning test ``metric`` across seeds.

    Repeated rows of one seed are averaged first, so each seed counts once; with one row per
    seed, ``mean`` is the value the correlations use (:func:`finetune_values`). Step 0 of a
    trajectory reads ``pretrained``'s rows, as :func:`model_rows` does.
    """
    rows = model_rows(frame, model, step, pretrained=pretrained)
    chosen = rows[(rows["method"] == "finetune") & (rows["metric"] == metric)
                  & (rows["split"] == "test") & (rows["shots"] == shots)
                  & (rows["context"] == context)]
    per_seed = chosen.groupby(["task", "seed"])["value"].mean().astype(float)
    spread = per_seed.groupby(level="task").agg(["mean", "std", "count"])
    spread = spread.rename(columns={"count": "n_seeds"}).astype({"n_seeds": int})
    spread.index.name = "task"
    return spread.sort_index()


@dataclass(frozen=True)
class SpreadSummary:
    """One line on a :func:`seed_spread` table: the typical per-task std across seeds, beside
    how much the tasks' means differ (seed noise small against it leaves task rankings, and so
    the rank correlations, alone)."""

    median_std: float  # over tasks with at least two seeds
    between_task_std: float  # std of the per-task means
    min_seeds: int
    max_seeds: int
    n_tasks: int

    def describe(self) -> str:
        seeds = (f"{self.max_seeds}" if self.min_seeds == self.max_seeds
                 else f"{self.min_seeds}–{self.max_seeds}")
        return (f"{seeds} seeds per task, {self.n_tasks} tasks: median per-task std across "
                f"seeds {self.median_std:.3f} (std of the task means {self.between_task_std:.3f})")


def summarize_spread(spread: pd.DataFrame) -> SpreadSummary:
    """The :class:`SpreadSummary` of a :func:`seed_spread` table (NaNs when it is empty)."""
    nan = float("nan")
    if spread.empty:
        return SpreadSummary(nan, nan, 0, 0, 0)
    stds = spread["std"].dropna()
    means = spread["mean"]
    return SpreadSummary(
        median_std=float(stds.median()) if not stds.empty else nan,
        between_task_std=float(means.std(ddof=1)) if len(means) > 1 else nan,
        min_seeds=int(spread["n_seeds"].min()), max_seeds=int(spread["n_seeds"].max()),
        n_tasks=len(spread),
    )


# --- §3.1: fine-tuning transfer vs ICL ---------------------------------------------------------


def transfer_vs_icl(
    frame: pd.DataFrame, model: str, *, shots: int = 5, context: str = "none",
    step: int | None = None, metric: str = "loss",
) -> pd.DataFrame:
    """Per task: ``finetune`` (k-shot LoRA, given context) and ``icl`` values of one model."""
    rows = model_rows(frame, model, step)
    table = pd.concat(
        {"finetune": finetune_values(rows, shots, context, metric),
         "icl": icl_values(rows, metric)},
        axis=1,
    )
    table.index.name = "task"
    return table.dropna().sort_index()


def model_deltas(
    frame: pd.DataFrame, before: str, after: str, *, shots: int = 5, context: str = "none",
    before_step: int | None = None, after_step: int | None = None,
    pretrained: str | None = None, metric: str = "loss",
) -> pd.DataFrame:
    """Per task: ICL and fine-tuning values of two points and their changes (``after − before``).

    §3.2 correlates these changes across tasks (Figure 2 right); §5.1 does the same between
    two steps of one trajectory (Figure 4 centre and right).
    """
    first = model_rows(frame, before, before_step, pretrained=pretrained)
    second = model_rows(frame, after, after_step, pretrained=pretrained)
    table = pd.concat(
        {"icl_before": icl_values(first, metric),
         "icl_after": icl_values(second, metric),
         "finetune_before": finetune_values(first, shots, context, metric),
         "finetune_after": finetune_values(second, shots, context, metric)},
        axis=1,
    ).dropna()
    table.index.name = "task"
    table["icl_delta"] = table["icl_after"] - table["icl_before"]
    table["finetune_delta"] = table["finetune_after"] - table["finetune_before"]
    return table.sort_index()


def delta_correlation(deltas: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Correlation:
    """Spearman's rho between the fine-tuning change and the ICL change across tasks."""
    return spearman(deltas["finetune_delta"], deltas["icl_delta"], n_boot=n_boot, seed=seed)


@dataclass(frozen=True)
class PhaseCorrelations:
    """§5.1: changes from step 0 to the split step (early) and from there to the end (late)."""

    early: Correlation
    late: Correlation
    early_table: pd.DataFrame
    late_table: pd.DataFrame
    split_step: int
    final_step: int


def phase_correlations(
    frame: pd.DataFrame, model: str, *, split_step: int, final_step: int | None = None,
    pretrained: str = "pretrained", shots: int = 5, context: str = "none",
    seed: int = 0,
) -> PhaseCorrelations:
    """Correlate per-task FT and ICL changes in the two phases of instruction tuning."""
    if final_step is None:
        steps = frame.loc[frame["model"] == model, "checkpoint_step"]
        final_step = int(steps.max()) if not steps.empty else split_step
    common = {"shots": shots, "context": context, "pretrained": pretrained}
    early = model_deltas(frame, model, model, before_step=0, after_step=split_step, **common)
    late = model_deltas(frame, model, model, before_step=split_step, after_step=final_step,
                        **common)
    return PhaseCorrelations(
        early=delta_correlation(early, seed=seed), late=delta_correlation(late, seed=seed),
        early_table=early, late_table=late, split_step=split_step, final_step=final_step,
    )


# --- mean curves -------------------------------------------------------------------------


def mean_and_sem(values: pd.Series) -> dict[str, float]:
    n = int(values.notna().sum())
    mean = float(values.mean()) if n else float("nan")
    sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "sem": sem, "n_tasks": n}


def transfer_curves(
    frame: pd.DataFrame, models: Mapping[str, str], *, metric: str = "loss",
    steps: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Mean (over tasks) fine-tuning ``metric`` against k, per model label and context.

    ``models`` maps a display label to a model; Figure 1 (left) draws one line per row group.
    """
    records = []
    for label, model in models.items():
        rows = model_rows(frame, model, (steps or {}).get(label))
        tuned = rows[(rows["method"] == "finetune") & (rows["split"] == "test")
                     & (rows["metric"] == metric)]
        for (context, shots), group in tuned.groupby(["context", "shots"]):
            per_task = group.groupby("task")["value"].mean()
            records.append({"label": label, "model": model, "context": context,
                            "shots": int(shots), **mean_and_sem(per_task)})
    columns = ["label", "model", "context", "shots", "mean", "sem", "n_tasks"]
    return pd.DataFrame.from_records(records, columns=columns).sort_values(
        ["label", "context", "shots"], ignore_index=True
    )


def trajectory_curves(
    frame: pd.DataFrame, model: str, steps: Sequence[int], *, pretrained: str = "pretrained",
    shots: int = 5, context: str = "none", metric: str = "loss",
) -> pd.DataFrame:
    """Mean ICL and k-shot fine-tuning ``metric`` at each step of a trajectory (Figure 4 left)."""
    records = []
    for step in sorted(set(steps)):
        rows = model_rows(frame, model, step, pretrained=pretrained)
        for method, values in (("icl", icl_values(rows, metric)),
                               ("finetune", finetune_values(rows, shots, context, metric))):
            if values.empty:
                continue
            records.append({"model": model, "step": int(step), "method": method,
                            **mean_and_sem(values)})
    columns = ["model", "step", "method", "mean", "sem", "n_tasks"]
    return pd.DataFrame.from_records(records, columns=columns)


def trajectory_points(
    frame: pd.DataFrame, model: str, steps: Sequence[int], *, pretrained: str = "pretrained",
    shots: int = 5, context: str = "none", metric: str = "loss",
) -> pd.DataFrame:
    """Per task and step of a trajectory: ICL and k-shot fine-tuning ``metric`` (long form:
    step, task, icl, finetune), what the paired tests between two steps read."""
    tables = []
    for step in sorted(set(steps)):
        rows = model_rows(frame, model, step, pretrained=pretrained)
        table = pd.concat({"icl": icl_values(rows, metric),
                           "finetune": finetune_values(rows, shots, context, metric)}, axis=1)
        if not table.empty:
            table.index.name = "task"
            tables.append(table.reset_index().assign(step=int(step)))
    columns = ["step", "task", "icl", "finetune"]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


def mean_losses(
    frame: pd.DataFrame, model: str, *, step: int | None = None, shots: int = 5,
    context: str = "none", pretrained: str | None = None,
) -> dict[str, float]:
    """Mean unseen ICL loss and k-shot fine-tuning loss of one point (NaN where unmeasured)."""
    rows = model_rows(frame, model, step, pretrained=pretrained)
    icl = icl_values(rows)
    tuned = finetune_values(rows, shots, context)
    return {"icl_loss": float(icl.mean()) if not icl.empty else float("nan"),
            "finetune_loss": float(tuned.mean()) if not tuned.empty else float("nan"),
            "n_icl_tasks": int(icl.size), "n_finetune_tasks": int(tuned.size)}


def limit_sort_key(limit: str) -> tuple[int, float, str]:
    """Order data limits numerically, with non-numeric ones (e.g. "all", no limit) last."""
    try:
        return (0, float(limit), limit)
    except ValueError:
        return (1, math.inf, limit)


def data_limit_summary(
    frame: pd.DataFrame, models: Mapping[str, str], *, shots: int = 5, context: str = "none",
) -> pd.DataFrame:
    """Mean ICL and fine-tuning loss per data limit (Figure 2 left), ordered by limit."""
    records = [{"limit": limit, "model": model, **mean_losses(frame, model, shots=shots,
                                                               context=context)}
               for limit, model in sorted(models.items(), key=lambda item: limit_sort_key(item[0]))]
    columns = ["limit", "model", "icl_loss", "finetune_loss", "n_icl_tasks", "n_finetune_tasks"]
    return pd.DataFrame.from_records(records, columns=columns)
