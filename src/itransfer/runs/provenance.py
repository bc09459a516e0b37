"""Run records: what produced a result (resolved config, seed, versions, git revision, hardware)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from itransfer import __version__
from itransfer.config.schema import config_to_yaml
from itransfer.runtime.atomic_files import atomic_write_text

TRACKED_PACKAGES = (
    "torch", "transformers", "peft", "accelerate", "datasets", "pyarrow", "safetensors",
    "tokenizers", "rouge-score", "scipy", "numpy", "pandas", "matplotlib", "pydantic",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """The git commit (and whether the tree is dirty) of the itransfer source, if it has one."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def hardware() -> dict[str, Any]:
    """The accelerators this process sees and the torch build that drives them.

    Two runs of one config on a CPU and on a GPU give close but not equal numbers (other
    kernels, other summation orders), so a result must say which machine made it.
    """
    record: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_build": torch.version.cuda,
        "gpus": [],
    }
    if torch.cuda.is_available():
        record["gpus"] = [torch.cuda.get_device_name(index)
                          for index in range(torch.cuda.device_count())]
    return record


def run_record(config: BaseModel, *, seed: int, command: list[str] | None = None) -> dict[str, Any]:
    return {
        "itransfer_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_revision(),
        "hardware": hardware(),
        "config": config.model_dump(mode="json"),
    }


def write_run_record(
    out_dir: Path, config: BaseModel, *, seed: int, command: list[str] | None = None
) -> Path:
    """Write ``config.yaml`` (resolved) and ``run.json`` (provenance) into ``out_dir``."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "config.yaml", config_to_yaml(config))
    record = run_record(config, seed=seed, command=command)
    atomic_write_text(out_dir / "run.json", json.dumps(record, indent=2) + "\n")
    return out_dir / "run.json"
