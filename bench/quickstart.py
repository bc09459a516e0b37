"""Time the quickstart as a whole process and per stage.

    python bench/quickstart.py [--out runs/quickstart-bench] [--json bench/results-quickstart.json]

Runs ``itransfer quickstart`` in a fresh folder as a subprocess (so interpreter start-up and
imports count), then prints the wall time and the per-stage timings the run recorded in its
manifest. The budget is 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUDGET_SECONDS = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    executable = Path(sys.executable).with_name("itransfer")
    started = time.perf_counter()
    subprocess.run([str(executable), "quickstart", "--out", str(args.out)], check=True)
    wall = time.perf_counter() - started
    manifest = json.loads((args.out / "manifest.json").read_text(encoding="utf-8"))
    timings = manifest["timings"]
    print(f"{'stage':40}{'seconds':>10}")
    for stage, seconds in timings.items():
        print(f"{stage:40}{seconds:10.1f}")
    print(f"{'(stages total)':40}{sum(timings.values()):10.1f}")
    print(f"{'whole process':40}{wall:10.1f}   budget {BUDGET_SECONDS} s: "
          f"{'within' if wall <= BUDGET_SECONDS else 'OVER'}")
    if args.json is not None:
        args.json.write_text(json.dumps({"wall_seconds": wall, "stages": timings}, indent=2))


if __name__ == "__main__":
    main()
