"""docs/slurm.md's requeueing job, run for real on a one-node SLURM cluster (issue 25, part 3).

    python bench/slurm_requeue.py            # starts the cluster with tools/slurm_local.sh

The job script is taken from docs/slurm.md's ``jobs/train.sbatch`` block and changed only in its
sizes (each change below must match, so an edit of the document that breaks one fails here):
no GPUs, two CPU processes, a two-minute time limit with ``USR1`` 60 s before it, this run's
folders and a training config of the bundled tiny T5. SLURM sends ``USR1`` before the limit, the
job's processes write the resumable checkpoint and exit 138, the script requeues the job, and
``--resume`` continues — as many times as the training needs. The same ``accelerate launch``
command then runs once without SLURM, and the two runs' logged losses and final weights are
compared exactly. Results: ``bench/results-slurm_requeue-cpu.json`` (the job's ``sacct
--completion`` lines, its requeues, the stop lines of its log, the comparison).

    python bench/slurm_requeue.py --small    # tests/test_slurm.py's size: about 3 minutes

``--small`` (:data:`SMALL`) trains 40 steps under a time limit it never reaches: the check sends
``USR1`` to the job script itself, as SLURM's ``--signal=B:USR1`` does (``scancel --batch``),
once the run has logged step 10, and starts the requeued job at once instead of after SLURM's
two-minute requeue delay. The job script, its trap, the stop, the requeue and the comparison
are those of the full size. The functions are imported by tests/test_slurm.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "slurm.md"
CLUSTER = ROOT / "tools" / "slurm_local.sh"
FSDP_CONFIG = ROOT / "docs" / "accelerate" / "fsdp2.yaml"

# The training run: the quickstart's model and data, long enough to outlive a few time limits
# on 2 busy cores.
TRAIN_CONFIG = """\
seed: 0
model: {name_or_path: "itransfer:tiny-t5", max_source_length: 128, max_target_length: 32}
data: {context: {name: exemplars, num_exemplars: 3}}
train:
  steps: STEPS
  batch_size: 16
  warmup_steps: 20
  learning_rate: 1.0e-3
  checkpoint_every: CHECKPOINT_EVERY
  log_every: 10
  tensorboard: false
"""


@dataclass(frozen=True)
class Sizes:
    steps: int = 600
    processes: int = 2
    time_minutes: int = 3
    signal_seconds: int = 60
    timeout_s: float = 3600
    # None: SLURM sends USR1 before the time limit (the script's --signal=B:USR1@N). A step:
    # the check sends USR1 to the job script, as SLURM would, once the run has logged it.
    usr1_after_step: int | None = None
    # Start a requeued job at once rather than after SLURM's delay (121 s in 22.05).
    release_requeued: bool = False
    # FSDP2 through docs/accelerate/fsdp2.yaml in place of --multi_gpu (DDP)
    fsdp: bool = False


SMALL = Sizes(steps=40, time_minutes=15, timeout_s=600, usr1_after_step=10,
              release_requeued=True)


def doc_job_script() -> str:
    """The ``jobs/train.sbatch`` block of docs/slurm.md, as written there."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"`jobs/train\.sbatch`.*?```bash\n(.*?)```", text, flags=re.S)
    if found is None:
        raise SystemExit(f"{DOC}: no ```bash block after `jobs/train.sbatch`")
    return found.group(1)


def sized_job_script(run_dir: Path, sizes: Sizes) -> tuple[str, list[tuple[str, str]]]:
    """The document's script with its sizes changed for this machine; the changes, listed."""
    time_minutes, signal_seconds = sizes.time_minutes, sizes.signal_seconds
    changes = [
        ("#SBATCH --gpus-per-node=8\n", ""),
        ("--cpus-per-task=64", f"--cpus-per-task={os.cpu_count() or 1}"),
        ("--time=24:00:00", f"--time=00:{time_minutes:02d}:00"),
        ("--signal=B:USR1@120", f"--signal=B:USR1@{signal_seconds}"),
        ("--output=logs/%x-%j.out", f"--output={run_dir}/logs/%x-%j.out"),
        ("OUT=runs/t5-large-it", f"OUT={run_dir}/slurm"),
        ("CONFIG=configs/my-run.yaml", f"CONFIG={run_dir}/config.yaml"),
        ("\\$SLURM_GPUS_ON_NODE", str(sizes.processes)),
        ("--mixed_precision bf16", "--mixed_precision no"),  # bf16 autocast is a GPU's
    ]
    if sizes.fsdp:  # as docs/slurm.md's notes say
        changes.append(("--multi_gpu", f"--config_file {FSDP_CONFIG}"))
    script = doc_job_script()
    for old, new in changes:
        if old not in script:
            raise SystemExit(f"{DOC}: the job script no longer contains {old!r}")
        script = script.replace(old, new)
    return script, changes


def slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SLURM_CONF", "/tmp/itransfer-slurm/slurm.conf")
    # The job finds this interpreter's accelerate and itransfer (sbatch exports the environment).
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def job_state(job_id: str, env: dict[str, str]) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, text=True,
                           capture_output=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


def controller_unreachable(env: dict[str, str]) -> str | None:
    """Why no SLURM controller answers (None when one does)."""
    if shutil.which("sbatch") is None:
        return "sbatch is not installed (Debian: apt-get install slurm-wlm munge)"
    try:
        ping = subprocess.run(["scontrol", "ping"], env=env, text=True, capture_output=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines()
        return f"scontrol ping: {said[-1] if said else 'no answer'}"
    return None


def logged_step(out: Path) -> int:
    """The newest step the run's log holds (0 before it has one)."""
    log = out / "train_log.jsonl"
    if not log.is_file():
        return 0
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return max((row.get("step", 0) for row in rows), default=0)


def _act(job_id: str, state: dict[str, str], sizes: Sizes, out: Path, env: dict[str, str],
         signalled: bool) -> bool:
    """The small size's interventions; returns whether USR1 has been sent."""
    if (sizes.usr1_after_step is not None and not signalled and state["JobState"] == "RUNNING"
            and logged_step(out) >= sizes.usr1_after_step):
        # What --signal=B:USR1@N makes SLURM do: USR1 to the batch shell only.
        subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, check=True)
        signalled = True
    if (sizes.release_requeued and state["JobState"] == "PENDING"
            and state.get("Reason") == "BeginTime"):
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env,
                       check=True)
    return signalled


def wait_for(job_id: str, env: dict[str, str], sizes: Sizes, out: Path
             ) -> tuple[dict[str, str], list]:
    """Poll until the job ends; the states seen on the way (with their times)."""
    seen: list[tuple[float, str, str]] = []
    start = time.monotonic()
    signalled = False
    while time.monotonic() - start < sizes.timeout_s:
        state = job_state(job_id, env)
        entry = (round(time.monotonic() - start), state["JobState"], state.get("Restarts", "0"))
        if not seen or seen[-1][1:] != entry[1:]:
            seen.append(entry)
            print(f"[{entry[0]:5d} s] job {job_id}: {entry[1]} (restarts {entry[2]})",
                  flush=True)
        if state["JobState"] in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}:
            return state, seen
        signalled = _act(job_id, state, sizes, out, env, signalled)
        time.sleep(2 if sizes.usr1_after_step is not None else 5)
    raise SystemExit(f"job {job_id} still running after {sizes.timeout_s:.0f} s")


def reference_run(run_dir: Path, sizes: Sizes) -> float:
    """The same launch, uninterrupted and without SLURM."""
    start = time.monotonic()
    kind = ["--config_file", str(FSDP_CONFIG)] if sizes.fsdp else ["--multi_gpu"]
    subprocess.run(
        ["accelerate", "launch", *kind, "--num_processes", str(sizes.processes),
         "--num_machines", "1", "--mixed_precision", "no", "-m", "itransfer", "train",
         "--config", str(run_dir / "config.yaml"), "--out", str(run_dir / "reference")],
        env=slurm_env(), check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    final = max((out / "checkpoints").glob("step-*"))
    return load_file(final / "model.safetensors")


def written_by(out: Path) -> str | None:
    final = max((out / "checkpoints").glob("step-*"))
    return json.loads((final / "trainer_state.json").read_text()).get("distributed_type")


def compare(run_dir: Path) -> dict[str, object]:
    def losses(out: Path) -> list[dict]:
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        return [{"step": row["step"], "loss": row["loss"]} for row in rows if "loss" in row]

    slurm, reference = losses(run_dir / "slurm"), losses(run_dir / "reference")
    ours, theirs = final_weights(run_dir / "slurm"), final_weights(run_dir / "reference")
    return {
        "logged_losses": len(reference),
        "losses_equal": slurm == reference,
        "max_abs_loss_difference": max((abs(a["loss"] - b["loss"]) for a, b in
                                        zip(slurm, reference, strict=False)), default=None),
        "final_step": max(row["step"] for row in reference),
        "weights_equal": ours.keys() == theirs.keys()
        and all(torch.equal(ours[name], theirs[name]) for name in ours),
        # what trained them: FSDP, or MULTI_CPU (DDP on CPU processes)
        "distributed_types": [written_by(run_dir / "slurm"), written_by(run_dir / "reference")],
    }


def prepare(run_dir: Path, sizes: Sizes) -> list[tuple[str, str]]:
    """The run folder: the training config and the sized job script; the script's changes."""
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        TRAIN_CONFIG.replace("STEPS", str(sizes.steps))
        .replace("CHECKPOINT_EVERY", str(sizes.steps // 4)), encoding="utf-8")
    script, changes = sized_job_script(run_dir, sizes)
    (run_dir / "train.sbatch").write_text(script, encoding="utf-8")
    return changes


def run_check(run_dir: Path, sizes: Sizes) -> dict[str, object]:
    """Submit the sized job on a running cluster, follow it to its end, run the reference,
    compare; what was seen."""
    env = slurm_env()
    changes = prepare(run_dir, sizes)
    start = time.monotonic()
    job_id = subprocess.run(["sbatch", "--parsable", str(run_dir / "train.sbatch")], env=env,
                            text=True, capture_output=True, check=True,
                            cwd=run_dir).stdout.strip().split(";")[0]
    state, seen = wait_for(job_id, env, sizes, run_dir / "slurm")
    slurm_seconds = time.monotonic() - start
    sacct = subprocess.run(["sacct", "--completion", "-j", job_id, "--format",
                            "JobID,JobName,State,ExitCode,Start,End"], env=env, text=True,
                           capture_output=True).stdout.rstrip().splitlines()
    log = "".join(path.read_text(errors="replace") for path in (run_dir / "logs").iterdir())
    # Each process's stop line (a progress bar may share its line in the log)
    stops = re.findall(r"SIGUSR1: stopped at step \d+[^\n]*", log)
    reference_seconds = reference_run(run_dir, sizes)
    return {
        "job_id": job_id, "final_state": state["JobState"], "exit_code": state.get("ExitCode"),
        "restarts": int(state.get("Restarts", "0")), "states_seen": seen,
        "sacct_completion": sacct, "stop_lines": stops,
        "changes_to_the_documented_script": [list(change) for change in changes],
        "slurm_wall_s": round(slurm_seconds, 1),
        "reference_wall_s": round(reference_seconds, 1),
        "comparison": compare(run_dir),
        "slurm_version": subprocess.run(["sbatch", "--version"], text=True, env=env,
                                        capture_output=True).stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/itransfer-slurm-run"))
    parser.add_argument("--small", action="store_true",
                        help="tests/test_slurm.py's size (USR1 sent by this script at step 10)")
    parser.add_argument("--fsdp", action="store_true",
                        help="launch with docs/accelerate/fsdp2.yaml instead of --multi_gpu")
    parser.add_argument("--steps", type=int, default=Sizes.steps)
    parser.add_argument("--processes", type=int, default=Sizes.processes)
    parser.add_argument("--time-minutes", type=int, default=Sizes.time_minutes)
    parser.add_argument("--signal-seconds", type=int, default=Sizes.signal_seconds)
    parser.add_argument("--timeout", type=float, default=Sizes.timeout_s)
    parser.add_argument("--results", type=Path, default=None,
                        help="default: bench/results-slurm_requeue[-small]-cpu.json")
    args = parser.parse_args()
    results_path = args.results or ROOT / "bench" / (
        f"results-slurm_requeue{'-small' if args.small else ''}"
        f"{'-fsdp' if args.fsdp else ''}-cpu.json")
    sizes = replace(SMALL, fsdp=args.fsdp) if args.small else Sizes(
        steps=args.steps, processes=args.processes, time_minutes=args.time_minutes,
        signal_seconds=args.signal_seconds, timeout_s=args.timeout, fsdp=args.fsdp)

    subprocess.run(["bash", str(CLUSTER), "start"], check=True)
    results = run_check(args.dir, sizes)
    results_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({key: results[key] for key in ("final_state", "restarts", "comparison")},
                     indent=1))


if __name__ == "__main__":
    main()
