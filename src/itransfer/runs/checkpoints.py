"""The checkpoint folder of a training run, as training writes it and evaluation reads it.

A run folder holds its **trajectory** in ``checkpoints/``: a checkpoint every
``checkpoint_every`` steps and the final one, each a folder ``step-0000050/`` that is a loadable
Hugging Face model directory (``model.safetensors``, tokenizer) plus ``trainer_state.json``
(step counters and what else the trainer resumes from), and a ``latest`` file naming the newest.
Training writes them (:mod:`itransfer.train.checkpoint`, with its resumable checkpoints);
evaluation and the pipeline read them here, and so never import the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from itransfer.errors import ITransferError

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
TRAJECTORY_DIR = "checkpoints"


class CheckpointError(ITransferError):
    """A checkpoint is missing, damaged, or belongs to another run/model."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint folder was written at, from its name."""
    return int(checkpoint.name.removeprefix("step-"))


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders are not checkpoints)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [
        path
        for path in checkpoints_dir.iterdir()
        if path.is_dir() and path.name.startswith("step-") and not path.name.endswith(".tmp")
    ]
    return sorted(found, key=lambda path: path.name)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    pointer = checkpoints_dir / LATEST_FILE
    if pointer.is_file():
        candidate = checkpoints_dir / pointer.read_text(encoding="utf-8").strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    complete = [path for path in list_checkpoints(checkpoints_dir) if (path / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{checkpoint}: not a training checkpoint (no {STATE_FILE})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint state ({exc})") from exc


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing from the checkpoint") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint file ({exc})") from exc


@dataclass(frozen=True)
class Trajectory:
    """What a training run saved for evaluation: its trajectory checkpoints, by step."""

    run_dir: Path
    checkpoints: Mapping[int, Path]  # step -> checkpoint folder, oldest first
    # The run's step budget as its newest checkpoint recorded it; None before any was saved.
    total_steps: int | None = None

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(sorted(self.checkpoints))

    @property
    def final_step(self) -> int:
        """The newest checkpoint's step, 0 for a run that saved none."""
        return max(self.checkpoints, default=0)


def read_trajectory(run_dir: Path) -> Trajectory:
    """The trajectory of the training run in ``run_dir`` (an ``instruction_tune`` out_dir),
    read from its ``checkpoints/`` folder: the one place outside the trainer that knows how
    the trainer lays its checkpoints out."""
    found = {checkpoint_step(path): path for path in list_checkpoints(run_dir / TRAJECTORY_DIR)}
    total = int(read_state(found[max(found)])["total_it_steps"]) if found else None
    return Trajectory(run_dir=run_dir, checkpoints=found, total_steps=total)
