"""Examples per second of the two encoding paths, side by side in one run.

    python bench/encoding.py                                   # the bundled slice, every context
    python bench/encoding.py --tasks /tmp/sni-full/tasks --max-tasks 60 --contexts exemplars
    python bench/encoding.py --out bench/results-encoding-cpu.json

* ``joined`` is the path before issue 22 (and still the one for chat templates and tokenizers
  whose pieces do not join): every source's whole rendered text is tokenized, and a source over
  the budget searches for its cut by tokenizing candidate texts.
* ``assembled`` is the default: a task's context is tokenized once, inputs and targets in one
  batch call each, cuts decided on token counts.

Both encode the same instances (every instance of each task file, parsed before timing) with
the bundled tokenizer, a T5-style seq2seq layout and each ``--budgets`` source length; the
script also checks that they give the same ids. The ratio is joined seconds / assembled seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from itransfer.data.contexts import CONTEXTS, build_context
    from itransfer.data.sni import parse_task
    from itransfer.encoding.examples import ExampleEncoder
    from itransfer.models.loading import bundled_model_dir, load_model_and_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=Path, default=REPO / "src/itransfer/bundled/sni/tasks")
    parser.add_argument("--max-tasks", type=int, default=None)
    parser.add_argument("--contexts", default=",".join(sorted(CONTEXTS)))
    parser.add_argument("--budgets", default="128,512", help="model.max_source_length values")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    files = sorted(args.tasks.glob("task*.json"))[: args.max_tasks]
    tasks = [parse_task(path) for path in files]
    instances = sum(len(task.instances) for task in tasks)
    tokenizer = load_model_and_tokenizer(bundled_model_dir()).tokenizer
    print(f"{len(tasks)} tasks, {instances:,} instances from {args.tasks}", flush=True)
    rows = []
    for context in args.contexts.split(","):
        for budget in (int(b) for b in args.budgets.split(",")):
            encoder = ExampleEncoder(tokenizer, "seq2seq", build_context(context, 3),
                                     max_source_length=budget, max_target_length=128)
            timings, outputs = {}, {}
            for path_name, assembles in (("joined", False), ("assembled", True)):
                encoder.assembles = assembles
                started = time.perf_counter()
                outputs[path_name] = [list(encoder.encode_task(task, task.instances))
                                      for task in tasks]
                timings[path_name] = time.perf_counter() - started
            row = {
                "context": context, "max_source_length": budget,
                "joined_examples_per_s": round(instances / timings["joined"]),
                "assembled_examples_per_s": round(instances / timings["assembled"]),
                "ratio": round(timings["joined"] / timings["assembled"], 2),
                "same_ids": outputs["joined"] == outputs["assembled"],
            }
            rows.append(row)
            print(f"{context:>22} {budget:>5}: joined {row['joined_examples_per_s']:>6,}/s  "
                  f"assembled {row['assembled_examples_per_s']:>6,}/s  "
                  f"x{row['ratio']:<5}  same ids: {row['same_ids']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({
            "tasks_dir": str(args.tasks), "tasks": len(tasks), "instances": instances,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
            "python": sys.version.split()[0], "rows": rows,
        }, indent=1) + "\n", encoding="utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
