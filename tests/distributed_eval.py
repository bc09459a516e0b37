"""Run by tests/test_eval_distributed.py under ``accelerate launch --num_processes 2``:
ICL and seen-task evaluations sharded across the processes into one results table."""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator

from itransfer.config import load_config
from itransfer.eval.icl import evaluate_icl
from itransfer.eval.seen import evaluate_seen
from itransfer.eval.session import open_session


def main() -> None:
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(None, sys.argv[3:])
    session = open_session(config, model_dir, out_dir, accelerator=Accelerator(cpu=True))
    evaluate_icl(session)
    evaluate_seen(session)


if __name__ == "__main__":
    main()
