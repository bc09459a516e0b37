"""Few-shot transfer grid: the sequential PEFT engine vs the batched multi-adapter engine.

Both engines run the same grid of cells (tasks × k ∈ {0, 5, 10, 20, 40}, context ``none``,
the paper's LoRA settings), training and evaluation included (test loss and greedy
generation on each task's test instances), in this one process; the script prints wall time,
cells/s, the seconds per cell spent training, on test loss and generating, the ratio, and how
far apart the two engines' test losses are. ``bench/gpu_suite.py`` runs the grid through
:func:`run` too.

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
import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from accelerate import Accelerator

import itransfer.eval.inference as inference_module
import itransfer.eval.multilora as multilora_module
import itransfer.eval.session as session_module
import itransfer.eval.transfer as transfer_module
from decoder_shape import NAME as DECODER_SHAPE
from decoder_shape import build_tiny_llama
from itransfer.config.schema import load_config
from itransfer.eval.results import ResultsTable
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer, plan_cells
from itransfer.models.loading import DEFAULT_MODEL
from train_throughput import build_model_dir, synchronize


def model_source(
    kind: str, workdir: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> str:
    """The model both engines start from: the bundled one, or a shape saved in ``dtype``
    (``evaluate`` loads a checkpoint in the dtype it was saved in)."""
    if kind == "tiny" and dtype == torch.float32:
        return DEFAULT_MODEL
    if kind == DECODER_SHAPE:
        return str(build_tiny_llama(workdir / DECODER_SHAPE))
    return str(build_model_dir(kind, workdir, dtype=dtype, device=device, name="grid-model"))


class GridCut(Exception):
    """The grid ran past its deadline; the cells written so far stand."""


# Where the grid's time goes, wrapped where the engines look them up: each engine's LoRA
# training, the evaluation of test items (encoder, test loss and generation) and, within it,
# generation; test loss is evaluation minus generation.
_PHASES = (
    (transfer_module, "train_cell_peft", "train"),
    (multilora_module, "train_cells_batched", "train"),
    (session_module, "evaluate_items", "evaluate"),
    (inference_module, "_generate", "generate"),
)


@contextmanager
def phase_seconds() -> Iterator[dict[str, float]]:
    """Seconds spent in each phase inside the block (GPU work waited for at both ends)."""
    totals = {"train": 0.0, "evaluate": 0.0, "generate": 0.0}

    def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            synchronize()
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize()
                totals[phase] += time.perf_counter() - started

        return wrapper

    with ExitStack() as patches:
        for module, name, phase in _PHASES:
            patches.enter_context(
                mock.patch.object(module, name, timed(phase, getattr(module, name)))
            )
        yield totals


def run(
    engine: str, source: str, overrides: list[str], out: Path, device: str,
    *, deadline: float | None = None,
) -> dict[str, Any]:
    """One engine over the grid: wall time, seconds per cell by phase, test losses per cell.

    Past ``deadline`` (a ``perf_counter`` time) the grid stops at the engine's next progress
    report; the figures are then over the cells it finished (``cut_short``).
    """
    config = load_config(None, [*overrides, f"eval.engine={engine}"])
    session = open_session(config, source, out, accelerator=Accelerator(cpu=device == "cpu"))
    order = [item.cell for item in plan_cells(session)[0]]  # the order the engine runs them in
    finished_at: list[float] = []

    def progress(what: str, done: float, total: int) -> None:
        if done == int(done) and int(done) > len(finished_at):
            finished_at.append(time.perf_counter())
        if deadline is not None and time.perf_counter() > deadline and done < total:
            raise GridCut

    synchronize()
    started = time.perf_counter()
    cut_short = False
    with phase_seconds() as phases:
        try:
            evaluate_transfer(session, progress=progress)
        except GridCut:
            cut_short = True
    synchronize()
    seconds = time.perf_counter() - started
    frame = ResultsTable(out).read()
    cells = int(frame["cell"].nunique()) if len(frame) else 0
    losses = frame[(frame["metric"] == "loss") & (frame["split"] == "test")] if cells else frame
    result: dict[str, Any] = {
        "engine": engine, "seconds": seconds, "cells": cells, "planned_cells": len(order),
        "cut_short": cut_short,
        "losses": dict(zip(losses["cell"].str.replace(r"\|[0-9a-f]+$", "", regex=True)
                           .str.split("|", n=3).str[3], losses["value"], strict=True))
        if cells else {},
    }
    per_cell = (lambda value: value / cells) if cells else (lambda value: None)
    result |= {
        "cells_per_s": cells / seconds if cells else None,
        "seconds_per_cell": per_cell(seconds),
        "train_s_per_cell": per_cell(phases["train"]),
        "loss_s_per_cell": per_cell(phases["evaluate"] - phases["generate"]),
        "generate_s_per_cell": per_cell(phases["generate"]),
        "other_s_per_cell": per_cell(seconds - phases["train"] - phases["evaluate"]),
        "phase_seconds": dict(phases),
    }
    if engine == "peft":  # one cell at a time: each cell's own wall time, by k
        starts = [started, *finished_at[:-1]]
        cell_seconds = [end - begin for begin, end in zip(starts, finished_at, strict=True)]
        by_k: dict[int, list[float]] = {}
        for cell, spent in zip(order, cell_seconds, strict=False):  # fewer when cut short
            by_k.setdefault(cell.shots, []).append(spent)
        result["s_per_cell_by_k"] = {k: sum(v) / len(v) for k, v in sorted(by_k.items())}
    return result


def loss_gaps(first: dict[str, float], second: dict[str, float]) -> list[float]:
    """|test-loss difference| of each cell both engines finished."""
    return [abs(first[key] - value) for key, value in second.items() if key in first]


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
        source = model_source(args.model, workdir, device=args.device)
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
    print(f"{'engine':12}{'cells':>7}{'seconds':>10}{'cells/s':>10}{'s/cell':>9}"
          f"{'train':>8}{'loss':>8}{'generate':>10}")
    for result in results.values():
        print(f"{result['engine']:12}{result['cells']:7d}{result['seconds']:10.1f}"
              f"{result['cells_per_s']:10.3f}{result['seconds_per_cell']:9.2f}"
              f"{result['train_s_per_cell']:8.2f}{result['loss_s_per_cell']:8.2f}"
              f"{result['generate_s_per_cell']:10.2f}")
    names = {"batched": "batched", "peft": "sequential"}  # the recorded JSONs' keys
    summary: dict = {names[key]: {k: v for k, v in result.items() if k != "losses"}
                     for key, result in results.items()}
    if len(results) == 2:
        batched, sequential = results["batched"], results["peft"]
        gaps = loss_gaps(batched["losses"], sequential["losses"])
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
