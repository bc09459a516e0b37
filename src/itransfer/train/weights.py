"""Loading checkpoint weights into a live model, safely and only into the right model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from itransfer.runs.checkpoints import CheckpointError, read_tensors


def model_fingerprint(model: torch.nn.Module, name_or_path: str) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this model."""
    config = model.config
    return {
        "name_or_path": str(name_or_path),
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


def weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors weight files of a Hugging Face model folder (sharded or not)."""
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [checkpoint / shard for shard in shards]
    single = checkpoint / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{checkpoint}: no model.safetensors (weights are only read from "
                              "safetensors files)")
    return [single]


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Copy a checkpoint's weights into ``model``; a mismatch is a :class:`CheckpointError`."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(checkpoint):
        state.update(read_tensors(path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{checkpoint}: weights do not fit this model ({exc})") from exc
    # save_pretrained drops tied copies (e.g. lm_head = shared embedding); tie_weights restores.
    really_missing = [name for name in missing if not _tied_to_a_loaded(model, name, state)]
    if really_missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: weights belong to another model (missing: {really_missing[:5]}, "
            f"unexpected: {list(unexpected)[:5]})"
        )
    model.tie_weights()


def _tied_to_a_loaded(model: torch.nn.Module, name: str, loaded: dict[str, torch.Tensor]) -> bool:
    """Whether ``name`` shares storage with a parameter the checkpoint did provide."""
    tensors = model.state_dict(keep_vars=True)
    pointer = tensors[name].data_ptr()
    return any(
        other in loaded and tensor.data_ptr() == pointer
        for other, tensor in tensors.items()
        if other != name
    )
