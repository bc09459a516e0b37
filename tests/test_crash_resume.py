"""A real ``itransfer train`` / ``itransfer run`` killed with SIGKILL (no handler runs, as when a
node is lost) at several moments, then continued: ``--resume`` (train) or the same command (run)
ends with the weights, logged losses and result rows of an uninterrupted run.

The moments: before the run folder exists, during the first steps (no checkpoint yet), after
weights-only trajectory checkpoints (no resumable one: ``save_every_minutes`` has not passed)
and after a resumable checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from itransfer.eval.results import ResultsTable

pytestmark = pytest.mark.slow

STEPS, EVERY = 30, 10
TRAIN_SETTINGS = [
    "model.max_source_length=128", "model.max_target_length=32", f"train.steps={STEPS}",
    "train.batch_size=8", "train.warmup_steps=5", f"train.checkpoint_every={EVERY}",
    "train.log_every=1", "train.tensorboard=false",
]


def _train(out: Path, *extra: str) -> list[str]:
    settings = [part for setting in TRAIN_SETTINGS for part in ("--set", setting)]
    return [sys.executable, "-m", "itransfer", "train", "--out", str(out), *settings, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _kill_when(command: list[str], moment: Callable[[], bool], timeout: float = 120) -> None:
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not moment():
            assert process.poll() is None, "the run ended before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _log_rows(run: Path) -> list[dict]:
    log = run / "train_log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _steps_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("step-*")
                  if (path / "trainer_state.json").is_file()) if folder.is_dir() else []


def _finished(run: Path) -> tuple[bytes, list[tuple[int, float]]]:
    weights = (run / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors").read_bytes()
    return weights, [(row["step"], row["loss"]) for row in _log_rows(run)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list]:
    run = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_train(run), env=_env(), check=True, capture_output=True)
    return _finished(run)


MOMENTS: dict[str, tuple[tuple[str, ...], Callable[[Path], bool], Callable[[Path], bool]]] = {
    # name: (extra settings, when to kill, what must hold at the kill)
    "before_the_run_folder": ((), lambda run: True, lambda run: not (run / "run.json").exists()),
    "first_steps": ((), lambda run: len(_log_rows(run)) >= 2,
                    lambda run: not _steps_in(run / "checkpoints")),
    "after_trajectory_checkpoints": (
        (), lambda run: len(_steps_in(run / "checkpoints")) >= 2,
        lambda run: not (run / "resume").exists()),
    "after_a_resumable_checkpoint": (
        ("--set", "train.save_every_steps=12"),
        lambda run: bool(_steps_in(run / "resume")), lambda run: True),
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_train_killed_at_any_moment_resumes_to_the_uninterrupted_result(
    moment: str, tmp_path: Path, uninterrupted: tuple[bytes, list]
) -> None:
    extra, kill_when, held = MOMENTS[moment]
    run = tmp_path / "run"
    _kill_when(_train(run, *extra), lambda: kill_when(run))
    assert held(run), f"killed too late for '{moment}'"
    assert not (run / "checkpoints" / f"step-{STEPS:07d}").exists()
    resumed = subprocess.run(_train(run, *extra, "--resume"), env=_env(), capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights, losses = _finished(run)
    assert losses == uninterrupted[1]
    assert weights == uninterrupted[0]


def _experiment(tmp_path: Path) -> Path:
    spec = {
        "name": "crash-test",
        "base": {
            "model": {"max_source_length": 128, "max_target_length": 32},
            "data": {"splits": {"unseen_test_size": 4}},
            "train": {"steps": STEPS, "batch_size": 8, "warmup_steps": 5,
                      "checkpoint_every": EVERY, "log_every": 1, "tensorboard": False},
            "eval": {"max_tasks": 2, "shots": [0, 5], "transfer_contexts": ["none"],
                     "max_new_tokens": 4, "batch_size": 8, "engine": "peft",
                     "lora": {"epochs": 1, "batch_size": 8}},
        },
        "variants": {"it": {}},
        "sections": {"transfer": {"instruction_tuned": "it"}},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _rows(run: Path) -> pd.DataFrame:
    frame = ResultsTable(run).read().drop(columns=["written_at", "cell", "config_hash"])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_run_killed_in_a_training_stage_continues_to_the_uninterrupted_rows(
    tmp_path: Path
) -> None:
    experiment = _experiment(tmp_path)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "itransfer", "run", str(experiment), "--out", str(out)]

    subprocess.run(command(tmp_path / "straight"), env=_env(), check=True, capture_output=True)
    run = tmp_path / "run"

    def trajectory_written() -> bool:
        return any(len(_steps_in(stage / "checkpoints")) >= 1
                   for stage in (run / "stages").glob("train-*"))

    _kill_when(command(run), trajectory_written)
    assert not list((run / "stages").glob("train-*/resume/step-*"))
    again = subprocess.run(command(run), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    pd.testing.assert_frame_equal(_rows(run), _rows(tmp_path / "straight"))
