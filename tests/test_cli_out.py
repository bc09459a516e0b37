"""``--out``: a file there, or another writer, is one line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from itransfer.cli import main
from itransfer.cli.common import LOCK_FILE


@pytest.mark.parametrize("command", [
    ["train", "--set", "train.steps=1"],
    ["eval", "icl"],
    ["eval", "transfer"],
    ["run", "paper/sec3_1_transfer", "--scale", "tiny"],
    ["quickstart"],
    ["pretrain"],
    ["data", "summary"],
])
def test_out_naming_a_file_is_refused_before_any_work(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main([*command, "--out", str(existing)])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: --out {existing}: is a file; --out names a folder to write into"
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("command", [
    ["train", "--set", "train.steps=1"],
    ["eval", "icl"],
    ["run", "paper/sec3_1_transfer", "--scale", "tiny"],
])
def test_a_second_writer_into_a_busy_run_folder_stops_with_one_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # Another process holds the run folder's lock (here: a child that sleeps holding it).
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock\n"
        f"lock = FileLock({str(out / LOCK_FILE)!r}); lock.acquire()\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as info:
            main([*command, "--out", str(out)])
        assert info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: --out {out}: another itransfer process is writing")
        assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock with the process
        holder.wait()
    with FileLock(out / LOCK_FILE, timeout=0):
        pass
