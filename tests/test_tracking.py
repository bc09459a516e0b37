"""Training metrics reach W&B (a stand-in module here) and a resumed run continues its W&B run."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from itransfer.config.schema import load_config
from itransfer.errors import ConfigError
from itransfer.train.loop import instruction_tune


class _FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init = kwargs
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.finished = False

    def log(self, data: dict[str, Any], step: int) -> None:
        self.logged.append((step, data))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture()
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[_FakeRun]:
    runs: list[_FakeRun] = []
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(_FakeRun(**kwargs)) or runs[-1]  # type: ignore[attr-defined]
    module.Histogram = lambda values: ("histogram", len(values))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def _config(model_dir: Path, *overrides: str):
    return load_config(None, [
        f"model.name_or_path={model_dir}", "model.max_source_length=64",
        "model.max_target_length=16", "train.batch_size=4", "train.warmup_steps=1",
        "train.log_every=2", "train.tensorboard=false", "train.wandb_project=itransfer-test",
        *overrides,
    ])


def test_wandb_gets_the_logged_rows_and_resume_keeps_the_run(
    tiny_model_dir: Path, tmp_path: Path, fake_wandb: list[_FakeRun]
) -> None:
    out = tmp_path / "run"
    first = instruction_tune(_config(tiny_model_dir, "train.steps=6"), out, stop_after=4)
    assert len(fake_wandb) == 1 and fake_wandb[0].finished
    run = fake_wandb[0]
    assert run.init["project"] == "itransfer-test" and run.init["resume"] == "allow"
    assert run.init["config"]["train"]["steps"] == 6  # the resolved config
    assert [step for step, _ in run.logged] == [2, 4]
    logged_losses = [data["train/loss"] for _, data in run.logged]
    assert logged_losses == [row["loss"] for row in first.log if row["step"] in (2, 4)]
    assert any(key.startswith("task_loss/") for key in run.logged[-1][1])
    assert 1.0 <= run.logged[-1][1]["sampling/effective_num_tasks"] <= len(first.task_names)
    # Resuming continues the same W&B run from the next logged step.
    instruction_tune(_config(tiny_model_dir, "train.steps=6"), out, resume=True)
    assert fake_wandb[1].init["id"] == run.init["id"]
    assert [step for step, _ in fake_wandb[1].logged] == [6]


def test_wandb_project_without_wandb_is_a_config_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"train\.wandb_project"):
        instruction_tune(_config(tiny_model_dir, "train.steps=2"), tmp_path / "run")
