"""Resumable checkpoints apart from the trajectory: exact resume from between two trajectory
checkpoints, the time trigger (an injected clock), keeping two, old runs, damaged files and a
full disk."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from itransfer.cli import main
from itransfer.errors import ConfigError
from itransfer.runs.checkpoints import CheckpointError
from itransfer.train import checkpoint as ckpt
from itransfer.train.loop import instruction_tune
from itransfer.train.resumable import CheckpointDiskUsage, ResumableSchedule
from tiny_configs import tiny_train_config as _config

STRAIGHT = ("train.steps=8", "train.checkpoint_every=3", "train.mixing.every=3",
            "train.sampler={name: dwa, window: 2}", "train.save_every_minutes=null")


def _names(folder: Path) -> list[str]:
    return [path.name for path in ckpt.list_checkpoints(folder)]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    first, second = _weights(a), _weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uninterrupted run the interrupted ones are compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return instruction_tune(_config(tiny_model_dir, *STRAIGHT), out)


def test_the_trajectory_keeps_weights_only_and_a_finished_run_drops_its_resume_folder(
    straight_run: Any,
) -> None:
    run = straight_run.out_dir
    assert _names(run / "checkpoints") == ["step-0000003", "step-0000006", "step-0000008"]
    for checkpoint in ckpt.list_checkpoints(run / "checkpoints"):
        files = {path.name for path in checkpoint.iterdir()}
        assert "model.safetensors" in files and ckpt.STATE_FILE in files
        assert not files & {"optimizer.safetensors", "optimizer.json", "rng-rank0.safetensors"}
    assert not (run / "resume").exists()


def test_resume_from_between_two_trajectory_checkpoints_is_bit_exact(
    tiny_model_dir: Path, tmp_path: Path, straight_run: Any
) -> None:
    """A crash during step 7 (the resumable checkpoint is at 4, the trajectory at 3 and 6):
    --resume continues from step 4, replays 5 and 6 exactly (rewriting trajectory step 6 as it
    was) and ends where the unbroken run ends, bit for bit."""
    config = _config(tiny_model_dir, *STRAIGHT, "train.save_every_steps=4")
    run = tmp_path / "run"

    def crash_at_seven(step: int, total: int, row: dict) -> None:
        if step == 7:
            raise RuntimeError("node lost")  # as kill -9: nothing more is saved

    with pytest.raises(RuntimeError, match="node lost"):
        instruction_tune(config, run, progress=crash_at_seven)
    assert _names(run / "resume") == ["step-0000004"]
    assert _names(run / "checkpoints") == ["step-0000003", "step-0000006"]
    assert ckpt.resume_checkpoint(run) == run / "resume" / "step-0000004"

    resumed = instruction_tune(config, run, resume=True)
    assert [row["step"] for row in resumed.log] == list(range(1, 9))
    assert [row["loss"] for row in resumed.log] == [row["loss"] for row in straight_run.log]
    for step in ("step-0000003", "step-0000006", "step-0000008"):
        assert _same_weights(run / "checkpoints" / step,
                             straight_run.out_dir / "checkpoints" / step), step
    assert not (run / "resume").exists()

    # Resuming the finished run takes no step: its final checkpoint needs no optimizer state.
    again = instruction_tune(config, run, resume=True)
    assert again.steps == 8 and again.final_checkpoint == run / "checkpoints" / "step-0000008"


def test_a_crash_before_the_first_resumable_checkpoint_replays_from_step_zero(
    tiny_model_dir: Path, tmp_path: Path, straight_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash during step 7 with trajectory checkpoints at 3 and 6 and no resumable one (the
    default 30 minutes had not passed): --resume starts again from step 0, says so in one line,
    rewrites 3 and 6 as they were and ends where the unbroken run ends, bit for bit."""
    config = _config(tiny_model_dir, *STRAIGHT)
    run = tmp_path / "run"

    def crash_at_seven(step: int, total: int, row: dict) -> None:
        if step == 7:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        instruction_tune(config, run, progress=crash_at_seven)
    assert not (run / "resume").exists()
    assert _names(run / "checkpoints") == ["step-0000003", "step-0000006"]
    assert ckpt.resume_checkpoint(run) is None
    written = {step: (run / "checkpoints" / step / "model.safetensors").read_bytes()
               for step in ("step-0000003", "step-0000006")}

    with caplog.at_level(logging.WARNING, logger="itransfer"):
        resumed = instruction_tune(config, run, resume=True)
    assert [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "checkpoint" in r.getMessage()] == [
        f"{run} has no resumable checkpoint (trajectory checkpoints hold weights only): "
        "restarting from step 0; the replay rewrites them identically up to step 6"]
    assert [row["step"] for row in resumed.log] == list(range(1, 9))
    assert [row["loss"] for row in resumed.log] == [row["loss"] for row in straight_run.log]
    for step, content in written.items():
        assert (run / "checkpoints" / step / "model.safetensors").read_bytes() == content
    for step in ("step-0000003", "step-0000006", "step-0000008"):
        assert _same_weights(run / "checkpoints" / step,
                             straight_run.out_dir / "checkpoints" / step), step
    # Without --resume the same folder is refused, naming the flag that continues it.
    with pytest.raises(ConfigError, match="pass --resume to continue"):
        instruction_tune(config, run)


def test_resume_does_not_replay_over_another_configs_trajectory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    def crash_at_four(step: int, total: int, row: dict) -> None:
        if step == 4:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        instruction_tune(_config(tiny_model_dir, *STRAIGHT), run, progress=crash_at_four)
    before = (run / "checkpoints" / "step-0000003" / "model.safetensors").read_bytes()
    other = _config(tiny_model_dir, *STRAIGHT, "train.learning_rate=1e-2")
    with pytest.raises(CheckpointError, match=r"different config \(train.learning_rate"):
        instruction_tune(other, run, resume=True)
    assert (run / "checkpoints" / "step-0000003" / "model.safetensors").read_bytes() == before


def test_a_run_from_before_resumable_checkpoints_still_resumes(
    tiny_model_dir: Path, tmp_path: Path, straight_run: Any
) -> None:
    """Older runs kept the optimizer state in their trajectory checkpoints."""
    config = _config(tiny_model_dir, *STRAIGHT)
    run = tmp_path / "run"
    instruction_tune(config, run, stop_after=5)
    # Make it look like an old run: the step-5 checkpoint with its optimizer in the trajectory.
    (run / "resume" / "step-0000005").rename(run / "checkpoints" / "step-0000005")
    shutil.rmtree(run / "resume")
    (run / "checkpoints" / ckpt.LATEST_FILE).write_text("step-0000005\n")
    assert ckpt.resume_checkpoint(run) == run / "checkpoints" / "step-0000005"
    resumed = instruction_tune(config, run, resume=True)
    assert [row["loss"] for row in resumed.log] == [row["loss"] for row in straight_run.log]
    assert _same_weights(resumed.final_checkpoint,
                         straight_run.out_dir / "checkpoints" / "step-0000008")


def test_the_clock_triggers_resumable_checkpoints_and_two_are_kept(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 5 minutes on a clock that moves a minute per step. The main process reads it before
    a step and the answer travels with that step's reduction, so a checkpoint due after step 5
    is written after step 6; the next 5 minutes count from there."""
    config = _config(tiny_model_dir, "train.steps=20", "train.save_every_minutes=5")
    run = tmp_path / "run"
    now = {"seconds": 0.0}
    listed: dict[int, list[int]] = {}

    def one_minute_a_step(step: int, total: int, row: dict) -> None:
        now["seconds"] = 60.0 * step
        listed[step] = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run / "resume")]

    on_disk_when_writing: dict[int, list[int]] = {}
    real_begin = ckpt.begin

    def recording_begin(directory: Path, step: int) -> Path:
        on_disk_when_writing[step] = [ckpt.checkpoint_step(p)
                                      for p in ckpt.list_checkpoints(directory)]
        return real_begin(directory, step)

    monkeypatch.setattr(ckpt, "begin", recording_begin)
    instruction_tune(config, run, progress=one_minute_a_step, stop_after=19,
                     clock=lambda: now["seconds"])
    # The older of two goes before the next is written: never more than two on disk.
    assert on_disk_when_writing == {6: [], 12: [6], 18: [12], 19: [18]}
    # What was on disk as each step ended (before that step's own save).
    assert listed[6] == [] and listed[7] == [6]
    assert listed[12] == [6] and listed[13] == [6, 12]
    assert listed[18] == [6, 12] and listed[19] == [12, 18]
    assert _names(run / "resume") == ["step-0000018", "step-0000019"]  # the stop's, and one


def test_the_schedule_fires_by_steps_and_by_minutes() -> None:
    now = [100.0]
    schedule = ResumableSchedule(every_steps=50, every_minutes=30, clock=lambda: now[0])
    schedule.restart()
    assert not schedule.time_is_up()
    now[0] += 30 * 60 - 1
    assert not schedule.time_is_up()
    now[0] += 1
    assert schedule.time_is_up()
    schedule.restart()
    assert not schedule.time_is_up()
    assert [step for step in range(1, 151) if schedule.step_is_due(step)] == [50, 100, 150]
    never = ResumableSchedule(clock=lambda: now[0])
    now[0] += 1e9
    assert not never.time_is_up() and not never.step_is_due(100)


def test_disk_usage_of_a_t5_large_sized_run() -> None:
    usage = CheckpointDiskUsage(num_parameters=737_668_096, trajectory_checkpoints=6)
    assert usage.weights == 4 * 737_668_096
    assert usage.optimizer == 2 * usage.weights
    assert round(usage.weights / 1e9, 1) == 3.0 and round(usage.resumable / 1e9, 1) == 8.9
    assert round(usage.trajectory / 1e9, 1) == 17.7
    assert round(usage.trajectory_with_optimizer / 1e9, 1) == 53.1
    assert usage.peak_while_training == usage.trajectory + 2 * usage.resumable
    assert "6 x 3.0 GB = 17.7 GB" in "\n".join(usage.lines())


# --- bad inputs ---------------------------------------------------------------------------


def _one_line_error(stderr: str) -> str:
    """The error line the CLI printed (after any progress bar), with no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def stopped_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after step 2 of 4: one resumable checkpoint, no trajectory yet."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    instruction_tune(_config(tiny_model_dir, "train.steps=4"), out, stop_after=2)
    return out


TINY = ["model.max_source_length=96", "model.max_target_length=32", "train.batch_size=8",
        "train.warmup_steps=2", "train.learning_rate=3e-3", "train.log_every=1",
        "train.tensorboard=false", "train.length_window_batches=4", "train.steps=4"]


@pytest.mark.parametrize("damaged", [
    "model.safetensors", "optimizer.safetensors", "optimizer.json", ckpt.STATE_FILE,
    "rng-rank0.safetensors",
])
def test_a_damaged_file_of_the_resumable_checkpoint_is_one_line_naming_it(
    damaged: str, tiny_model_dir: Path, stopped_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    path = run / "resume" / "step-0000002" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(run), "--resume",
              *(part for value in [f"model.name_or_path={tiny_model_dir}", *TINY]
                for part in ("--set", value))])
    assert info.value.code == 2
    error = _one_line_error(capsys.readouterr().err)
    assert str(path) in error
    assert path.stat().st_size < (stopped_run / "resume" / "step-0000002" / damaged).stat().st_size


@pytest.mark.parametrize("damaged", ["model.safetensors", ckpt.STATE_FILE])
def test_evaluating_a_damaged_checkpoint_is_one_line_naming_it(
    damaged: str, tiny_model_dir: Path, stopped_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = tmp_path / "step-0000002"
    shutil.copytree(stopped_run / "resume" / "step-0000002", checkpoint)
    path = checkpoint / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SystemExit) as info:
        main(["eval", "icl", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"),
              "--set", "eval.max_tasks=1"])
    assert info.value.code == 2
    assert str(checkpoint) in _one_line_error(capsys.readouterr().err)


def test_a_full_disk_during_a_checkpoint_leaves_the_previous_one_resumable(
    tiny_model_dir: Path, stopped_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    real_write = ckpt.write_optimizer

    def disk_fills_up(staging: Path, state: Any) -> None:
        target = staging / ckpt.OPTIMIZER_FILE
        target.write_bytes(b"\0" * 1000)  # part of it got written
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(ckpt, "write_optimizer", disk_fills_up)
    args = ["train", "--out", str(run), "--resume",
            *(part for value in [f"model.name_or_path={tiny_model_dir}", *TINY]
              for part in ("--set", value))]
    with pytest.raises(CheckpointError) as info:
        instruction_tune(_config(tiny_model_dir, "train.steps=4"), run, resume=True,
                         stop_after=3)
    target = run / "resume" / "step-0000003.tmp" / ckpt.OPTIMIZER_FILE
    assert str(info.value).startswith(f"{target}: cannot write the checkpoint (No space left")
    assert "the previous checkpoint" in str(info.value) and "step-0000002 is intact" in str(
        info.value)
    assert _names(run / "resume") == ["step-0000002"]
    assert sorted(path.name for path in (run / "resume").iterdir()) == [
        ckpt.LATEST_FILE, "step-0000002"]  # the staging folder is gone
    # On the command line: one line, exit 2.
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--set", "train.save_every_steps=3"])
    assert exit_info.value.code == 2
    assert "No space left on device" in _one_line_error(capsys.readouterr().err)
    # With room again, the run resumes from step 2 and finishes.
    monkeypatch.setattr(ckpt, "write_optimizer", real_write)
    finished = instruction_tune(_config(tiny_model_dir, "train.steps=4"), run, resume=True)
    assert [row["step"] for row in finished.log] == [1, 2, 3, 4]
