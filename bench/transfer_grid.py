"""Few-shot transfer grid: the sequential PEFT engine vs the batched multi-adapter engine.

Both engines run the same grid of cells (tasks × k ∈ {0, 5, 10, 20, 40}, context ``none``,
the paper's LoRA settings), training and evaluation included (test loss and greedy
generation on each task's test instances), in this one process; the script prints wall time,
cells/s and the ratio, and how far apart the two engines' test losses are.

    python bench/transfer_grid.py                                  # bundled unseen tasks, CPU
    python bench/transfer_grid.py --tasks 4 --test-size 25         # a quicker look
    python bench/transfer_grid.py --model t5-large-shape --device cuda --tasks 8

``--model t5-large-shape`` is a randomly initialised model of T5-large's shape with the
bundled tokenizer (no download); the anchor for it is ~14 s per (task, k) cell for a
sequential PEFT loop on an H200. ``--model tiny-llama-shape`` is a decoder-only model of the
tiny T5's size (bench/decoder_shape.py); its LoRAs adapt what ``target_modules: auto`` gives
for Llama (q_proj, v_proj), with no other setting changed.

    python bench/transfer_grid.py --model tiny-llama-shape --tasks 2 --test-size 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from decoder_shape import NAME as DECODER_SHAPE
from decoder_shape import build_tiny_llama
from itransfer.config import load_config
from itransfer.eval.results import ResultsTable
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer
from itransfer.models import DEFAULT_MODEL, load_model_and_tokenizer, save_model


def model_source(kind: str, workdir: Path) -> str:
    if kind == "tiny":
        return DEFAULT_MODEL
    if kind == DECODER_SHAPE:
        return str(build_tiny_llama(workdir / DECODER_SHAPE))
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = load_model_and_tokenizer(DEFAULT_MODEL).tokenizer
    shape = T5Config(
        vocab_size=len(tokenizer), d_model=1024, d_kv=64, d_ff=2816, num_layers=24,
        num_decoder_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    target = workdir / "t5-large-shape"
    save_model(T5ForConditionalGeneration(shape), tokenizer, target)
    return str(target)


def run(engine: str, source: str, overrides: list[str], out: Path, device: str) -> dict:
    config = load_config(None, [*overrides, f"eval.engine={engine}"])
    session = open_session(config, source, out, accelerator=Accelerator(cpu=device == "cpu"))
    if device != "cpu":
        torch.cuda.synchronize()
    started = time.perf_counter()
    evaluate_transfer(session)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    frame = ResultsTable(out).read()
    cells = frame["cell"].nunique()
    losses = frame[(frame["metric"] == "loss") & (frame["split"] == "test")]
    return {
        "engine": engine, "seconds": seconds, "cells": int(cells),
        "cells_per_s": cells / seconds, "seconds_per_cell": seconds / cells,
        "losses": dict(zip(losses["cell"].str.replace(r"\|[0-9a-f]+$", "", regex=True),
                           losses["value"], strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="Default: every unseen task.")
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", choices=["tiny", "t5-large-shape", DECODER_SHAPE],
                        default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-source-length", type=int, default=512)
    parser.add_argument("--cells-per-group", type=int, default=64)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="More config overrides, for both engines.")
    parser.add_argument("--engines", default="batched,peft",
                        help="Comma-separated: batched, peft (the ratio needs both).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="itransfer-grid-"))
    try:
        source = model_source(args.model, workdir)
        overrides = [
            "eval.shots=[0, 5, 10, 20, 40]", "eval.transfer_contexts=[none]",
            f"data.splits.unseen_test_size={args.test_size}",
            f"eval.max_new_tokens={args.max_new_tokens}",
            f"model.max_source_length={args.max_source_length}",
            f"eval.cells_per_group={args.cells_per_group}",
            *args.overrides,
        ]
        if args.tasks is not None:
            overrides.append(f"eval.max_tasks={args.tasks}")
        engines = args.engines.split(",")
        results = {
            engine: run(engine, source, overrides, workdir / engine, args.device)
            for engine in ("batched", "peft") if engine in engines
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'engine':12}{'cells':>7}{'seconds':>10}{'cells/s':>10}{'s/cell':>9}")
    for result in results.values():
        print(f"{result['engine']:12}{result['cells']:7d}{result['seconds']:10.1f}"
              f"{result['cells_per_s']:10.3f}{result['seconds_per_cell']:9.2f}")
    names = {"batched": "batched", "peft": "sequential"}  # the recorded JSONs' keys
    summary: dict = {names[key]: {k: v for k, v in result.items() if k != "losses"}
                     for key, result in results.items()}
    if len(results) == 2:
        batched, sequential = results["batched"], results["peft"]
        gaps = [abs(batched["losses"][key] - value)
                for key, value in sequential["losses"].items()]
        summary["speedup"] = ratio = sequential["seconds"] / batched["seconds"]
        summary["max_loss_gap"] = max(gaps)
        print(f"speed-up of the batched engine: {ratio:.2f}x; "
              f"max |test-loss difference| between engines: {max(gaps):.2e} "
              "(same dropout masks; float32 rounding only)")
    if args.json is not None:
        summary["args"] = {key: str(value) for key, value in vars(args).items()}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
