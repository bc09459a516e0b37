"""Evaluation sharded over two processes gives the same results table as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from two_processes import launch_two

SCRIPT = Path(__file__).with_name("distributed_eval.py")
TRANSFER_SCRIPT = Path(__file__).with_name("distributed_transfer.py")
OVERRIDES = [
    "model.max_source_length=96", "model.max_target_length=16", "data.splits.unseen_test_size=6",
    "eval.max_tasks=3", "eval.max_new_tokens=4", "eval.batch_size=4", "eval.seen_max_instances=2",
]
COLUMNS = ["task", "method", "split", "metric", "n"]


def _run_one(script: Path, *arguments: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=600,
        env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]


def _table(out: Path):
    from itransfer.eval.results import ResultsTable

    frame = ResultsTable(out).read().sort_values(COLUMNS).reset_index(drop=True)
    return frame


def assert_same_rows(one_process: Path, sharded: Path) -> None:
    """The sharded evaluation's rows are the one process's, and its processes each wrote
    their own files (the work really was split)."""
    one, other = _table(one_process), _table(sharded)
    assert len(one) == len(other) > 0
    assert one[COLUMNS].equals(other[COLUMNS])
    assert (one["value"] - other["value"]).abs().max() < 1e-5
    assert len(list((sharded / "results").glob("part-*.parquet"))) > 1


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    _run_one(SCRIPT, str(tiny_model_dir), str(tmp_path / "one"), *OVERRIDES)
    launch_two(SCRIPT, str(tiny_model_dir), str(tmp_path / "two"), *OVERRIDES)
    assert_same_rows(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_batched_transfer_grid_does_not_depend_on_processes_or_speed_knobs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The default engine with the default LoRA dropout (0.05): one process training every
    # cell of a task in one group and pass, against two processes training groups of 2 cells in
    # passes of 3 examples. Only float32 rounding may differ. Two seeds: each seed's k-shot
    # draw must not depend on which process trains it.
    grid = [*OVERRIDES, "eval.shots=[0,5]", "eval.seeds=[0,1]", "eval.transfer_contexts=[none]",
            "eval.lora.epochs=2", "eval.lora.batch_size=4"]
    _run_one(TRANSFER_SCRIPT, str(tiny_model_dir), str(tmp_path / "one"), *grid)
    launch_two(
        TRANSFER_SCRIPT, str(tiny_model_dir), str(tmp_path / "two"), *grid,
        "eval.cells_per_group=2", "eval.max_examples_per_pass=3",
    )
    cell_columns = [*COLUMNS, "shots", "seed"]
    one, two = ((_table(tmp_path / out).sort_values(cell_columns).reset_index(drop=True))
                for out in ("one", "two"))
    assert set(one["method"]) == {"finetune"}
    assert set(zip(one["shots"], one["seed"], strict=True)) == {(0, 0), (5, 0), (5, 1)}
    assert len(one) == len(two) > 0
    assert one[cell_columns].equals(two[cell_columns])
    losses = one["metric"] == "loss"
    assert (one.loc[losses, "value"] - two.loc[losses, "value"]).abs().max() < 1e-4
    assert (one.loc[~losses, "value"] - two.loc[~losses, "value"]).abs().max() < 1e-6
    assert len(list((tmp_path / "two" / "results").glob("part-*.parquet"))) > 1
