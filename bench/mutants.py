"""Mutation testing of the modules whose bugs change a scientific number (issue 27).

    python bench/mutants.py                         # every group below; minutes to an hour
    python bench/mutants.py --groups sampling,splits --out bench/results-mutants-cpu.json
    python bench/mutants.py --groups findings --keep /tmp/m-findings \
        --only 'itransfer.analysis.verdicts.*'     # one module's mutants; the copy kept

With --keep, the scratch copy stays at that folder: `mutmut results` and `mutmut show NAME`
there list the survivors, and `mutmut run NAME...` re-runs some once its tests/ are updated.

For each group, `mutmut` (3.x) mutates the group's modules in a scratch copy of the checkout and
runs only the group's own tests against each mutant (not the whole suite). A mutant the tests
kill is a small bug they catch; a survivor is one they let through, or an equivalent mutant
(a change with no observable effect). The score is detected / all, where a mutant is detected
when a test fails on it or it runs past mutmut's time limit (a hang the suite would show); one
in code that no test of the group reaches counts as not detected. The target is >= 90 % per
group. Not part of CI's time budget: `make mutants` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = "src/itransfer"
# group: (modules mutated, the tests that target them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "sampling": (["sampling/rates.py", "sampling/samplers.py"],
                 ["test_sampling.py", "test_sampler_choice.py", "test_rates_edges.py"]),
    "batching": (["data/batching.py"], ["test_batching.py"]),
    "splits": (["data/splits.py"], ["test_splits.py"]),
    "selection": (["data/selection.py"], ["test_selection.py"]),
    "contexts": (["data/contexts.py"], ["test_contexts.py", "test_encoding_paths.py"]),
    "metrics": (["eval/metrics.py", "eval/scoring_files.py"],
                ["test_metrics.py", "test_scoring_files.py"]),
    "token_losses": (["token_losses.py"], ["test_token_losses.py"]),
    # The statistics (Spearman, partial, paired tests, bootstraps, the category-block bootstrap)
    # and the seeds behind the fine-tuning numbers with their spread.
    "correlations": (["analysis/correlations.py", "analysis/significance.py",
                      "analysis/block_bootstrap.py", "analysis/seeds.py"],
                     ["test_analysis.py", "test_partial_correlation.py", "test_verdicts.py",
                      "test_significance.py", "test_block_bootstrap.py",
                      "test_report_robustness.py"]),
    # The verdict machinery and the sections' evaluators (with their analyses and figures since
    # each section became one module: runs before that mutated analysis/findings.py alone).
    "findings": (["analysis/verdicts.py",
                  *(f"analysis/sections/{key}.py" for key in ("transfer", "data_limits",
                                                              "samplers", "trajectory",
                                                              "mixing"))],
                 ["test_verdicts.py", "test_analysis.py", "test_sections.py",
                  "test_report_robustness.py"]),
    "multilora": (["eval/multilora.py"], ["test_multilora.py"]),
    "schedule": (["train/recipe.py"], ["test_train_recipe.py"]),
}
COUNTS = re.compile(r"🎉 (\d+) 🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)\s+🔇 (\d+)")


def run_group(name: str, modules: list[str], tests: list[str], mutmut: str, *,
              keep: Path | None = None, only: str | None = None, children: int = 2) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutants-{name}-") as scratch:
        copy = keep if keep is not None else Path(scratch) / "repo"
        if keep is not None and keep.exists():
            shutil.rmtree(keep)
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
            ".venv", "mutants", "runs", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"))
        config = {
            "paths_to_mutate": [f"{SRC}/{module}" for module in modules],
            "tests_dir": [f"tests/{test}" for test in tests],
            "also_copy": ["tests", SRC],
            "pytest_add_cli_args": ["-q", "-p", "no:cacheprovider", "-m", "not slow"],
            # mutmut's CPU limit per mutant is 2 x multiplier x the tests' time; its default of
            # 15 lets one mutant that loops forever hold a core for minutes.
            "timeout_multiplier": 5.0,
        }
        lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
        with (copy / "pyproject.toml").open("a", encoding="utf-8") as handle:
            handle.write(f"\n[tool.mutmut]\n{lines}\n")
        started = time.perf_counter()
        # mutmut forks each mutant's test run from a process that has already run torch: a
        # forked child entering an OpenMP parallel region can spin forever on the parent's
        # thread pool (and then dies of mutmut's CPU limit, counted as a time-out, minutes
        # later). One intra-op thread per child avoids the pool; two children use both cores.
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run([mutmut, "run", "--max-children", str(children),
                               *([only] if only else [])], cwd=copy,
                              capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        found = COUNTS.findall(done.stdout + done.stderr)
        if not found:
            return {"modules": modules, "error": (done.stdout + done.stderr)[-2000:]}
        killed, untested, timeout, suspicious, survived, _ = (int(n) for n in found[-1])
        listing = subprocess.run([mutmut, "results"], cwd=copy, capture_output=True, text=True)
        survivors = [line.split(":")[0].strip() for line in listing.stdout.splitlines()
                     if line.strip().endswith("survived")]
        # the changed line of each survivor, so that equivalent mutants can be named in a line
        changes = {name: _changed_lines(subprocess.run(
            [mutmut, "show", name], cwd=copy, capture_output=True, text=True).stdout)
            for name in survivors}
    # A mutant in code that none of the group's tests reaches counts as not detected.
    score = (killed + timeout) / max(1, killed + timeout + survived + untested)
    return {"modules": modules, "tests": tests, "killed": killed, "survived": survived,
            "untested": untested, "timeout": timeout, "suspicious": suspicious,
            "score": round(score, 3),
            "seconds": round(seconds, 1), "survivors": changes}


def _changed_lines(diff: str) -> str:
    """'-old  =>  +new' from a unified diff of one mutant (its removed and added lines)."""
    removed = [line[1:].strip() for line in diff.splitlines()
               if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return f"{' / '.join(removed)}  =>  {' / '.join(added)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the scratch copy here (one group only)")
    parser.add_argument("--only", default=None,
                        help="run only the mutants whose names match this glob")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    if args.keep is not None and "," in args.groups:
        parser.error("--keep takes one group")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    results = {}
    for name in args.groups.split(","):
        modules, tests = GROUPS[name]
        results[name] = run_group(name, modules, tests, mutmut, keep=args.keep,
                                  only=args.only, children=args.max_children)
        row = results[name]
        if "error" in row:
            print(f"{name:>14}: mutmut failed: {row['error'][-300:]}", flush=True)
        else:
            print(f"{name:>14}: {row['killed']:>4} killed, {row['survived']:>4} survived "
                  f"({row['score']:.0%}) in {row['seconds']:.0f} s", flush=True)
        if args.out:  # after each group, so that a long run interrupted keeps what it measured
            _save(args.out, {name: row})
    if args.out:
        print(f"written to {args.out}")


def _save(out: Path, rows: dict) -> None:
    """Merge rows into out; groups not run this time keep their earlier figures."""
    earlier = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    out.write_text(json.dumps(earlier | rows, indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")


if __name__ == "__main__":
    main()
