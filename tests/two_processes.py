"""Start a test script as two CPU processes under ``accelerate launch``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on now, so consecutive launches never meet a lingering one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_two(*program: str | Path, config_file: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``program`` (a script and its arguments, or ``-m module ...``) as two processes,
    whatever their exit status; with ``config_file``, an accelerate config (FSDP) says how."""
    launcher = Path(sys.executable).with_name("accelerate")
    # On a CPU-only machine `--multi_gpu` makes accelerate start torchrun, and the processes
    # join a gloo group; accelerate's `--cpu` with several processes needs mpirun instead. A
    # config file names its own distributed type, which `--multi_gpu` would contradict.
    kind = ["--config_file", str(config_file)] if config_file is not None else ["--multi_gpu"]
    command = [
        str(launcher), "launch", *kind, "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *map(str, program),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def launch_two(*program: str | Path, config_file: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
    """:func:`run_two`, failing the test with the processes' stderr if either fails."""
    result = run_two(*program, config_file=config_file)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
