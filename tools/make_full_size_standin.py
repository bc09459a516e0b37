"""Build a full-size stand-in for the SNI repository from a slice of it, for scale tests.

    python tools/make_full_size_standin.py ../shared/data/sni-slice/tasks /tmp/sni-full
    python tools/make_full_size_standin.py SRC OUT --tasks 400 --instances 1600000  # a quarter

The real repository has 1,616 task files and ~5M instances (~3 GB of JSON); a scale problem
(memory that grows with instances, a first step that waits for all of them) only shows at that
size. Each output task is a copy of a slice task (cycling through them, so the categories,
domains and sources, and with them the paper's seen/unseen/held-out split, keep the slice's
proportions) under a new name, with an instance count drawn from the slice's ``tasks.tsv``
column ``instances_in_sni`` (the real SNI counts, up to 6,500 a task) and scaled so the total
is ``--instances``. Instances cycle through the source task's own, with fresh ids. Seeded: the
same arguments write the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

FULL_SIZE_TASKS = 1616
FULL_SIZE_INSTANCES = 6_400_000


def sni_instance_counts(slice_tasks_dir: Path) -> list[int]:
    """The real per-task instance counts the slice's tasks.tsv records (or the files' own)."""
    table = slice_tasks_dir.parent / "tasks.tsv"
    if table.is_file():
        with table.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if rows and "instances_in_sni" in rows[0]:
            return [int(row["instances_in_sni"]) for row in rows]
    return [len(json.loads(path.read_text(encoding="utf-8"))["Instances"])
            for path in sorted(slice_tasks_dir.glob("task*.json"))]


def planned_counts(real_counts: list[int], num_tasks: int, total: int, seed: int) -> list[int]:
    """``num_tasks`` counts drawn from ``real_counts``, scaled to sum to about ``total``."""
    rng = random.Random(seed)
    drawn = [rng.choice(real_counts) for _ in range(num_tasks)]
    scale = total / sum(drawn)
    return [max(150, round(count * scale)) for count in drawn]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a tasks/ folder of SNI task files")
    parser.add_argument("out", type=Path, help="the stand-in's tasks/ folder (created)")
    parser.add_argument("--tasks", type=int, default=FULL_SIZE_TASKS)
    parser.add_argument("--instances", type=int, default=FULL_SIZE_INSTANCES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sources = sorted(args.source.glob("task*.json"))
    if not sources:
        sys.exit(f"{args.source}: no task*.json files")
    counts = planned_counts(sni_instance_counts(args.source), args.tasks, args.instances,
                            args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for number, count in enumerate(counts):
        source = sources[number % len(sources)]
        data = json.loads(source.read_text(encoding="utf-8"))
        # Keep the source's name after the number, so its category-revealing words stay.
        name = f"task{10000 + number}_{source.stem.split('_', 1)[1]}"
        originals = data["Instances"]
        data["Instances"] = [
            {**originals[i % len(originals)], "id": f"{name}-{i}"} for i in range(count)
        ]
        (args.out / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False),
                                               encoding="utf-8")
        written += count
        if number % 100 == 0:
            print(f"{number + 1}/{len(counts)} tasks, {written:,} instances", flush=True)
    print(f"wrote {len(counts)} tasks, {written:,} instances to {args.out}")


if __name__ == "__main__":
    main()
