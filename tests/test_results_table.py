"""The results table: tidy rows appended as Parquet files, never rewritten."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from itransfer.cli import app
from itransfer.errors import DataError
from itransfer.eval.results import ResultsTable


def _row(metric: str, value: float, *, cell: str = "c1", shots: int = 5) -> dict:
    return {
        "run": "r", "model": "m", "checkpoint_step": 0, "task": "task001_x", "category": "QA",
        "split": "test", "method": "finetune", "context": "none", "shots": shots, "seed": 0,
        "metric": metric, "value": value, "n": 100, "config_hash": "h", "cell": cell,
    }


def test_append_read_and_finished_cells(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path)
    assert table.read().empty and table.finished_cells() == set()
    first = table.append([_row("loss", 2.0), _row("rougeL", 10.0)])
    table.append([_row("loss", 1.5, cell="c2", shots=10)])
    frame = table.read()
    assert len(frame) == 3 and set(frame["cell"]) == {"c1", "c2"}
    assert table.finished_cells() == {"c1", "c2"}
    assert first.read_bytes()  # earlier files are never touched by later appends
    assert len(table.files()) == 2


def test_forced_rerun_appends_and_latest_wins(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path)
    table.append([_row("loss", 2.0)])
    table.append([_row("loss", 1.0)])
    assert table.read()["value"].tolist() == [1.0]
    assert sorted(table.read(latest_only=False)["value"].tolist()) == [1.0, 2.0]


def test_staging_files_are_ignored_and_bad_files_named(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path)
    table.append([_row("loss", 2.0)])
    (table.root / "part-x.parquet.tmp").write_bytes(b"half written")
    assert len(table.read()) == 1
    (table.root / "part-zzz.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"part-zzz\.parquet"):
        table.read()


def test_rows_need_every_column(tmp_path: Path) -> None:
    row = _row("loss", 1.0)
    del row["seed"]
    with pytest.raises(ValueError, match="seed"):
        ResultsTable(tmp_path).append([row])


def test_results_show(tmp_path: Path) -> None:
    ResultsTable(tmp_path).append([_row("loss", 2.0), _row("rougeL", 10.0)])
    # A held-out task's row is its own line, not averaged into the unrecorded group's.
    ResultsTable(tmp_path).append([{**_row("loss", 5.0, cell="c3"), "task": "task002_y",
                                    "task_group": "heldout_domain"}])
    result = CliRunner().invoke(app, ["results", "show", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "finetune" in result.output and "2.000" in result.output and "10.000" in result.output
    lines = result.output.splitlines()
    assert any("heldout_domain" in line and "5.000" in line for line in lines)
    assert any("—" in line and "2.000" in line for line in lines)
    empty = CliRunner().invoke(app, ["results", "show", str(tmp_path / "nothing")])
    assert isinstance(empty.exception, DataError)


def test_a_table_written_before_task_group_still_reads(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from itransfer.eval.results import SCHEMA

    old_schema = pa.schema([field for field in SCHEMA if field.name != "task_group"])
    table = ResultsTable(tmp_path)
    table.root.mkdir(parents=True)
    old = {**_row("loss", 2.0), "written_at": "2024-01-01T00:00:00"}
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema),
                   table.root / "part-old.parquet")
    table.append([{**_row("loss", 1.0, cell="c2", shots=10), "task_group": "heldout_domain"}])
    frame = table.read().set_index("cell")
    assert frame.loc["c1", "value"] == 2.0 and pd.isna(frame.loc["c1", "task_group"])
    assert frame.loc["c2", "task_group"] == "heldout_domain"
