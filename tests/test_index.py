"""The on-disk index: a warm scan parses nothing; a changed, new or removed file is noticed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import write_task
from itransfer.data.index import build_index


def _tasks(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    for number in range(1, 4):
        write_task(folder, f"task00{number}_demo")
    return folder


def test_second_scan_reuses_the_cache(tmp_path: Path) -> None:
    folder = _tasks(tmp_path)
    cold = build_index(folder)
    warm = build_index(folder)
    assert cold.reparsed == 3 and warm.reparsed == 0
    assert [e.metadata for e in cold] == [e.metadata for e in warm]
    assert warm.get("task002_demo").metadata.num_instances == 200
    assert len(warm.get("task002_demo").sha256) == 64


def test_changed_new_and_removed_files_invalidate_their_entries(tmp_path: Path) -> None:
    folder = _tasks(tmp_path)
    build_index(folder)

    changed = folder / "task002_demo.json"
    data = json.loads(changed.read_text())
    data["Instances"] = data["Instances"][:150]
    changed.write_text(json.dumps(data))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    write_task(folder, "task004_new")
    (folder / "task001_demo.json").unlink()

    index = build_index(folder)
    assert index.reparsed == 2  # the changed file and the new one
    assert [e.metadata.name for e in index] == ["task002_demo", "task003_demo", "task004_new"]
    assert index.get("task002_demo").metadata.num_instances == 150


def test_damaged_cache_is_rebuilt(tmp_path: Path, isolated_cache: Path) -> None:
    folder = _tasks(tmp_path)
    build_index(folder)
    for cache_file in isolated_cache.rglob("*.json"):
        cache_file.write_text("{not json")
    index = build_index(folder)
    assert index.reparsed == 3 and len(index) == 3
    assert build_index(folder).reparsed == 0


def test_no_cache_mode_parses_everything(tmp_path: Path, isolated_cache: Path) -> None:
    folder = _tasks(tmp_path)
    assert build_index(folder, use_cache=False).reparsed == 3
    assert not list(isolated_cache.rglob("*.json"))
