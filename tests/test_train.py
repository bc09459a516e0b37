"""Instruction tuning end to end on a tiny model: samplers, mixing, exact resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import write_task
from itransfer.errors import ConfigError, DataError
from itransfer.runs.checkpoints import CheckpointError
from itransfer.sampling import build_sampler
from itransfer.train import checkpoint as ckpt
from itransfer.train.loop import instruction_tune
from tiny_configs import tiny_train_config as _config


def _losses(result) -> list[float]:
    return [row["loss"] for row in result.log]


def test_loss_falls_and_outputs_are_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, "train.steps=40", "train.tensorboard=true")
    result = instruction_tune(config, tmp_path / "run")
    losses = _losses(result)
    assert len(losses) == 40 and result.steps == 40
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.3
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    assert any((run / "tensorboard").iterdir())
    assert (run / "sampling_schedule.png").stat().st_size > 1000
    state = ckpt.read_state(result.final_checkpoint)
    assert state["it_step"] == state["optimizer_step"] == 40
    assert set(result.final_task_losses) <= set(result.task_names)


@pytest.mark.parametrize(
    "sampler",
    [
        "{name: proportional}", "{name: uniform}", "{name: temperature, temperature: 2}",
        "{name: reverse_annealing, max_temperature: 1000}", "{name: dwa, window: 2}",
        "{name: examples_proportional_capped, cap: 50}", "{name: unimax}",
    ],
)
def test_every_sampler_trains(tiny_model_dir: Path, tmp_path: Path, sampler: str) -> None:
    """Batches draw their tasks by the configured P(K), and the loss falls under every sampler.

    Three tasks of very different sizes make the samplers' P(K) far apart (all but reverse
    annealing and DWA, which start out proportional), and one window of 64 batches drawn at
    step 0 gives 512 draws to compare with it.
    """
    for index, size in enumerate((30, 120, 480)):
        name = f"task{index:03d}_demo_qa"
        write_task(tmp_path / "tasks", name, Instances=[
            {"id": f"{name}-{i}", "input": f"question {i}", "output": [f"answer {i}"]}
            for i in range(size)
        ])
    config = _config(
        tiny_model_dir, "train.steps=6", f"train.sampler={sampler}",
        f"data.sni_dir={tmp_path / 'tasks'}", "data.context.name=none",
        "train.length_window_batches=64",
    )
    result = instruction_tune(config, tmp_path / "run")
    stream = ckpt.read_state(result.final_checkpoint)["stream"]
    sizes = stream["task_sizes"]
    drawn = np.zeros(len(sizes))
    for task, (passes, position) in stream["cursors"].items():
        drawn[int(task)] = passes * sizes[int(task)] + position
    assert drawn.sum() == 64 * 8
    p_k = build_sampler(yaml.safe_load(sampler), sizes, total_steps=6, batch_size=8).weights(0)
    assert stats.chisquare(drawn, p_k * drawn.sum()).pvalue > 1e-3, (drawn, p_k)
    losses = _losses(result)
    assert len(losses) == 6 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3


def test_mixing_adds_unsupervised_steps_without_changing_it_steps(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = instruction_tune(
        _config(tiny_model_dir, "train.steps=9", "train.mixing.every=3"), tmp_path / "run"
    )
    assert result.steps == 9
    mixed = [row["step"] for row in result.log if "unsupervised_loss" in row]
    assert mixed == [3, 6, 9]
    state = ckpt.read_state(result.final_checkpoint)
    assert (state["it_step"], state["optimizer_step"]) == (9, 12)
    assert state["unsupervised"]["documents_read"] >= 3 * 8


def test_resume_matches_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    overrides = ("train.steps=12", "train.mixing.every=3", "train.sampler={name: dwa, window: 2}")
    straight = instruction_tune(_config(tiny_model_dir, *overrides), tmp_path / "straight")
    config = _config(tiny_model_dir, *overrides)
    first = instruction_tune(config, tmp_path / "resumed", stop_after=5)
    assert first.steps == 5
    resumed = instruction_tune(config, tmp_path / "resumed", resume=True)
    assert [row["step"] for row in resumed.log] == list(range(1, 13))
    for expected, got in zip(straight.log, resumed.log, strict=True):
        assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6), got["step"]
        if "unsupervised_loss" in expected:
            expected_mixed = expected["unsupervised_loss"]
            assert got["unsupervised_loss"] == pytest.approx(expected_mixed, abs=1e-6)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_ctrl_c_sigterm_and_sigusr1_save_a_resumable_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, signum: int
) -> None:
    """A scheduler's SIGTERM or SIGUSR1, like Ctrl-C, ends the run at a step boundary with a
    resumable checkpoint (the step in flight when the request is seen: every process must agree
    on it)."""
    config = _config(tiny_model_dir, "train.steps=8", "train.checkpoint_every=100")
    before = signal.getsignal(signum)

    def signal_at_three(step: int, total: int, row: dict) -> None:
        if step == 3:
            os.kill(os.getpid(), signum)

    with pytest.raises(KeyboardInterrupt, match=rf"{signal.Signals(signum).name}: stopped at "
                                                r"step 4 and saved a resumable checkpoint") as info:
        instruction_tune(config, tmp_path / "run", progress=signal_at_three)
    assert getattr(info.value, "signal_number", None) == signum
    assert signal.getsignal(signum) == before  # the handlers are put back
    latest = ckpt.latest_checkpoint(tmp_path / "run" / "resume")
    assert latest is not None and ckpt.read_state(latest)["it_step"] == 4
    assert ckpt.is_resumable(latest)
    resumed = instruction_tune(config, tmp_path / "run", resume=True)
    assert resumed.steps == 8 and [row["step"] for row in resumed.log] == list(range(1, 9))


def test_existing_run_needs_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, "train.steps=2")
    instruction_tune(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="pass --resume"):
        instruction_tune(config, tmp_path / "run")


def test_checkpoint_of_another_model_or_config_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    instruction_tune(_config(tiny_model_dir, "train.steps=6"), tmp_path / "run", stop_after=2)
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other_model)
    before = sorted(p.name for p in (tmp_path / "run" / "resume").iterdir())
    with pytest.raises(CheckpointError, match="belongs to another model"):
        instruction_tune(_config(other_model, "train.steps=6"), tmp_path / "run", resume=True)
    with pytest.raises(CheckpointError, match=r"train\.learning_rate differ"):
        instruction_tune(
            _config(tiny_model_dir, "train.steps=6", "train.learning_rate=1e-3"),
            tmp_path / "run", resume=True,
        )
    assert sorted(p.name for p in (tmp_path / "run" / "resume").iterdir()) == before


def test_corrupted_checkpoint_is_named_and_left_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, "train.steps=6")
    result = instruction_tune(config, tmp_path / "run", stop_after=2)
    weights = result.final_checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        instruction_tune(config, tmp_path / "run", resume=True)
    assert weights.stat().st_size == 100  # nothing was overwritten


def test_empty_corpus_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n")
    config = _config(
        tiny_model_dir, "train.steps=4", "train.mixing.every=2", f"train.mixing.source={corpus}"
    )
    with pytest.raises(DataError, match="empty"):
        instruction_tune(config, tmp_path / "run")


def test_log_file_matches_the_result(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = instruction_tune(_config(tiny_model_dir, "train.steps=3"), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert rows == result.log


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_sigterm_or_sigusr1_to_itransfer_train_exits_128_plus_it_with_a_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, signum: int, status: int
) -> None:
    """What a cluster scheduler does before preempting or at the time limit: SIGTERM (or
    SLURM's --signal=USR1@120), a grace period, SIGKILL."""
    out = tmp_path / "run"
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.max_source_length=96",
                 "model.max_target_length=32", "train.batch_size=8", "train.steps=2000",
                 "train.checkpoint_every=100000", "train.log_every=1", "train.tensorboard=false"]
    command = [sys.executable, "-m", "itransfer", "train", "--out", str(out),
               *(part for override in overrides for part in ("--set", override))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert f"{signal.Signals(signum).name}: stopped at step" in stderr
    assert "resume with --resume" in stderr
    latest = ckpt.latest_checkpoint(out / "resume")
    assert latest is not None and ckpt.is_resumable(latest)
    step = ckpt.read_state(latest)["it_step"]
    assert 3 <= step < 2000 and step == len(log.read_text().splitlines())
