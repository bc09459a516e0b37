"""§4 and Figure 3: seen-task fit per sampler, and seen-task losses binned by training-set size.

Pure functions on the results table, like :mod:`itransfer.analysis.correlations`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from itransfer.analysis.correlations import icl_values, mean_and_sem, model_rows, task_values
from itransfer.analysis.significance import PairedTest, paired_test

SEEN_SPLITS = ("train", "validation", "test")


def seen_task_table(frame: pd.DataFrame, model: str, step: int | None = None) -> pd.DataFrame:
    """Per seen task: training-set size, mean train/validation/test loss and each split's
    weight in a pooled average (``<split>_weight``; columns may be NaN).

    The weight is the split's size (``split_size`` rows). Results written before those rows
    existed fall back on the training-set size: every seen task has the same validation and
    test fractions, so without a data limit (§4 has none) their sizes are proportional to it
    up to rounding.
    """
    rows = model_rows(frame, model, step)
    columns = {"train_size": task_values(rows, method="seen", metric="train_size", split="train")}
    for split in SEEN_SPLITS:
        columns[f"{split}_loss"] = task_values(rows, method="seen", metric="loss", split=split)
    for split in SEEN_SPLITS:
        columns[f"{split}_weight"] = task_values(rows, method="seen", metric="split_size",
                                                 split=split)
    table = pd.concat(columns, axis=1)
    for split in SEEN_SPLITS:
        table[f"{split}_weight"] = table[f"{split}_weight"].fillna(table["train_size"])
    table.index.name = "task"
    return table.sort_index()


def pooled_mean(losses: pd.Series, weights: pd.Series) -> float:
    """The example-weighted (pooled) mean of per-task mean losses: Σ w·loss / Σ w over the
    tasks with both. With each task's mean from a random sample of its split and w its split
    size, it estimates the mean loss over every example of the split without bias."""
    both = pd.concat({"loss": losses, "weight": weights}, axis=1).dropna()
    both = both[both["weight"] > 0]
    if both.empty:
        return float("nan")
    return float(np.average(both["loss"], weights=both["weight"]))


def pooled_per_task(per_task: pd.DataFrame, weights: pd.Series) -> pd.DataFrame:
    """``per_task`` (task × candidate losses) rescaled so that a column's plain mean is its
    pooled mean: each task's values times ``w / mean(w)`` over the tasks every candidate and
    the weights have (others dropped).

    A bootstrap over tasks of these values (``significance.ranking_stability``) then ranks each
    resample by its pooled means: within a resample the plain mean is Σ w·loss over the drawn
    tasks divided by a number common to every candidate, so the order is the pooled one.
    """
    complete = per_task.join(weights.rename("__weight__"), how="inner").dropna()
    complete = complete[complete["__weight__"] > 0]
    scale = complete.pop("__weight__")
    return complete.mul(scale / scale.mean(), axis=0)


def size_bin_edges(sizes: Sequence[float] | np.ndarray, num_bins: int = 5) -> np.ndarray:
    """Log-spaced bin edges spanning the training-set sizes (integers, strictly increasing)."""
    positive = np.asarray(sizes, dtype=float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if positive.size == 0:
        return np.array([], dtype=float)
    low, high = float(positive.min()), float(positive.max())
    if low == high:
        return np.array([low, high + 1.0])
    edges = np.unique(np.round(np.geomspace(low, high, num_bins + 1)))
    edges[-1] = high + 1.0  # the largest task falls inside the last half-open bin
    return edges


def assign_size_bins(sizes: pd.Series, edges: np.ndarray) -> pd.Series:
    """Label of each size's bin ``[low, high)`` (NaN outside the edges)."""
    if edges.size < 2:
        return pd.Series(np.nan, index=sizes.index, dtype=object)
    labels = [f"{int(low)}–{int(high) - 1}" for low, high in itertools.pairwise(edges)]
    return pd.cut(sizes, bins=edges, right=False, labels=labels)


def size_binned_seen_losses(
    frame: pd.DataFrame, models: Mapping[str, str], *, num_bins: int = 5,
    steps: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Mean seen-task train and test loss per log-size bin, per model label (Figure 3 centre/right).

    All models share one set of bin edges so their curves line up.
    """
    tables = {label: seen_task_table(frame, model, (steps or {}).get(label))
              for label, model in models.items()}
    all_sizes = np.concatenate([t["train_size"].to_numpy(dtype=float) for t in tables.values()]
                               or [np.array([])])
    edges = size_bin_edges(all_sizes, num_bins)
    records = []
    columns = ["label", "split", "bin", "bin_low", "bin_high", "mean", "sem", "n_tasks"]
    if edges.size < 2:
        return pd.DataFrame(columns=columns)
    for label, table in tables.items():
        bins = assign_size_bins(table["train_size"], edges)
        for position, bin_label in enumerate(bins.cat.categories):
            in_bin = table[bins == bin_label]
            for split in ("train", "test"):
                records.append({"label": label, "split": split, "bin": bin_label,
                                "bin_low": float(edges[position]),
                                "bin_high": float(edges[position + 1]),
                                **mean_and_sem(in_bin[f"{split}_loss"])})
    return pd.DataFrame.from_records(records, columns=columns)


def sampler_summary(
    frame: pd.DataFrame, models: Mapping[str, str], *, steps: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Per sampler: seen train/validation/test loss, as the mean over tasks and as the pooled
    (example-weighted) mean, and unseen ICL loss (Figure 3 left)."""
    records = []
    for sampler, model in models.items():
        rows = model_rows(frame, model, (steps or {}).get(sampler))
        seen = seen_task_table(frame, model, (steps or {}).get(sampler))
        icl = icl_values(rows)
        records.append({
            "sampler": sampler, "model": model,
            **{f"seen_{split}_loss": float(seen[f"{split}_loss"].mean())
               for split in SEEN_SPLITS},
            **{f"seen_{split}_loss_pooled": pooled_mean(seen[f"{split}_loss"],
                                                        seen[f"{split}_weight"])
               for split in SEEN_SPLITS},
            "icl_loss": float(icl.mean()) if not icl.empty else float("nan"),
            "n_seen_tasks": int(seen["test_loss"].notna().sum()),
            "n_unseen_tasks": int(icl.size),
        })
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


# Per sampler: the per-task mean of each seen split's loss, then the pooled (example-weighted)
# one; proportional sampling minimises the pooled training loss, uniform the per-task mean.
SUMMARY_COLUMNS = ["sampler", "model", "seen_train_loss", "seen_validation_loss",
                   "seen_test_loss", "seen_train_loss_pooled", "seen_validation_loss_pooled",
                   "seen_test_loss_pooled", "icl_loss", "n_seen_tasks", "n_unseen_tasks"]


# --- §4: over- and underfitting the small tasks (Figure 3 centre and right) -----------------


def small_tasks(sizes: pd.Series, edges: np.ndarray, small_bins: int) -> list[str]:
    """The tasks (``sizes``: task → training-set size) in the lowest ``small_bins`` of the
    log-size bins ``edges``, Figure 3's "lower resource tasks"."""
    bins = assign_size_bins(sizes, edges)
    if bins.isna().all():
        return []
    lowest = list(bins.cat.categories[:small_bins])
    return sorted(sizes.index[bins.isin(lowest)])


@dataclass(frozen=True)
class SmallTaskFit:
    """A sampler against the reference (proportional) on the small tasks: Wilcoxon tests of the
    per-task differences ``sampler − reference`` of train and of test loss."""

    sampler: str
    reference: str
    train: PairedTest
    test: PairedTest
    gap_difference: float  # mean over tasks of (test − train)_sampler − (test − train)_reference


def small_task_fit(train: pd.DataFrame, test: pd.DataFrame, tasks: Sequence[str],
                   sampler: str, reference: str) -> SmallTaskFit:
    """``train``/``test``: task × sampler per-task losses; ``tasks``: the small ones."""
    rows = list(tasks)
    ours, theirs = train.reindex(rows), test.reindex(rows)
    gaps = (theirs[sampler] - ours[sampler]) - (theirs[reference] - ours[reference])
    # One-sided for a higher loss than the reference's (underfit on train, worse on test); a
    # significantly lower train loss (overfit's half) is the train test's opposite side.
    return SmallTaskFit(
        sampler=sampler, reference=reference,
        train=paired_test(ours[reference], ours[sampler], 1.0, opposite="lower train loss"),
        test=paired_test(theirs[reference], theirs[sampler], 1.0, opposite="lower test loss"),
        gap_difference=float(gaps.mean()) if gaps.notna().any() else float("nan"),
    )


# --- §4: which samplers the paper compares -------------------------------------------------

REVERSE_ANNEALING = "reverse_annealing"
PAPER_COMPARISON = ("proportional", "uniform", REVERSE_ANNEALING)  # Figure 3's sampler kinds


def sampler_kind(name: str, registered: str | None) -> str:
    """The sampler a §4 model was trained with: the manifest's, else guessed from its label.

    Manifests record the sampler's registry name; the guess (``ra-1000`` → reverse annealing)
    only serves hand-written manifests and results of runs that predate that record.
    """
    if registered:
        return registered
    lowered = name.lower()
    if lowered.startswith(("ra-", "ra_", "reverse")):
        return REVERSE_ANNEALING
    return lowered


@dataclass(frozen=True)
class SamplerComparison:
    """§4's selection: the reverse-annealing sweep ranked on seen validation loss, the models
    Figure 3 compares (proportional, uniform, the best ``keep`` reverse-annealing runs) and the
    rest (DWA, the reverse-annealing runs not kept, any other sampler)."""

    compared: tuple[str, ...]  # sampler names (the section's keys), in Figure 3's order
    others: tuple[str, ...]
    sweep: pd.DataFrame  # per reverse-annealing run: settings, validation loss, rank, kept
    notes: tuple[str, ...]  # what could not be chosen as the paper does, and why


def compare_samplers(
    summary: pd.DataFrame, kinds: Mapping[str, str],
    sampler_configs: Mapping[str, Mapping[str, object]], *, keep: int = 2,
) -> SamplerComparison:
    """Pick Figure 3's models: §4 "sweep[s] over T = 10^{2,3,4,5} and report[s] the two highest
    performing methods based on seen task validation data".

    ``kinds`` maps each sampler name to its sampler (see :func:`sampler_kind`), ``sampler_configs``
    to its sampler config (for the sweep table's temperature and schedule). Proportional and uniform
    are always compared (the first of each when a run trained several); reverse-annealing runs
    are ranked by mean seen-task validation loss, lowest first, and the best ``keep`` join them.
    A run without a validation loss cannot be ranked; it is reported, never silently kept.
    """
    names = list(summary["sampler"])
    validation = dict(zip(names, summary["seen_validation_loss"], strict=True))
    notes: list[str] = []
    compared: list[str] = []
    for kind in ("proportional", "uniform"):
        of_kind = [name for name in names if kinds.get(name) == kind]
        if of_kind:
            compared.append(of_kind[0])
        else:
            notes.append(f"no {kind} model in this run")
    annealed = [name for name in names if kinds.get(name) == REVERSE_ANNEALING]
    records = []
    for name in annealed:
        sampler_config = sampler_configs.get(name) or {}
        records.append({
            "sampler": name,
            "max_temperature": sampler_config.get("max_temperature"),
            # linear: the only schedule before the field existed
            "schedule": sampler_config.get("schedule", "linear"),
            "seen_validation_loss": float(validation[name]),
        })
    sweep = pd.DataFrame.from_records(
        records, columns=["sampler", "max_temperature", "schedule", "seen_validation_loss"])
    ranked = sweep["seen_validation_loss"].rank(method="first")
    sweep["rank"] = ranked.astype("Int64")
    sweep["kept"] = ranked.le(keep).fillna(False).astype(bool)
    sweep = sweep.sort_values(["rank", "sampler"], na_position="last", ignore_index=True)
    compared += list(sweep.loc[sweep["kept"], "sampler"])
    if annealed and sweep["seen_validation_loss"].isna().any():
        missing = ", ".join(sweep.loc[sweep["seen_validation_loss"].isna(), "sampler"])
        notes.append(f"no seen validation loss for {missing}: not ranked")
    if not annealed:
        notes.append("no reverse-annealing model in this run")
    elif len(annealed) < keep:
        notes.append(f"the paper keeps the best {keep} of a sweep; this run has {len(annealed)}")
    others = tuple(name for name in names if name not in compared)
    return SamplerComparison(compared=tuple(compared), others=others, sweep=sweep,
                             notes=tuple(notes))
