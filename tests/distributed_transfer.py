"""Run by tests/test_eval_distributed.py, as one process or under ``accelerate launch
--num_processes 2``: the few-shot transfer grid with the default (batched) engine."""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator

from itransfer.config.schema import load_config
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer


def main() -> None:
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(None, sys.argv[3:])
    session = open_session(config, model_dir, out_dir, accelerator=Accelerator(cpu=True))
    evaluate_transfer(session)


if __name__ == "__main__":
    main()
