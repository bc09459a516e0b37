"""What planning the transfer grid holds at full size: the plan, and the encoded test items.

    python bench/full_scale_grid.py --standin /tmp/sni-full/tasks --work /tmp/x

Run by ``bench/full_scale.py --parts grid`` (which measures its peak RSS); prints one JSON line
last. With the default config (every evaluation task, k in {0, 5, 10, 20, 40}, both contexts,
100 test items a task) it plans the grid as ``itransfer eval transfer`` does, then encodes the
test items of every task and context and holds them all, as the grid did before it encoded them
cell by cell (:class:`itransfer.eval.transfer.HeldTestItems`): the RSS each of the two holds is
the memory a grid process saves.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import psutil

from itransfer.config.schema import load_config
from itransfer.eval.session import open_session
from itransfer.eval.transfer import HeldTestItems, plan_cells
from itransfer.models.loading import DEFAULT_MODEL


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--max-tasks", type=int, default=None,
                        help="only the first N tasks of each evaluation group (a quick check)")
    args = parser.parse_args()
    overrides = [f"data.sni_dir={args.standin}"]
    if args.max_tasks:
        overrides.append(f"eval.max_tasks={args.max_tasks}")
    session = open_session(load_config(None, overrides), DEFAULT_MODEL, args.work / "grid")
    opened = rss_mb()
    start = time.perf_counter()
    work, _ = plan_cells(session)
    plan_seconds = time.perf_counter() - start
    planned = rss_mb()
    start = time.perf_counter()
    held = HeldTestItems(session)
    held.keep_only(work)  # every task and context at once: what the grid used to hold
    all_items = [held.of(cell) for cell in work]
    encode_seconds = time.perf_counter() - start
    holding_all = rss_mb()
    keys = {(cell.task.name, cell.cell.context) for cell in work}
    tokens = sum(len(item.example.source_ids) + len(item.example.target_ids)
                 for items in {id(items): items for items in all_items}.values()
                 for item in items)
    print(json.dumps({
        "tasks": len({cell.task.name for cell in work}), "cells": len(work),
        "task_contexts": len(keys), "encoded_tokens": tokens,
        "plan_seconds": round(plan_seconds, 1), "encode_all_seconds": round(encode_seconds, 1),
        "rss_session_open_mb": round(opened, 1), "rss_after_plan_mb": round(planned, 1),
        "plan_holds_mb": round(planned - opened, 1),
        "all_test_items_held_mb": round(holding_all - planned, 1),
        "per_task_context_mb": round((holding_all - planned) / max(len(keys), 1), 2),
    }))


if __name__ == "__main__":
    main()
