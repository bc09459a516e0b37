"""Evaluation sharded over two processes gives the same results table as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from two_processes import launch_two

SCRIPT = Path(__file__).with_name("distributed_eval.py")
OVERRIDES = [
    "model.max_source_length=96", "model.max_target_length=16", "data.splits.unseen_test_size=6",
    "eval.max_tasks=3", "eval.max_new_tokens=4", "eval.batch_size=4", "eval.seen_max_instances=2",
]
COLUMNS = ["task", "method", "split", "metric", "n"]


def _table(out: Path):
    from itransfer.eval.results import ResultsTable

    frame = ResultsTable(out).read().sort_values(COLUMNS).reset_index(drop=True)
    return frame


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(SCRIPT), str(tiny_model_dir), str(tmp_path / "one"), *OVERRIDES],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    launch_two(SCRIPT, str(tiny_model_dir), str(tmp_path / "two"), *OVERRIDES)
    one, two = _table(tmp_path / "one"), _table(tmp_path / "two")
    assert len(one) == len(two) > 0
    assert one[COLUMNS].equals(two[COLUMNS])
    assert (one["value"] - two["value"]).abs().max() < 1e-5
    # Each process wrote its own files, so the work really was split.
    assert len(list((tmp_path / "two" / "results").glob("part-*.parquet"))) > 1
