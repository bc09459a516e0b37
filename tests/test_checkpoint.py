"""Checkpoint files: pickle-free optimizer state, atomic commits, damaged files named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from itransfer.runs.checkpoints import read_trajectory
from itransfer.train import checkpoint as ckpt
from itransfer.train.loop import instruction_tune
from tiny_configs import tiny_train_config


def _optimizer_after_steps() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_optimizer_state_round_trips_through_safetensors(tmp_path: Path) -> None:
    model, optimizer = _optimizer_after_steps()
    ckpt.write_optimizer(tmp_path, optimizer.state_dict())
    restored_state = ckpt.read_optimizer(tmp_path)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fresh.load_state_dict(restored_state)
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][key], value), key
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_named_optimizer_state_round_trips_and_loads_by_name(tmp_path: Path) -> None:
    model, optimizer = _optimizer_after_steps()
    state = ckpt.gather_optimizer_state(model, optimizer)
    assert "0.weight" in state["state"]  # keyed by parameter name
    ckpt.write_optimizer(tmp_path, state)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt.load_optimizer_state(model, fresh, tmp_path)
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            assert torch.equal(fresh.state_dict()["state"][index][key], value), (index, key)


def test_saving_before_the_first_step_leaves_the_optimizer_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt.write_optimizer(tmp_path, ckpt.gather_optimizer_state(model, optimizer))
    assert not optimizer.state  # no step was taken on the live optimizer
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt.load_optimizer_state(model, fresh, tmp_path)
    assert not fresh.state


def test_commit_is_atomic_and_latest_points_at_the_newest(tmp_path: Path) -> None:
    for step in (10, 20):
        staging = ckpt.begin(tmp_path, step)
        ckpt.write_state(staging, {"it_step": step})
        ckpt.commit(tmp_path, step)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000020"
    # A crash while writing step 30 leaves a staging folder, never a half checkpoint.
    staging = ckpt.begin(tmp_path, 30)
    (staging / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000020"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000010", "step-0000020"]


def test_keep_prunes_the_oldest(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        ckpt.write_state(ckpt.begin(tmp_path, step), {"it_step": step})
        ckpt.commit(tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000002", "step-0000003"]


def test_damaged_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "optimizer.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer\.safetensors: damaged"):
        ckpt.read_optimizer(tmp_path)
    (tmp_path / ckpt.STATE_FILE).write_text("{truncated")
    with pytest.raises(ckpt.CheckpointError, match="damaged checkpoint state"):
        ckpt.read_state(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="not a training checkpoint"):
        ckpt.read_state(tmp_path / "elsewhere")


def test_rng_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(5)
    ckpt.write_rank_rng(tmp_path, 0)
    expected = torch.rand(3)
    torch.manual_seed(99)
    ckpt.restore_rng_state(ckpt.read_rank_rng(tmp_path, 0))
    assert torch.equal(torch.rand(3), expected)


def test_the_trajectory_reader_reads_what_the_trainer_wrote(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_train_config(tiny_model_dir, "train.steps=6", "train.checkpoint_every=4")
    stopped = tmp_path / "stopped"
    instruction_tune(config, stopped, stop_after=5)  # a resumable checkpoint at step 5
    partial = read_trajectory(stopped)
    # The resumable checkpoint is no trajectory checkpoint; the budget is the run's, not 5.
    assert partial.steps == (4,) and partial.final_step == 4 and partial.total_steps == 6
    assert ckpt.list_checkpoints(stopped / "resume")

    result = instruction_tune(config, tmp_path / "run")
    trajectory = read_trajectory(result.out_dir)
    assert trajectory.steps == (4, 6) and trajectory.final_step == result.steps == 6
    assert trajectory.checkpoints[6] == result.final_checkpoint
    assert trajectory.total_steps == 6 and trajectory.run_dir == result.out_dir
    for step, checkpoint in trajectory.checkpoints.items():
        assert ckpt.read_state(checkpoint)["it_step"] == step
    ckpt.begin(result.out_dir / ckpt.TRAJECTORY_DIR, 8)  # a half-written checkpoint
    assert read_trajectory(result.out_dir).steps == (4, 6)


def test_a_run_without_checkpoints_has_an_empty_trajectory(tmp_path: Path) -> None:
    trajectory = read_trajectory(tmp_path / "never-trained")
    assert trajectory.steps == () and trajectory.final_step == 0
    assert trajectory.total_steps is None
