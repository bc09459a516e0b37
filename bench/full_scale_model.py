"""Real model sizes on the CPU: a few steps, a checkpoint, an exact resume, one cell per engine.

    python bench/full_scale_model.py --model t5-large-shape --work /tmp/x

Run by ``bench/full_scale.py --parts model`` (which measures its peak RSS); prints one JSON
line last. Short sources (256 tokens) and batch 2 keep a 780M-parameter step to seconds on a
CPU: the point is that nothing breaks at this size, not speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from accelerate import Accelerator
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from itransfer.config import load_config
from itransfer.eval.results import ResultsTable
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer
from itransfer.train.loop import instruction_tune
from model_shapes import SHAPES, build_shape

STEPS = 3


def folder_gb(folder: Path, pattern: str = "*") -> float:
    return round(sum(f.stat().st_size for f in folder.rglob(pattern) if f.is_file()) / 1e9, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=SHAPES, default="t5-large-shape")
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    result: dict = {"model": args.model}

    started = time.perf_counter()
    source = build_shape(args.model, args.work / args.model)
    result["build_s"] = round(time.perf_counter() - started, 1)
    overrides = [
        f"model.name_or_path={source}", "model.max_source_length=256",
        "model.max_target_length=32", "train.batch_size=2", f"train.steps={STEPS}",
        "train.warmup_steps=1", "train.log_every=1", "train.tensorboard=false",
    ]
    config = load_config(None, overrides)

    started = time.perf_counter()
    unbroken = instruction_tune(config, args.work / "unbroken")
    result["train_s"] = round(time.perf_counter() - started, 1)
    checkpoint = unbroken.final_checkpoint
    result["checkpoint_gb"] = folder_gb(checkpoint)
    result["checkpoint_weights_gb"] = folder_gb(checkpoint, "model*.safetensors")

    started = time.perf_counter()
    instruction_tune(config, args.work / "resumed", stop_after=STEPS - 1)
    resumed = instruction_tune(config, args.work / "resumed", resume=True)
    result["stop_and_resume_s"] = round(time.perf_counter() - started, 1)
    a = load_file(str(checkpoint / "model.safetensors"))
    b = load_file(str(resumed.final_checkpoint / "model.safetensors"))
    result["resume_bit_exact"] = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    result["losses_equal"] = [r["loss"] for r in unbroken.log] == [r["loss"] for r in resumed.log]
    del a, b

    cell = ["eval.shots=[5]", "eval.max_tasks=1", "eval.transfer_contexts=[none]",
            "data.splits.unseen_test_size=10", "eval.max_new_tokens=8", "eval.seeds=[0]"]
    for engine in ("batched", "peft"):
        eval_config = load_config(None, [*overrides, *cell, f"eval.engine={engine}"])
        out = args.work / f"eval-{engine}"
        started = time.perf_counter()
        session = open_session(eval_config, str(checkpoint), out, accelerator=Accelerator(cpu=True))
        evaluate_transfer(session)
        frame = ResultsTable(out).read()
        result[f"cell_{engine}_s"] = round(time.perf_counter() - started, 1)
        result[f"cell_{engine}_cells"] = int(frame["cell"].nunique())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
