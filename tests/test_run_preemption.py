"""`itransfer run` under preemption: SIGTERM/SIGUSR1 stop it where nothing is lost, it exits
with 128 + the signal, and running the same command again finishes with the rows an
uninterrupted run writes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from itransfer.cli import main
from itransfer.errors import StoppedBySignal
from itransfer.eval.results import ResultsTable
from itransfer.experiments.definition import load_experiment
from itransfer.experiments.pipeline import SilentReporter, run_experiment
from itransfer.train import checkpoint as ckpt

TINY = {
    "model": {"max_source_length": 64, "max_target_length": 12},
    "data": {"splits": {"unseen_test_size": 4}},
    "train": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "log_every": 1,
              "tensorboard": False},
    "eval": {"max_tasks": 2, "shots": [0, 5], "transfer_contexts": ["none"],
             "max_new_tokens": 4, "batch_size": 8, "engine": "peft",
             "lora": {"epochs": 1, "batch_size": 8}},
}


def _experiment_file(tmp_path: Path, model_dir: Path) -> Path:
    spec = {
        "name": "preemption-test",
        "base": {**TINY, "model": {**TINY["model"], "name_or_path": str(model_dir)}},
        "variants": {"it": {}},
        "sections": {"transfer": {"instruction_tuned": "it"}},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _exit_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def _rows(run: Path) -> pd.DataFrame:
    # The cell and settings hash of a trained model name its checkpoint's path (another --out).
    frame = ResultsTable(run).read().drop(columns=["written_at", "cell", "config_hash"])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


class SignalAtStep(SilentReporter):
    """Sends ``signum`` to this process when a training stage reports step ``step``."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def progress(self, name: str, done: float, total: int, info: dict[str, Any]) -> None:
        if name.startswith("train:") and done == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigusr1_in_a_training_stage_stops_it_with_a_resumable_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(StoppedBySignal, match=r"SIGUSR1: stopped during train:it after a step, "
                                              r"with a resumable checkpoint; run the same") as info:
        run_experiment(experiment, tmp_path / "run", write_report=False,
                       reporter=SignalAtStep(signal.SIGUSR1, 2))
    assert info.value.signal_number == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before
    (stage,) = (tmp_path / "run" / "stages").glob("train-*")
    latest = ckpt.resume_checkpoint(stage)
    assert latest is not None and ckpt.is_resumable(latest)
    assert ckpt.read_state(latest)["it_step"] == 3  # the step in flight when the request came
    assert not (tmp_path / "run" / "results").exists()  # no evaluation started


@pytest.mark.slow
def test_sigterm_during_an_eval_stage_exits_143_and_a_rerun_writes_the_same_rows(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _experiment_file(tmp_path, tiny_model_dir)
    assert _exit_status(["run", str(config), "--out", str(tmp_path / "whole")]) == 0
    expected = _rows(tmp_path / "whole")

    # The scheduler's SIGTERM arrives while the first evaluation stage writes its first rows.
    real_append = ResultsTable.append
    appended: list[Path] = []

    def append_then_sigterm(self: ResultsTable, rows: Any) -> Path | None:
        written = real_append(self, rows)
        if written is not None and "eval-" in str(written) and not appended:
            appended.append(written)
            os.kill(os.getpid(), signal.SIGTERM)
        return written

    monkeypatch.setattr(ResultsTable, "append", append_then_sigterm)
    run = tmp_path / "run"
    capsys.readouterr()
    assert _exit_status(["run", str(config), "--out", str(run)]) == 143
    stderr = capsys.readouterr().err
    assert "SIGTERM: stopped during eval:it@6 after writing its finished rows" in stderr
    (stage,) = [path for path in (run / "stages").glob("eval-*") if (path / "results").exists()]
    assert not (stage / "stage.json").exists()  # the stage is not finished
    assert len(list((stage / "results").glob("part-*.parquet"))) == 1  # the rows it wrote stay
    assert not (run / "manifest.json").exists()

    monkeypatch.setattr(ResultsTable, "append", real_append)
    assert _exit_status(["run", str(config), "--out", str(run)]) == 0
    assert appended[0].is_file()  # kept and reused, not measured again
    pd.testing.assert_frame_equal(_rows(run), expected)
