"""Mutation testing of the modules whose bugs change a scientific number (issue 27).

    python bench/mutants.py                         # every group below; minutes to an hour
    python bench/mutants.py --groups sampling,splits --out bench/results-mutants-cpu.json
    python bench/mutants.py --groups findings --keep /tmp/m-findings \
        --only 'itransfer.analysis.verdicts.*'     # one module's mutants; the copy kept

    python bench/mutants.py --groups findings --sample 150 --keep /tmp/m-findings
    python bench/mutants.py --groups findings --sample 150 --keep /tmp/m-findings --reuse

With --keep, the scratch copy stays at that folder: `mutmut results` and `mutmut show NAME`
there list the survivors; --reuse tests its mutants again with this checkout's tests/ (after
tests were added; mutmut keeps each mutant's earlier result unless it is named, so a run
stopped midway goes on where it stopped); --tally counts the kept copy's results as they stand.
--survivors-of DIR tests, in a fresh copy, only what a run kept at DIR left alive (its
survivors, the mutants no test reached and any it did not run) with this checkout's tests, and
records the counts before and after: a whole group is tested once, and the tests written
against its survivors are measured in minutes. With --sample N, only a seeded sample of N of
the mutants the earlier run did not reach is tested, and the group's score is estimated from
the mutants tested whole and that sample (with the sample's Wilson interval); with --only GLOB,
every mutant matching GLOB is tested too (a function changed since). A group's test
list can grow between the two runs (mutmut would discard a kept copy's results when its test
selection changes).
--sample N tests a random sample of N of the group's mutants (a fixed seed,
so that a rerun tests the same ones) and gives the score with its 95 % (Wilson) interval: a
group of thousands of mutants whose tests build whole reports takes hours on shared cores.

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
import fnmatch
import json
import math
import os
import random
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
    "token_losses": (["encoding/token_losses.py"], ["test_token_losses.py"]),
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
                  "test_report_robustness.py", "test_schema.py",
                  # written against the first whole run's survivors (issue 27)
                  "test_transfer_section.py", "test_samplers_section.py",
                  "test_trajectory_section.py", "test_mixing_section.py",
                  "test_section_tables.py", "test_section_figures.py",
                  "test_samplers_figures.py"]),
    "multilora": (["eval/multilora.py"], ["test_multilora.py"]),
    "schedule": (["train/recipe.py"], ["test_train_recipe.py"]),
}


def run_group(name: str, modules: list[str], tests: list[str], mutmut: str, *,
              keep: Path | None = None, reuse: bool = False, only: str | None = None,
              sample: int | None = None, sample_seed: int = 0, children: int = 2,
              tally_only: bool = False, survivors_of: Path | None = None) -> dict:
    earlier = _exit_codes(survivors_of) if survivors_of is not None else {}
    with tempfile.TemporaryDirectory(prefix=f"mutants-{name}-") as scratch:
        copy = keep if keep is not None else Path(scratch) / "repo"
        if tally_only:
            # A kept copy's results as they stand (a long run resumed in several goes)
            return tally(_exit_codes(copy), modules, tests, mutmut, copy)
        if reuse and (copy / "mutants").is_dir():
            # the mutants and mutmut's test map stay; the tests are this checkout's
            shutil.rmtree(copy / "tests")
            shutil.copytree(REPO / "tests", copy / "tests",
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            if copy.exists():
                shutil.rmtree(copy)
            _prepare(copy, modules, tests)
        started = time.perf_counter()
        # mutmut forks each mutant's test run from a process that has already run torch: a
        # forked child entering an OpenMP parallel region can spin forever on the parent's
        # thread pool (and then dies of mutmut's CPU limit, counted as a time-out, minutes
        # later). One intra-op thread per child avoids the pool; two children use both cores.
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        command = [mutmut, "run", "--max-children", str(children)]
        names: list[str] | None = None
        total = 0
        unrun: list[str] = []
        if survivors_of is not None:
            # What an earlier run left alive (survived, reached by no test, or timed out, which
            # on loaded cores can be a slow test rather than a hang), tested again with this
            # checkout's tests, and what it did not run (all, or a seeded sample of --sample):
            # the same source gives the same mutant names.
            names = sorted(key for key, code in earlier.items()
                           if _STATUS.get(code) in ("survived", "untested", "timeout"))
            unrun = sorted(key for key, code in earlier.items() if code is None)
            total = len(unrun)
            if sample is not None:
                unrun = sorted(random.Random(sample_seed).sample(unrun, min(sample, total)))
            names += unrun
            if only:
                # A function changed since that run: every mutant of it is new
                earlier = {key: code for key, code in earlier.items()
                           if not fnmatch.fnmatch(key, only)}
                names = [key for key in names if not fnmatch.fnmatch(key, only)] + [only]
        elif sample is not None:
            # Generate every mutant (and mutmut's map of tests) without testing any, then test
            # a random sample of them: a score with a confidence interval in a fraction of the
            # time, where the whole group takes hours on shared cores.
            if not (copy / "mutants").is_dir():
                subprocess.run([*command, "no-such-mutant"], cwd=copy, capture_output=True,
                               text=True, env=env)
            every = sorted(_exit_codes(copy))
            total = len(every)
            names = sorted(random.Random(sample_seed).sample(every, min(sample, len(every))))
        elif only:
            names = [only]
        done = subprocess.run([*command, *(names or [])], cwd=copy, capture_output=True,
                              text=True, env=env)
        seconds = time.perf_counter() - started
        codes = _exit_codes(copy)
        if not codes:
            return {"modules": modules, "error": (done.stdout + done.stderr)[-2000:]}
        if survivors_of is not None:
            changed = {key for key in codes if only and fnmatch.fnmatch(key, only)}
            if set(codes) - changed != set(earlier):
                return {"modules": modules, "error": f"the mutants differ from {survivors_of}'s:"
                        " the source changed since that run (name the changed function's "
                        "mutants with --only)"}
            before = tally(earlier, modules, tests, mutmut, survivors_of, show=False)
            codes = earlier | {key: codes[key] for key in [*names, *changed] if key in codes}
        elif names is not None:
            codes = {key: code for key, code in codes.items()
                     if key in names or fnmatch.fnmatch(key, names[0])}
        row = tally(codes, modules, tests, mutmut, copy) | {"seconds": round(seconds, 1)}
        if survivors_of is not None:
            row["before"] = {key: value for key, value in before.items()
                             if key not in ("modules", "tests", "survivors")}
            if sample is not None:
                row["unrun_sample"] = _sample_estimate(
                    {key: codes[key] for key in unrun}, total, sample_seed,
                    {key: code for key, code in codes.items() if key in earlier
                     and earlier[key] is not None})
    if sample is not None and survivors_of is None:
        row |= {"sample": len(codes), "of": total, "sample_seed": sample_seed,
                "score_ci95": [round(bound, 3) for bound in _wilson(row["detected"],
                                                                    row["judged"])]}
    survivors = row.pop("survivors")
    return row | {"survivors": survivors}


def tally(codes: dict[str, int | None], modules: list[str], tests: list[str], mutmut: str,
          copy: Path, *, show: bool = True) -> dict:
    """The group's counts and score, the same per module, and each survivor's changed line."""
    row = {"modules": modules, "tests": tests, **_counts(codes.values())}
    by_module: dict[str, list[int | None]] = {module: [] for module in modules}
    for key, code in codes.items():
        by_module.setdefault(_module_of(key), []).append(code)
    row["by_module"] = {module: _counts(module_codes)
                        for module, module_codes in by_module.items()}
    survivors = sorted(key for key, code in codes.items() if _STATUS.get(code) == "survived")
    # the changed line of each survivor, so that equivalent mutants can be named in a line
    row["survivors"] = {key: _changed_lines(subprocess.run(
        [mutmut, "show", key], cwd=copy, capture_output=True, text=True).stdout)
        if show else "" for key in survivors}
    return row


def _sample_estimate(sampled: dict[str, int | None], of: int, seed: int,
                     whole: dict[str, int | None]) -> dict:
    """A seeded sample of the mutants an earlier run did not reach: its score with Wilson's
    interval, and the group's score estimated from the mutants run whole and the sample."""
    part = _counts(sampled.values())
    known = _counts(whole.values())
    estimate = (known["detected"] + part["score"] * of) / max(1, known["judged"] + of)
    return {"sample": len(sampled), "of": of, "sample_seed": seed, **part,
            "score_ci95": [round(bound, 3) for bound in _wilson(part["detected"],
                                                                part["judged"])],
            "group_score_estimate": round(estimate, 3)}


def _counts(codes) -> dict:
    """How many mutants of each status, and the score: detected / all that ran or no test
    reached (a mutant in code that none of the group's tests reaches counts as not detected)."""
    counts = {status: 0 for status in ("killed", "survived", "untested", "timeout",
                                       "suspicious", "not run")}
    for code in codes:
        counts[_STATUS.get(code, "suspicious")] += 1
    detected = counts["killed"] + counts["timeout"]
    judged = detected + counts["survived"] + counts["untested"]
    return {**{key.replace(" ", "_"): value for key, value in counts.items()},
            "detected": detected, "judged": judged,
            "score": round(detected / max(1, judged), 3)}


def _module_of(key: str) -> str:
    """`itransfer.analysis.sections.mixing.x_name__mutmut_3` -> `analysis/sections/mixing.py`."""
    parts = key.split(".")
    # a function's mutants are x_NAME__mutmut_N, a method's x\u01c1CLASS\u01c1NAME__mutmut_N
    end = next(index for index, part in enumerate(parts) if part.startswith(("x_", "x\u01c1")))
    return "/".join(parts[1:end]) + ".py"


# mutmut's exit codes of a mutant's test run (mutmut.stats.status_by_exit_code)
_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "untested", 33: "untested",
           36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
           None: "not run"}


def _prepare(copy: Path, modules: list[str], tests: list[str]) -> None:
    """A copy of the checkout with the group's mutmut configuration."""
    caches = shutil.ignore_patterns(".venv", "mutants", ".git", "__pycache__", ".pytest_cache",
                                    ".ruff_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # The checkout's own runs/ (outputs), not the package's itransfer/runs/ (code).
        top = {"runs"} if Path(folder).resolve() == REPO.resolve() else set()
        return set(caches(folder, names)) | (top & set(names))

    shutil.copytree(REPO, copy, ignore=ignore)
    # mutmut stops a mutant's run at its first failing test (-x) but runs the tests in no set
    # order: fastest first (by the durations its stats run measured) kills most mutants in the
    # cheap tests (1.5x the mutants per minute on the findings group). mutmut's clean run, which
    # must pass before any mutant is tested, runs the tests in this order too.
    (copy / "conftest.py").write_text(_FASTEST_FIRST, encoding="utf-8")
    config = {
        "paths_to_mutate": [f"{SRC}/{module}" for module in modules],
        "tests_dir": [f"tests/{test}" for test in tests],
        "also_copy": ["tests", SRC, "conftest.py"],
        "pytest_add_cli_args": ["-q", "-p", "no:cacheprovider", "-m", "not slow"],
        # mutmut's CPU limit per mutant is 2 x multiplier x the tests' time; its default of
        # 15 lets one mutant that loops forever hold a core for minutes.
        "timeout_multiplier": 5.0,
    }
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
    with (copy / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(f"\n[tool.mutmut]\n{lines}\n")


_FASTEST_FIRST = '''"""A mutant's tests, fastest first (bench/mutants.py)."""
import json
from pathlib import Path


def pytest_collection_modifyitems(session, config, items):
    stats = Path("mutmut-stats.json")
    if stats.is_file():
        durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
        items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
'''


def _exit_codes(copy: Path) -> dict[str, int | None]:
    """Every generated mutant of the copy and its test run's exit code (None: not run)."""
    codes: dict[str, int | None] = {}
    for meta in (copy / "mutants").rglob("*.meta"):
        codes |= json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
    return codes


def _wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95 % interval of a proportion (the score of a sample of mutants)."""
    if total == 0:
        return (0.0, 1.0)
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (
        1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


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
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: reuse the kept mutants, with this checkout's tests")
    parser.add_argument("--sample", type=int, default=None,
                        help="test a random sample of this many of each group's mutants")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--survivors-of", type=Path, default=None,
                        help="a copy kept from a full run: test again only its survivors (and "
                             "the mutants no test reached), with this checkout's tests")
    parser.add_argument("--tally", action="store_true",
                        help="with --keep: count the kept copy's results as they stand, run none")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    if args.keep is not None and "," in args.groups:
        parser.error("--keep takes one group")
    if args.tally and args.keep is None:
        parser.error("--tally reads a copy kept with --keep")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    results = {}
    for name in args.groups.split(","):
        modules, tests = GROUPS[name]
        results[name] = run_group(name, modules, tests, mutmut, keep=args.keep,
                                  reuse=args.reuse, only=args.only, sample=args.sample,
                                  sample_seed=args.sample_seed, children=args.max_children,
                                  tally_only=args.tally, survivors_of=args.survivors_of)
        row = results[name]
        if "error" in row:
            print(f"{name:>14}: mutmut failed: {row['error'][-300:]}", flush=True)
        else:
            took = f" in {row['seconds']:.0f} s" if "seconds" in row else ""
            print(f"{name:>14}: {row['killed']:>4} killed, {row['survived']:>4} survived "
                  f"({row['score']:.1%}){took}", flush=True)
            for module, counts in row["by_module"].items():
                print(f"{'':>16}{module}: {counts['detected']} / {counts['judged']} "
                      f"({counts['score']:.1%})", flush=True)
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
