"""Run by tests/test_train_distributed.py under ``accelerate launch --num_processes 2``.

Trains with the accelerator itransfer makes itself (as ``itransfer train`` does), optionally
stopping after some steps or resuming, and has rank 0 write the logged losses to
``<out>/losses-<tag>.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from itransfer.config.schema import load_config
from itransfer.errors import TrainingStopped
from itransfer.train.loop import instruction_tune


def overrides(model_dir: str | Path) -> list[str]:
    """The run, as ``itransfer train --set`` takes it: 8 steps, trajectory checkpoints at 4, 8."""
    return [
        f"model.name_or_path={model_dir}", "model.max_source_length=64",
        "model.max_target_length=16", "train.batch_size=8", "train.steps=8",
        "train.warmup_steps=2", "train.log_every=1", "train.tensorboard=false",
        "train.checkpoint_every=4", "train.sampler={name: dwa, window: 2}",
    ]


def main() -> None:
    model_dir, run_dir, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    # "sigterm": only rank 1 gets SIGTERM (from rank 0, after step 3); each rank records where
    # it stopped
    sigterm = len(sys.argv) > 4 and sys.argv[4] == "sigterm"
    stop_after = int(sys.argv[4]) if len(sys.argv) > 4 and not sigterm else None
    config = load_config(None, overrides(model_dir))
    rank = os.environ.get("RANK", "0")
    if sigterm:
        # Progress reaches the main process only: rank 0 signals rank 1, whose pid it reads
        # (written before training, whose first step both processes take together).
        pid_file = run_dir.parent / "pid-rank1"
        if rank == "1":
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(str(os.getpid()))

        def signal_rank_one(step: int, total: int, row: dict) -> None:
            if step == 3:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)

        try:
            instruction_tune(config, run_dir, progress=signal_rank_one)
        except TrainingStopped as exc:
            (run_dir.parent / f"stopped-rank{rank}.json").write_text(
                json.dumps({"message": str(exc), "signal": exc.signal_number}))
        return
    result = instruction_tune(config, run_dir, stop_after=stop_after,
                              resume=(run_dir / "checkpoints").exists())
    if os.environ.get("RANK", "0") == "0":
        report = {
            "losses": [row["loss"] for row in result.log], "world_size": os.environ["WORLD_SIZE"]
        }
        (run_dir.parent / f"losses-{tag}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
