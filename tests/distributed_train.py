"""Run by tests/test_train_distributed.py under ``accelerate launch --num_processes 2``.

Each process trains, then writes what it saw (its per-task losses and its log) to
``<out>/rank<r>.json`` so the test can check that every rank agrees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator

from itransfer.config.schema import load_config
from itransfer.train.loop import instruction_tune


def main() -> None:
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(
        None,
        [
            f"model.name_or_path={model_dir}", "model.max_source_length=96",
            "model.max_target_length=32", "train.batch_size=8", "train.steps=30",
            "train.warmup_steps=2", "train.learning_rate=3e-3", "train.log_every=1",
            "train.tensorboard=false", "train.length_window_batches=4",
            "train.sampler={name: dwa, window: 2}",
        ],
    )
    accelerator = Accelerator(cpu=True)
    result = instruction_tune(config, out_dir / "run", accelerator=accelerator)
    report = {
        "world_size": accelerator.num_processes,
        "final_task_losses": result.final_task_losses,
        "losses": [row["loss"] for row in result.log],
        "final_checkpoint": str(result.final_checkpoint),
    }
    (out_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
