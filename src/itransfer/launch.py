"""The one place an :class:`accelerate.Accelerator` is made when the caller brings none.

Under ``accelerate launch`` / ``torchrun`` on a machine without a GPU, ``Accelerator()`` sets up
a single process in each of the launched processes (``DistributedType.NO``): they would train
or evaluate side by side, unaware of each other, and write into the same folder. With
``cpu=True`` accelerate joins them in one gloo process group instead, which is what a launch
of several processes on CPUs means. Any other disagreement between the launch and what
accelerate set up is an error before anything is written.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import get_int_from_env

from itransfer.errors import ConfigError


def launched_processes() -> int:
    """How many processes the launcher started (1 without a launcher).

    The variables accelerate itself reads: torchrun's, then MPI's (``mpirun`` for CPUs).
    """
    return get_int_from_env(
        ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1
    )


def _has_gpu() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def make_accelerator(**kwargs: Any) -> Accelerator:
    launched = launched_processes()
    if launched > 1 and not _has_gpu():
        kwargs.setdefault("cpu", True)
    accelerator = Accelerator(**kwargs)
    check_launch(accelerator)
    return accelerator


def check_launch(accelerator: Accelerator) -> None:
    launched = launched_processes()
    if accelerator.num_processes != launched:
        raise ConfigError(
            f"{launched} processes were launched but accelerate set up "
            f"{accelerator.num_processes} ({accelerator.distributed_type}); each would run the "
            "whole job into the same folder. Check the accelerate config (accelerate env)."
        )
