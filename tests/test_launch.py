"""A launch of several processes that accelerate did not join into one run is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from itransfer.errors import ConfigError
from itransfer.runtime.launch import check_launch, launched_processes


def test_launch_disagreeing_with_accelerate_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    alone = SimpleNamespace(num_processes=1, distributed_type="NO")
    with pytest.raises(ConfigError, match="2 processes were launched"):
        check_launch(alone)  # type: ignore[arg-type]
    check_launch(SimpleNamespace(num_processes=2, distributed_type="MULTI_CPU"))  # type: ignore[arg-type]


def test_no_launcher_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_processes() == 1
    check_launch(SimpleNamespace(num_processes=1, distributed_type="NO"))  # type: ignore[arg-type]


EXIT_SCRIPT = """
import atexit
import sys
from types import SimpleNamespace
import torch.distributed as dist
from itransfer.runtime.launch import check_launch
# Registered first, so it runs after the hook check_launch registers (atexit is LIFO).
atexit.register(lambda: print("group alive at exit:", dist.is_initialized(), flush=True))
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
check_launch(SimpleNamespace(num_processes=1, distributed_type="MULTI_CPU"))
"""


def test_a_callers_own_process_group_is_left_at_exit(tmp_path: Path) -> None:
    # Left to interpreter teardown, gloo's threads aborted a sharded evaluation that had
    # succeeded (SIGABRT, "terminate called without an active exception"): the test script
    # built its own Accelerator, which only make_accelerator's exit hook had covered.
    env = {key: value for key, value in os.environ.items() if key != "WORLD_SIZE"}
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path / "rendezvous")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "group alive at exit: False" in done.stdout
