"""Start a test script as two "nodes" on this machine: two ``accelerate launch`` commands with
``--num_machines 2``, node ranks 0 and 1, one process each, meeting at 127.0.0.1 and sharing
the filesystem as a cluster's nodes do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from two_processes import free_port


def node_command(rank: int, port: int, program: tuple[str | Path, ...]) -> list[str]:
    launcher = Path(sys.executable).with_name("accelerate")
    return [
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "2",
        "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
        *map(str, program),
    ]


def start_nodes(*program: str | Path) -> list[subprocess.Popen[str]]:
    """The two nodes' launchers, started together (each waits for the other at rendezvous)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen(node_command(rank, port, program), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]


def launch_nodes(*program: str | Path, timeout: float = 600) -> list[str]:
    """Run ``program`` on two nodes; fails the test with a node's stderr if either fails.
    Returns each node's stderr."""
    nodes = start_nodes(*program)
    errors = []
    for rank, node in enumerate(nodes):
        _, stderr = node.communicate(timeout=timeout)
        assert node.returncode == 0, f"node {rank}: {stderr[-3000:]}"
        errors.append(stderr)
    return errors
