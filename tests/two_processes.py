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


def launch_two(*program: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``program`` (a script and its arguments, or ``-m module ...``) as two processes;
    fails the test with their stderr if either fails."""
    launcher = Path(sys.executable).with_name("accelerate")
    command = [
        # On a CPU-only machine `--multi_gpu` makes accelerate start torchrun, and the processes
        # join a gloo group; accelerate's `--cpu` with several processes needs mpirun instead.
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *map(str, program),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
