"""docs/slurm.md's requeueing job under a real SLURM, at bench/slurm_requeue.py's small size:
USR1 stops both processes after one step with a resumable checkpoint, the job script requeues
itself, the requeued job resumes to COMPLETED, and the losses and final weights are those of the
same launch without SLURM, exactly.

Runs where ``sbatch`` is installed and a controller answers (``tools/slurm_local.sh start``
makes a one-node cluster on this machine); skipped otherwise, saying which is missing.
"""

from __future__ import annotations

import sys
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


def test_the_documented_job_stops_requeues_and_completes_exactly(slurm: None, tmp_path: Path
                                                                 ) -> None:
    sizes = slurm_requeue.SMALL
    results = slurm_requeue.run_check(tmp_path / "run", sizes)
    assert results["final_state"] == "COMPLETED", results
    assert results["exit_code"] == "0:0"
    assert results["restarts"] >= 1  # stopped by USR1 and requeued by the script at least once
    stops = results["stop_lines"]
    assert stops and all("SIGUSR1: stopped at step" in line for line in stops), results
    comparison = results["comparison"]
    assert comparison["final_step"] == sizes.steps
    assert comparison["losses_equal"] and comparison["weights_equal"], comparison
