"""Two CPU processes under ``accelerate launch``: the loss falls, ranks agree, and the
checkpoint loads in a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from itransfer.models import load_model_and_tokenizer

SCRIPT = Path(__file__).with_name("distributed_train.py")
RESUME_SCRIPT = Path(__file__).with_name("distributed_resume.py")


def _launch(script: Path, port: int, *args: str) -> None:
    launcher = Path(sys.executable).with_name("accelerate")
    command = [
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(script), *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    launcher = Path(sys.executable).with_name("accelerate")
    command = [
        # On a CPU-only machine `--multi_gpu` makes accelerate start torchrun, and the processes
        # join a gloo group; accelerate's `--cpu` with several processes needs mpirun instead.
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        str(SCRIPT), str(tiny_model_dir), str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(rank["world_size"] == 2 for rank in ranks)
    # Per-task losses are all-reduced, so both ranks hold the same numbers.
    assert ranks[0]["final_task_losses"] == ranks[1]["final_task_losses"]
    assert ranks[0]["final_task_losses"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    losses = ranks[0]["losses"]
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6 - 0.2

    loaded = load_model_and_tokenizer(ranks[0]["final_checkpoint"])
    assert loaded.architecture == "seq2seq"
    ids = loaded.tokenizer("input: hello", return_tensors="pt").input_ids
    assert loaded.model.generate(ids, max_new_tokens=3).shape[0] == 1


@pytest.mark.slow
def test_two_process_resume_is_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Without an accelerator from the caller (as `itransfer train`), two launched CPU
    processes form one run; stopped at step 4 and resumed, it logs the uninterrupted losses.
    The optimizer state goes through torch.distributed.checkpoint (the FSDP-safe path)."""
    model = str(tiny_model_dir)
    _launch(RESUME_SCRIPT, 29534, model, str(tmp_path / "whole" / "run"), "whole")
    _launch(RESUME_SCRIPT, 29535, model, str(tmp_path / "split" / "run"), "first", "4")
    _launch(RESUME_SCRIPT, 29536, model, str(tmp_path / "split" / "run"), "resumed")
    whole = json.loads((tmp_path / "whole" / "losses-whole.json").read_text())
    first = json.loads((tmp_path / "split" / "losses-first.json").read_text())
    resumed = json.loads((tmp_path / "split" / "losses-resumed.json").read_text())
    assert whole["world_size"] == "2" and len(whole["losses"]) == 8
    assert first["losses"] == pytest.approx(whole["losses"][:4], abs=1e-6)
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=1e-6)
    state = json.loads((tmp_path / "split" / "run" / "checkpoints" / "step-0000008" /
                        "trainer_state.json").read_text())
    assert state["world_size"] == 2
