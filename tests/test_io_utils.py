"""Staged folders: swapped in whole with shareable modes, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from itransfer.runtime.atomic_files import staged_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_staged_dir_replaces_the_target_with_shareable_modes(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        target = tmp_path / "out" / "adapter"
        with staged_dir(target) as staging:
            (staging / "weights.bin").write_bytes(b"new")
            (staging / "weights.bin").chmod(0o600)  # as some writers leave their files
        assert _mode(target) == 0o755 and _mode(target / "weights.bin") == 0o644
        with pytest.raises(RuntimeError), staged_dir(target) as staging:
            (staging / "weights.bin").write_bytes(b"half")
            raise RuntimeError("crash while writing")
        assert (target / "weights.bin").read_bytes() == b"new"
        assert [path.name for path in target.parent.iterdir()] == ["adapter"]  # no leftovers
    finally:
        os.umask(umask)
