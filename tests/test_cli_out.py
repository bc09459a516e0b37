"""``--out`` naming an existing file is one line on stderr and exit status 2, for every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from itransfer.cli import main


@pytest.mark.parametrize("command", [
    ["train", "--set", "train.steps=1"],
    ["eval", "icl"],
    ["eval", "transfer"],
    ["run", "configs/paper/sec3_1_transfer.yaml", "--scale", "tiny"],
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
