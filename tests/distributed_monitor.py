"""Run by tests/test_monitor.py. ``train``: monitored training, as one process or under
``accelerate launch``; each rank writes its world size and the run's probe rows to
``<out>/monitor-rank<r>.json``. ``reprobe``: one process measures the same probe on the
pre-trained model and on the run's trajectory checkpoints, into ``<out>/reprobe.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from itransfer.eval.monitor import TransferMonitor, monitor_for
from itransfer.models.loading import load_model_and_tokenizer
from itransfer.runs.checkpoints import checkpoint_step, list_checkpoints
from itransfer.runs.monitor_log import read_monitor_rows
from itransfer.runs.probe import ProbeContext
from itransfer.train.loop import instruction_tune
from tiny_configs import tiny_train_config

PROBE = ("train.monitor={every_steps: 2, tasks: 2, test_items: 3, shots: [2], "
         "lora_epochs: 2}")


def train(model_dir: Path, out_dir: Path) -> None:
    config = tiny_train_config(model_dir, "train.steps=4", "train.checkpoint_every=2", PROBE)
    accelerator = Accelerator(cpu=True)
    run = out_dir / "run"
    instruction_tune(config, run, accelerator=accelerator, monitor=monitor_for(config))
    accelerator.wait_for_everyone()
    report = {"world_size": accelerator.num_processes, "rows": read_monitor_rows(run)}
    (out_dir / f"monitor-rank{accelerator.process_index}.json").write_text(json.dumps(report))


def reprobe(model_dir: Path, out_dir: Path) -> None:
    config = tiny_train_config(model_dir, "train.steps=4", "train.checkpoint_every=2", PROBE)
    weights = {0: model_dir} | {checkpoint_step(path): path
                                for path in list_checkpoints(out_dir / "run" / "checkpoints")}
    measured = {}
    for step, path in sorted(weights.items()):
        loaded = load_model_and_tokenizer(str(path))
        monitor = TransferMonitor(config)
        monitor.start(ProbeContext(loaded.tokenizer, loaded.architecture, torch.device("cpu"),
                                   out_dir / "reprobe"))
        loaded.model.eval()
        measured[step] = monitor.measure(loaded.model, step)
    (out_dir / "reprobe.json").write_text(json.dumps(measured, default=str))


if __name__ == "__main__":
    {"train": train, "reprobe": reprobe}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
