"""§4 and Figure 3: seen-task fit per sampler, and seen-task losses binned by training-set size.

Pure functions on the results table, like :mod:`itransfer.analysis.correlations`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from itransfer.analysis.correlations import icl_values, mean_and_sem, model_rows, task_values


def seen_task_table(frame: pd.DataFrame, model: str, step: int | None = None) -> pd.DataFrame:
    """Per seen task: training-set size and mean train/test loss (columns may be NaN)."""
    rows = model_rows(frame, model, step)
    table = pd.concat(
        {"train_size": task_values(rows, method="seen", metric="train_size", split="train"),
         "train_loss": task_values(rows, method="seen", metric="loss", split="train"),
         "validation_loss": task_values(rows, method="seen", metric="loss", split="validation"),
         "test_loss": task_values(rows, method="seen", metric="loss", split="test")},
        axis=1,
    )
    table.index.name = "task"
    return table.sort_index()


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
    """Per sampler: mean seen train/test loss and unseen ICL loss (Figure 3 left)."""
    records = []
    for sampler, model in models.items():
        rows = model_rows(frame, model, (steps or {}).get(sampler))
        seen = seen_task_table(frame, model, (steps or {}).get(sampler))
        icl = icl_values(rows)
        records.append({
            "sampler": sampler, "model": model,
            "seen_train_loss": float(seen["train_loss"].mean()),
            "seen_validation_loss": float(seen["validation_loss"].mean()),
            "seen_test_loss": float(seen["test_loss"].mean()),
            "icl_loss": float(icl.mean()) if not icl.empty else float("nan"),
            "n_seen_tasks": int(seen["test_loss"].notna().sum()),
            "n_unseen_tasks": int(icl.size),
        })
    columns = ["sampler", "model", "seen_train_loss", "seen_validation_loss", "seen_test_loss",
               "icl_loss", "n_seen_tasks", "n_unseen_tasks"]
    summary = pd.DataFrame.from_records(records, columns=columns)
    summary["chosen_on_validation"] = _chosen_on_validation(summary)
    return summary


def _chosen_on_validation(summary: pd.DataFrame) -> pd.Series:
    """§4 picks reverse annealing's T_max by seen-task validation loss: within each family of
    samplers named ``<family>-<value>`` (e.g. ``ra-100`` … ``ra-100000``), mark the one with the
    lowest validation loss; samplers without a family are their own choice."""
    families = summary["sampler"].astype(str).str.rsplit("-", n=1).str[0]
    chosen = pd.Series(True, index=summary.index)
    for _, members in summary.groupby(families):
        if len(members) > 1 and members["seen_validation_loss"].notna().any():
            best = members["seen_validation_loss"].idxmin()
            chosen[members.index] = members.index == best
    return chosen
