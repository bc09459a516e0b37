"""Training checkpoints that resume exactly and never corrupt the previous one.

A run folder holds two kinds, each a folder ``step-0000050/``:

* the **trajectory**, ``checkpoints/``: every ``checkpoint_every`` steps and the final one, what
  evaluation reads. Each is a loadable Hugging Face model directory (``model.safetensors``,
  tokenizer) plus ``trainer_state.json``: step counters, scheduler, sampler, batch-stream and
  corpus positions, numpy generator states, and the fingerprint of the model it belongs to.
  No optimizer state: at T5-large size that would be 2/3 of every checkpoint.
* the **resumable** checkpoints, ``resume/``: the same, plus ``optimizer.safetensors`` +
  ``optimizer.json`` (AdamW's tensors flattened by parameter name, and its hyper-parameters; no
  pickle, so loading a checkpoint cannot execute code) and ``rng-rank<r>.safetensors`` (each
  process's torch RNG states: dropout must replay exactly). Written on a schedule and when a
  signal stops the run; only the newest :data:`RESUMABLE_KEPT` are kept, and a finished run
  drops them. Runs from before this split kept the optimizer in every trajectory checkpoint,
  which therefore still resume.

Each is written into ``step-0000050.tmp`` and renamed into place only when complete, and the
``latest`` pointer file is replaced atomically afterwards; a crash, or a full disk, at any
moment leaves the previous checkpoint and pointer intact.

The folder's names and its readers, which evaluation shares, are in
:mod:`itransfer.runs.checkpoints`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from itransfer.runs.checkpoints import (
    LATEST_FILE,
    STATE_FILE,
    TRAJECTORY_DIR,
    CheckpointError,
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    read_state,
    read_tensors,
)
from itransfer.runtime.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.safetensors"
RESUME_DIR = "resume"
# Two after each commit; the older goes before the next one is written, so that at most two
# (one of them being written) are on disk, and a complete one always is.
RESUMABLE_KEPT = 2


def is_resumable(checkpoint: Path) -> bool:
    """Whether a checkpoint holds the optimizer state a run continues from."""
    return (checkpoint / OPTIMIZER_FILE).is_file()


def _param_key(text: str) -> int | str:
    # Parameter names (``get_optimizer_state_dict``); checkpoints before them used indices.
    return int(text) if text.isdigit() else text


def gather_optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter name, on CPU.

    Through ``torch.distributed.checkpoint``, so a sharded (FSDP) optimizer is gathered: under
    several processes every rank must call it. Names rather than indices also let a
    checkpoint load into a model wrapped differently.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    inner = _unwrapped_optimizer(optimizer)
    if not inner.state:
        # Before the first step (e.g. fp16 skipping overflowing steps) torch initialises the
        # state with a zero-lr step on the live optimizer, which would change this run; an
        # empty state is the same everywhere, so the plain (index-keyed) form is exact.
        return inner.state_dict()
    return get_optimizer_state_dict(
        model, inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )


def load_optimizer_state(model: torch.nn.Module, optimizer: Any, checkpoint: Path) -> None:
    """Load a checkpoint's optimizer state on every rank (each re-shards it as needed)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = read_optimizer(checkpoint)
    inner = _unwrapped_optimizer(optimizer)
    if all(isinstance(key, int) for key in state["state"]):  # an index-keyed checkpoint
        inner.load_state_dict(state)
        return
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        set_optimizer_state_dict(
            model, inner, state, options=StateDictOptions(full_state_dict=distributed)
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint}: optimizer state does not fit this model ({exc})") \
            from exc


def _unwrapped_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    # accelerate's AcceleratedOptimizer keeps the torch optimizer in `.optimizer`.
    return getattr(optimizer, "optimizer", optimizer)


def optimizer_to_safetensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into named tensors and JSON-able hyper-parameters."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(tensors: Mapping[str, torch.Tensor], meta: Mapping) -> dict:
    state: dict[int | str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        param_id, key = name.rsplit(".", 1)  # parameter names have dots, state keys do not
        state.setdefault(_param_key(param_id), {})[key] = tensor
    for param_id, values in meta["scalars"].items():
        state.setdefault(_param_key(param_id), {}).update(values)
    # JSON turned tuples such as AdamW's betas into lists; give them back their type.
    groups = [
        {key: tuple(value) if isinstance(value, list) and key != "params" else value
         for key, value in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def rng_state_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    return tensors


def restore_rng_state(tensors: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[key] for key in sorted(tensors) if key.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def staging_dir(checkpoints_dir: Path, step: int) -> Path:
    return checkpoints_dir / f"{checkpoint_name(step)}.tmp"


def begin(checkpoints_dir: Path, step: int) -> Path:
    """A fresh staging folder for the checkpoint of ``step`` (left-overs of a crash removed)."""
    staging = staging_dir(checkpoints_dir, step)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def write_rank_rng(staging: Path, rank: int) -> None:
    save_file(rng_state_tensors(), str(staging / f"rng-rank{rank}.safetensors"))


def write_optimizer(staging: Path, optimizer_state: Mapping[str, Any]) -> None:
    tensors, meta = optimizer_to_safetensors(optimizer_state)
    save_file(tensors, str(staging / OPTIMIZER_FILE))
    (staging / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")


def write_state(staging: Path, state: Mapping[str, Any]) -> None:
    (staging / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")


def link_files(source: Path, staging: Path) -> None:
    """Give ``staging`` the files of the checkpoint ``source`` (its weights, tokenizer and
    state), as hard links where the file system allows: a resumable checkpoint written at a
    trajectory step then costs its optimizer state only."""
    for path in source.iterdir():
        if path.is_file():
            try:
                os.link(path, staging / path.name)
            except OSError:
                shutil.copy2(path, staging / path.name)


def abort(checkpoints_dir: Path, step: int) -> None:
    """Remove the staging folder of a checkpoint that could not be written."""
    shutil.rmtree(staging_dir(checkpoints_dir, step), ignore_errors=True)


def write_failure(exc: Exception, staging: Path) -> str:
    """The one line a failed checkpoint write (a full disk, a lost mount) is reported with."""
    path = getattr(exc, "filename", None) or staging
    reason = getattr(exc, "strerror", None) or str(exc)
    previous = latest_checkpoint(staging.parent)
    kept = (f"the previous checkpoint {previous} is intact" if previous is not None
            else "no earlier checkpoint exists there")
    return f"{path}: cannot write the checkpoint ({reason}); nothing was committed and {kept}"


def commit(checkpoints_dir: Path, step: int, keep: int | None = None) -> Path:
    """Move the staged checkpoint into place, point ``latest`` at it, prune old ones."""
    staging = staging_dir(checkpoints_dir, step)
    final = checkpoints_dir / checkpoint_name(step)
    if final.exists():
        # Re-saving a step (e.g. Ctrl-C right after a scheduled save) replaces it whole.
        shutil.rmtree(final)
    staging.rename(final)
    atomic_write_text(checkpoints_dir / LATEST_FILE, final.name + "\n")
    if keep is not None:
        prune(checkpoints_dir, keep)
    return final


def prune(checkpoints_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints (``keep`` >= 1: never the newest)."""
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old)


def read_optimizer(checkpoint: Path) -> dict[str, Any]:
    tensors = read_tensors(checkpoint / OPTIMIZER_FILE)
    meta_path = checkpoint / "optimizer.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: damaged or missing ({exc})") from exc
    return optimizer_from_safetensors(tensors, meta)


def read_rank_rng(checkpoint: Path, rank: int) -> dict[str, torch.Tensor]:
    return read_tensors(checkpoint / f"rng-rank{rank}.safetensors")


def resume_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` continues ``out_dir``'s run from, or None.

    The newest checkpoint with optimizer state: the latest resumable one, or, for runs from
    before resumable checkpoints existed, the newest trajectory checkpoint. A weights-only
    trajectory checkpoint newer than that cannot be continued from, so the run replays (exactly)
    up to it. Only a finished run's final trajectory checkpoint stands alone: nothing is left
    to train, so it needs no optimizer.
    """
    candidates = []
    resumable = latest_checkpoint(out_dir / RESUME_DIR)
    if resumable is not None:
        candidates.append(resumable)
    trajectory = list_checkpoints(out_dir / TRAJECTORY_DIR)
    with_optimizer = [path for path in trajectory if is_resumable(path)]
    if with_optimizer:
        candidates.append(with_optimizer[-1])
    best = max(candidates, key=checkpoint_step, default=None)
    if trajectory and (best is None or checkpoint_step(trajectory[-1]) > checkpoint_step(best)):
        state = read_state(trajectory[-1])
        if state["it_step"] >= state["total_it_steps"]:
            return trajectory[-1]
    return best
