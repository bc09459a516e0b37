"""docs/slurm.md's requeueing job under a real SLURM, with DDP and with FSDP2, at
bench/slurm_requeue.py's small size: USR1 stops both processes after one step with a resumable
checkpoint, the job script requeues itself, the requeued job resumes to COMPLETED, and the
losses and final weights are those of the same launch without SLURM, exactly.

Runs where ``sbatch`` is installed and a controller answers (``tools/slurm_local.sh start``
makes a one-node cluster on this machine); skipped otherwise, saying which is missing.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import slurm_requeue  # bench/ is not a package: found through the path above

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm() -> None:
    unreachable = slurm_requeue.controller_unreachable(slurm_requeue.slurm_env())
    if unreachable is not None:
        pytest.skip(f"no SLURM to submit to: {unreachable}; tools/slurm_local.sh start makes "
                    "a one-node cluster")


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_the_documented_job_stops_requeues_and_completes_exactly(
        slurm: None, tmp_path: Path, fsdp: bool) -> None:
    """DDP as the page's script launches, and FSDP2 as its notes say (the launch's
    ``--multi_gpu`` replaced by ``--config_file docs/accelerate/fsdp2.yaml``)."""
    sizes = replace(slurm_requeue.SMALL, fsdp=fsdp)
    results = slurm_requeue.run_check(tmp_path / "run", sizes)
    assert results["final_state"] == "COMPLETED", results
    assert results["exit_code"] == "0:0"
    assert results["restarts"] == 1  # one USR1: stopped, requeued by the script, finished
    # each process says where it stopped: both after the same step
    stops = results["stop_lines"]
    assert len(stops) == sizes.processes and len(set(stops)) == 1, stops
    assert stops[0].startswith("SIGUSR1: stopped at step ")
    comparison = results["comparison"]
    assert comparison["final_step"] == sizes.steps
    assert comparison["losses_equal"] and comparison["weights_equal"], comparison
    trained_by = "FSDP" if fsdp else "MULTI_CPU"
    assert comparison["distributed_types"] == [trained_by, trained_by]
