"""The results table: one tidy row per measurement, appended to a Parquet dataset.

Every measurement is a row ``(run, model, checkpoint_step, task, category, task_group, split,
method, context, shots, seed, metric, value, n, config_hash, cell, written_at)``, where
``task_group`` is the task's group in the selection (``seen``, ``unseen``, ``unseen_synthetic``,
``heldout_domain``, ``heldout_adversarial``). Rows are written as a
new Parquet file per batch of cells (a temporary file renamed into place), so nothing is ever
rewritten and a crash mid-write leaves only complete files. A *cell* is the unit of work that
produced a group of rows (e.g. one task's ICL evaluation, one (task, k, context, seed) LoRA
run); finished cells are skipped when an evaluation is re-run, unless forced — a forced re-run
appends newer rows, and :meth:`ResultsTable.read` keeps the latest row of each measurement.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from itransfer.errors import DataError
from itransfer.runs.compat import upgrade_result_row

RESULTS_DIR = "results"
SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("model", pa.string()),
        ("checkpoint_step", pa.int64()),
        ("task", pa.string()),
        ("category", pa.string()),
        ("task_group", pa.string()),  # null in tables written before the column existed
        ("split", pa.string()),
        ("method", pa.string()),  # icl | finetune | seen
        ("context", pa.string()),
        ("shots", pa.int64()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("n", pa.int64()),
        ("config_hash", pa.string()),
        ("cell", pa.string()),
        ("written_at", pa.string()),
    ]
)
MEASUREMENT_KEY = [
    "run", "model", "checkpoint_step", "task", "split", "method", "context", "shots", "seed",
    "metric", "config_hash",
]


class ResultsTable:
    """The Parquet dataset under ``<run_dir>/results``."""

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / RESULTS_DIR

    def append(self, rows: Iterable[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new Parquet file; returns it (None when there are no rows)."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        records = [{**upgrade_result_row(row), "written_at": stamp} for row in rows]
        if not records:
            return None
        missing = [name for name in SCHEMA.names if name not in records[0]]
        if missing:
            raise ValueError(f"result rows lack columns {missing}")
        table = pa.Table.from_pylist(records, schema=SCHEMA)
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"part-{stamp.replace(':', '')}-{uuid.uuid4().hex[:8]}.parquet"
        staging = final.with_suffix(".parquet.tmp")
        pq.write_table(table, staging)
        os.replace(staging, final)
        return final

    def files(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet")) if self.root.is_dir() else []

    def read(self, *, latest_only: bool = True) -> pd.DataFrame:
        """All rows (by default the latest row of each measurement); a column of
        :data:`~itransfer.runs.compat.LATER_RESULT_COLUMNS` that a file predates reads as null."""
        files = self.files()
        if not files:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in SCHEMA.names})
        tables = []
        for file in files:
            try:
                tables.append(pq.read_table(file, schema=SCHEMA))
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(file, f"unreadable results file ({exc})") from exc
        frame = pa.concat_tables(tables).to_pandas()
        if latest_only and not frame.empty:
            frame = frame.sort_values("written_at").drop_duplicates(MEASUREMENT_KEY, keep="last")
        return frame.reset_index(drop=True)

    def finished_cells(self) -> set[str]:
        if not self.files():
            return set()
        return set(self.read(latest_only=False)["cell"].unique())
