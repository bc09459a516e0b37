"""A cached index of an SNI task folder: name → metadata, instance count, file hash.

The full benchmark is ~1,600 files and ~3 GB of JSON; parsing it takes tens of seconds, while
the split selection only needs each task's metadata. The index keeps that metadata on disk, keyed
by each file's (size, mtime) signature: a second scan only ``stat``s the files and re-parses the
ones whose signature changed (or that are new). The file's SHA-256 is recorded for provenance.

The cache lives outside the SNI folder (which may be read-only) in ``$ITRANSFER_CACHE_DIR``
(default ``$XDG_CACHE_HOME/itransfer`` or ``~/.cache/itransfer``) and is written atomically,
only after every file parsed cleanly, so a bad file never leaves a partial index behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from itransfer.data.sni import (
    TaskMetadata,
    list_task_files,
    parse_task,
    read_task_bytes,
    resolve_tasks_dir,
)
from itransfer.runtime.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)

INDEX_FORMAT_VERSION = 1


@dataclass(frozen=True)
class IndexEntry:
    """What the index remembers of one task file."""

    metadata: TaskMetadata
    file_name: str
    size: int
    mtime_ns: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata.to_json(),
            "file_name": self.file_name,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexEntry:
        return cls(
            metadata=TaskMetadata.from_json(data["metadata"]),
            file_name=data["file_name"],
            size=data["size"],
            mtime_ns=data["mtime_ns"],
            sha256=data["sha256"],
        )


@dataclass(frozen=True)
class TaskIndex:
    """The metadata of every task in one folder, in file-name order."""

    tasks_dir: Path
    entries: tuple[IndexEntry, ...]
    reparsed: int  # how many files this scan had to parse (0 on a fully warm scan)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def metadata(self) -> list[TaskMetadata]:
        return [entry.metadata for entry in self.entries]

    def get(self, name: str) -> IndexEntry:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, IndexEntry]:
        return {entry.metadata.name: entry for entry in self.entries}


def default_cache_dir() -> Path:
    if env := os.environ.get("ITRANSFER_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "itransfer"


def _cache_file(tasks_dir: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(tasks_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "sni-index" / f"{key}.json"


def _load_cache(path: Path, tasks_dir: Path) -> dict[str, IndexEntry]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != INDEX_FORMAT_VERSION or data.get("tasks_dir") != str(
            tasks_dir.resolve()
        ):
            return {}
        return {item["file_name"]: IndexEntry.from_json(item) for item in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A damaged cache only costs a re-scan; it must never block the user.
        logger.warning("ignoring unreadable SNI index cache %s (%s)", path, exc)
        return {}


def build_index(
    sni_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Callable[[Iterable[Path], int], Iterable[Path]] | None = None,
) -> TaskIndex:
    """Index an SNI repository or ``tasks/`` folder, re-parsing only changed files.

    ``progress`` wraps the iteration over files that need parsing (the CLI passes a rich
    progress bar); it receives the files and their count.
    """
    tasks_dir = resolve_tasks_dir(sni_dir)
    files = list_task_files(tasks_dir)
    cache_path = _cache_file(tasks_dir, cache_dir or default_cache_dir())
    cached = _load_cache(cache_path, tasks_dir) if use_cache else {}

    entries: dict[str, IndexEntry] = {}
    stale: list[tuple[Path, os.stat_result]] = []
    for file in files:
        stat = file.stat()
        hit = cached.get(file.name)
        if hit is not None and hit.size == stat.st_size and hit.mtime_ns == stat.st_mtime_ns:
            entries[file.name] = hit
        else:
            stale.append((file, stat))

    to_parse: Iterable[Path] = [file for file, _ in stale]
    if progress is not None and stale:
        to_parse = progress(to_parse, len(stale))
    stats = dict(stale)
    for file in to_parse:
        raw = read_task_bytes(file)
        task = parse_task(file, raw)
        stat = stats[file]
        entries[file.name] = IndexEntry(
            metadata=task.metadata,
            file_name=file.name,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            sha256=hashlib.sha256(raw).hexdigest(),
        )

    index = TaskIndex(
        tasks_dir=tasks_dir,
        entries=tuple(entries[file.name] for file in files),
        reparsed=len(stale),
    )
    if use_cache and (stale or len(cached) != len(files)):
        _save_cache(cache_path, index)
    return index


def _save_cache(path: Path, index: TaskIndex) -> None:
    payload = {
        "version": INDEX_FORMAT_VERSION,
        "tasks_dir": str(index.tasks_dir.resolve()),
        "entries": [entry.to_json() for entry in index.entries],
    }
    try:
        atomic_write_text(path, json.dumps(payload))
    except OSError as exc:
        # A read-only cache location only costs speed next time.
        logger.warning("could not write SNI index cache %s (%s)", path, exc)
