"""``--checkpoint best-transfer:RUN``: the trajectory checkpoint with the lowest monitored
few-shot transfer loss, among the steps that have both a probe row and a checkpoint."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from itransfer.errors import DataError
from itransfer.runs.checkpoints import STATE_FILE, TRAJECTORY_DIR, checkpoint_name
from itransfer.runs.monitor_log import (
    LOG_FILE,
    best_transfer_checkpoint,
    read_monitor_rows,
    resolve_checkpoint,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _probe(loss: float) -> dict[str, Any]:
    """A probe row's values as the monitor writes them (itransfer.eval.monitor.measure)."""
    return {"k": 2, "tasks": 2, "test_items": 6, "finetune_loss": loss, "icl_loss": 3.0,
            "spearman": 0.5, "finetune_loss_by_k": {"2": loss}, "spearman_by_k": {"2": 0.5},
            "per_task": {}, "seconds": 0.1, "forgetting": False}


def _run(tmp_path: Path, probes: dict[int, float], checkpoints: list[int]) -> Path:
    """A run folder: training rows, the probe rows at ``probes`` steps and checkpoints."""
    run = tmp_path / "run"
    rows: list[dict[str, Any]] = []
    for step in range(max([*probes, *checkpoints, 0]) + 1):
        if step:
            rows.append({"step": step, "loss": 2.0, "lr": 1e-4})
        if step in probes:
            rows.append({"step": step, "monitor": _probe(probes[step])})
    run.mkdir()
    (run / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    for step in checkpoints:
        folder = run / TRAJECTORY_DIR / checkpoint_name(step)
        folder.mkdir(parents=True)
        (folder / STATE_FILE).write_text(json.dumps({"it_step": step, "total_it_steps": 40}))
    (run / TRAJECTORY_DIR / f"{checkpoint_name(50)}.tmp").mkdir(parents=True)  # staging
    return run


# Step 0 (pre-trained) and step 25 (no checkpoint) and step 50 (staging only) are lower than any
# candidate; the highest is step 20; 10 and 30 tie at the lowest among the candidates.
PROBES = {0: 0.5, 10: 1.2, 20: 1.9, 25: 0.7, 30: 1.2, 40: 1.5, 50: 0.1}
CHECKPOINTS = [10, 20, 30, 40]


def test_the_lowest_loss_among_steps_with_a_checkpoint_is_chosen(tmp_path: Path) -> None:
    run = _run(tmp_path, PROBES, CHECKPOINTS)
    assert [row["step"] for row in read_monitor_rows(run)] == sorted(PROBES)
    best = best_transfer_checkpoint(run)
    assert best.step == 10  # the tie with step 30 goes to the earliest step
    assert best.checkpoint == run / TRAJECTORY_DIR / "step-0000010"
    assert best.loss == 1.2 and best.k == 2
    assert best.candidates == 4 and best.pretrained_loss == 0.5


def test_a_later_unique_minimum_wins_over_earlier_steps(tmp_path: Path) -> None:
    run = _run(tmp_path, {0: 3.0, 10: 1.5, 20: 2.5, 30: 0.9, 35: 0.2, 40: 1.1},
               [10, 20, 30, 40])
    best = best_transfer_checkpoint(run)
    assert (best.step, best.loss, best.candidates) == (30, 0.9, 4)  # 35 has no checkpoint
    assert "pre-trained" not in best.describe()  # step 0 was not lower


def test_resolve_checkpoint_turns_the_spelling_into_the_folder(tmp_path: Path) -> None:
    run = _run(tmp_path, PROBES, CHECKPOINTS)
    folder, best = resolve_checkpoint(f"best-transfer:{run}")
    assert folder == str(run / TRAJECTORY_DIR / "step-0000010") and best is not None
    assert resolve_checkpoint("itransfer:tiny-t5") == ("itransfer:tiny-t5", None)
    assert resolve_checkpoint(str(run)) == (str(run), None)


def test_a_run_without_monitor_rows_says_how_to_get_them(tmp_path: Path) -> None:
    run = _run(tmp_path, {}, CHECKPOINTS)
    with pytest.raises(DataError, match=re.escape("--set 'train.monitor={}'")) as caught:
        best_transfer_checkpoint(run)
    assert str(caught.value).startswith(str(run / LOG_FILE)) and "\n" not in str(caught.value)
    (run / LOG_FILE).unlink()  # no log at all: the same line
    with pytest.raises(DataError, match=r"train\.monitor"):
        resolve_checkpoint(f"best-transfer:{run}")


def test_no_step_with_both_lists_the_monitor_and_checkpoint_steps(tmp_path: Path) -> None:
    run = _run(tmp_path, {0: 1.0, 5: 0.8, 15: 0.9}, [10, 20])
    with pytest.raises(DataError) as caught:
        best_transfer_checkpoint(run)
    message = str(caught.value)
    assert message.startswith(str(run / TRAJECTORY_DIR)) and "\n" not in message
    assert "monitor steps: [0, 5, 15]" in message and "checkpoint steps: [10, 20]" in message


def test_the_step_zero_probe_is_no_candidate(tmp_path: Path) -> None:
    """Even with a step-0 checkpoint folder: the step-0 probe is the pre-trained model."""
    run = _run(tmp_path, {0: 0.1, 10: 1.0, 15: 0.05, 20: 0.9}, [0, 10, 20])
    best = best_transfer_checkpoint(run)
    assert (best.step, best.candidates, best.pretrained_loss) == (20, 2, 0.1)
    assert "pre-trained model (step-0 probe) measured lower, 0.1000" in best.describe()


def test_a_missing_run_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such training run folder"):
        resolve_checkpoint(f"best-transfer:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_eval_prints_the_chosen_step_and_evaluates_that_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: str
) -> None:
    """The CLI line, with the evaluation itself stood in for (no model is loaded): every
    process of a launch evaluates the chosen checkpoint, and only the main one prints it."""
    monkeypatch.setenv("RANK", rank)
    from itransfer.cli import app

    run = _run(tmp_path, PROBES, CHECKPOINTS)
    opened: list[str] = []
    session = types.SimpleNamespace(table=types.SimpleNamespace(root=tmp_path / "out"))
    fake_session = types.ModuleType("itransfer.eval.session")
    fake_session.open_session = (  # type: ignore[attr-defined]
        lambda config, checkpoint, out: opened.append(checkpoint) or session)
    fake_icl = types.ModuleType("itransfer.eval.icl")
    fake_icl.evaluate_icl = lambda session, progress, **kwargs: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "itransfer.eval.session", fake_session)
    monkeypatch.setitem(sys.modules, "itransfer.eval.icl", fake_icl)
    result = CliRunner().invoke(app, ["eval", "icl", "--checkpoint", f"best-transfer:{run}",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert opened == [str(run / TRAJECTORY_DIR / "step-0000010")]
    lines = [line for line in result.output.splitlines() if line.startswith("best-transfer")]
    if rank != "0":
        assert lines == []
        return
    line, = lines
    assert "step 10 " in line and "1.2000" in line and "of 4 candidate" in line


def test_the_readme_names_the_option() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Watching transfer while training")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + 1)
    section = text[start : end.start() if end else None]
    assert "--checkpoint best-transfer:RUN" in section and "probe tasks" in section
