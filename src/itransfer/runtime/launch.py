"""The one place the launched processes are joined (an :class:`accelerate.Accelerator` when the
caller brings none, or the bare process group), and how they agree on what they read.

Under ``accelerate launch`` / ``torchrun`` on a machine without a GPU, ``Accelerator()`` sets up
a single process in each of the launched processes (``DistributedType.NO``): they would train
or evaluate side by side, unaware of each other, and write into the same folder. With
``cpu=True`` accelerate joins them in one gloo process group instead, which is what a launch
of several processes on CPUs means. Any other disagreement between the launch and what
accelerate set up is an error before anything is written.

An accelerate config with ``distributed_type: FSDP`` on CPUs is the one place where accelerate
needs help: it turns a launch into FSDP only for accelerator devices, and ``cpu=True`` left it a
plain gloo group whose ``prepare`` wraps the model in DDP — the FSDP config was silently ignored.
:func:`make_accelerator` finishes what accelerate skipped (FSDP2's ``fully_shard`` runs on CPU
tensors over gloo); FSDP1 cannot (its compute device must be a GPU) and is refused.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    broadcast_object_list,
    get_int_from_env,
    parse_flag_from_env,
)

from itransfer.errors import ConfigError

Value = TypeVar("Value")


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


def _needs_cpu_group() -> bool:
    return launched_processes() > 1 and not _has_gpu()


def fsdp_requested() -> bool:
    """Whether the launch asks for FSDP (``distributed_type: FSDP`` in the accelerate config,
    or ``accelerate launch --use_fsdp``): what accelerate itself reads."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


# FSDP1 on CPU processes fails inside torch, after the model was loaded on every process:
# torch.distributed.fsdp._init_utils._get_compute_device raises "Inconsistent compute device
# and `device_id` on rank 0: cpu vs cpu:0" (its compute device is always a GPU-like one).
FSDP1_ON_CPU = (
    "fsdp_version: 1 does not run on CPU processes (FSDP1's compute device must be a GPU); "
    "set fsdp_version: 2 in the accelerate config (FSDP2's fully_shard runs on CPUs over gloo)"
)


def make_accelerator(**kwargs: Any) -> Accelerator:
    cpu_group = _needs_cpu_group()
    if cpu_group:
        kwargs.setdefault("cpu", True)
    fsdp_on_cpu = cpu_group and fsdp_requested()
    if fsdp_on_cpu and int(os.environ.get("FSDP_VERSION", "1")) != 2:
        raise ConfigError(FSDP1_ON_CPU)  # before anything is loaded, on every process
    accelerator = Accelerator(**kwargs)
    if fsdp_on_cpu:
        _shard_on_cpu(accelerator)
    check_launch(accelerator)
    return accelerator


def _shard_on_cpu(accelerator: Accelerator) -> None:
    """Make the gloo group accelerate set up an FSDP2 run, as it would have made a GPU one.

    accelerate (1.x) picks FSDP only among accelerator device types and, with ``cpu=True``,
    drops the FSDP plugin it built from the launch's config; the same plugin, built again from
    the same environment, and the FSDP type are what its ``prepare``, ``get_state_dict`` and
    ``clip_grad_norm_`` read.
    """
    state = accelerator.state
    if state.distributed_type == DistributedType.FSDP:
        return  # a second accelerator of the same process shares the first one's state
    plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def make_state() -> PartialState:
    """The launched processes as one group, for code that coordinates stages (which process
    writes, when all wait) without training anything itself; the accelerators the stages make
    later join the same group."""
    state = PartialState(cpu=_needs_cpu_group())
    check_launch(state)
    return state


_group_left_at_exit = False


def _leave_group_at_exit() -> None:
    """Destroy the process group when the interpreter exits, while it is still whole.

    Left to interpreter teardown, gloo's worker threads can outlive the objects they hold and
    abort the process ("terminate called without an active exception", SIGABRT) after a run
    that succeeded (pytorch/pytorch#190489); torch asks programs to call
    ``destroy_process_group`` themselves. ``atexit`` also covers the CLI's early exits (a
    preempted run, a config error), which a call at the end of each command would miss.
    """
    global _group_left_at_exit
    if _group_left_at_exit or not torch.distributed.is_initialized():
        return
    _group_left_at_exit = True
    atexit.register(_destroy_group)


def _destroy_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def agreed(state: PartialState, read: Callable[[], Value]) -> Value:
    """``read()`` as the main process sees it, once every process has got here.

    For decisions taken from files that another process may be about to write: were each
    process to read for itself, they could decide differently and then wait for each other
    forever, or split work differently.
    """
    if state.num_processes == 1:
        return read()
    state.wait_for_everyone()
    answer = [read() if state.is_main_process else None]
    broadcast_object_list(answer, from_process=0)
    return answer[0]


def check_fsdp(accelerator: Accelerator) -> None:
    """A training launch that asks for FSDP trains under FSDP, not silently under DDP (as an
    accelerator made without :func:`make_accelerator` on CPUs would)."""
    if (fsdp_requested() and launched_processes() > 1
            and accelerator.distributed_type != DistributedType.FSDP):
        raise ConfigError(
            f"the launch asks for FSDP but the accelerator runs {accelerator.distributed_type}: "
            "each process would hold and update the whole model. Let itransfer make the "
            "accelerator (itransfer.runtime.launch.make_accelerator)."
        )


def check_launch(accelerator: Accelerator | PartialState) -> None:
    """Refuse a launch accelerate did not join into one run; on one it did, leave the
    process group at exit. Every entry point that takes an accelerator calls this, so a
    caller's own ``Accelerator()`` (the Python API, the test scripts) is covered as well as
    :func:`make_accelerator`'s: a script without the exit hook aborted after succeeding."""
    launched = launched_processes()
    if accelerator.num_processes != launched:
        raise ConfigError(
            f"{launched} processes were launched but accelerate set up "
            f"{accelerator.num_processes} ({accelerator.distributed_type}); each would run the "
            "whole job into the same folder. Check the accelerate config (accelerate env)."
        )
    _leave_group_at_exit()
