"""Run by tests/test_eval_distributed.py under ``accelerate launch --num_processes 2``:
ICL and seen-task evaluations sharded across the processes into one results table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from accelerate import Accelerator

from itransfer.config.schema import load_config
from itransfer.eval.icl import evaluate_icl
from itransfer.eval.seen import evaluate_seen
from itransfer.eval.session import open_session


def main() -> None:
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(None, sys.argv[3:])
    accelerator = Accelerator(cpu=True)
    session = open_session(config, model_dir, out_dir, accelerator=accelerator)
    if accelerator.process_index == 1:
        # A slow process: the main one finishes and writes its first task meanwhile, which
        # once made this one plan from a different list of finished tasks and skip one.
        time.sleep(4)
    evaluate_icl(session)
    evaluate_seen(session)


if __name__ == "__main__":
    main()
