"""tools/make_full_size_standin.py: a seeded, SNI-shaped stand-in the whole pipeline can read."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from itransfer.data.benchmark import bundled_sni_dir
from itransfer.data.index import build_index
from itransfer.data.sni import parse_task

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_full_size_standin.py"


def _tool():
    spec = importlib.util.spec_from_file_location("make_full_size_standin", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_has_the_asked_size_keeps_categories_and_is_seeded(tmp_path: Path) -> None:
    tool = _tool()
    tool.main([str(bundled_sni_dir()), str(tmp_path / "a"), "--tasks", "12",
               "--instances", "6000"])
    tool.main([str(bundled_sni_dir()), str(tmp_path / "b"), "--tasks", "12",
               "--instances", "6000"])
    files = sorted((tmp_path / "a").glob("*.json"))
    assert len(files) == 12
    assert [f.read_bytes() for f in files] == [
        f.read_bytes() for f in sorted((tmp_path / "b").glob("*.json"))]
    index = build_index(tmp_path / "a")
    total = sum(entry.metadata.num_instances for entry in index)
    assert 5000 <= total <= 7000  # scaled to the asked total (each task keeps >= 150)
    sources = sorted(bundled_sni_dir().glob("task*.json"))
    for number, path in enumerate(files):
        task = parse_task(path)
        source = parse_task(sources[number])
        assert task.categories == source.categories and task.definition == source.definition
        assert len({instance.id for instance in task.instances}) == len(task.instances)
