"""Does a full-scale run fall over? Memory, start-up time and disk on a full-size SNI stand-in.

    python bench/full_scale.py --standin /tmp/sni-full/tasks             # data + training rows
    python bench/full_scale.py --standin /tmp/sni-full/tasks --steps 300  # a shorter run
    python bench/full_scale.py --parts model --model t5-large-shape       # real model sizes

``--standin`` is built first when missing, by ``tools/make_full_size_standin.py`` from the
shared slice (1,616 task files, 6.4M instances, ~2.6 GB of JSON). Every measurement runs the
real CLI in a fresh process with its own cache folder, sampling the process tree's RSS
(``psutil``) every 0.2 s:

* ``data_summary``: ``itransfer data summary`` cold (empty index cache) and warm;
* ``train_cold``: ``itransfer train`` with an empty cache: the index and the tokenized training
  set are built, then ``--cold-steps`` steps; time to the first step, build time, peak RSS;
* ``train_warm``: the same run again: time to the first step, RSS at step 100 and at the last
  step (the growth between them is what grows with steps), peak RSS;
* ``eval_seen`` (``--parts eval``): ``itransfer eval seen`` over every seen task with a few
  instances each: time and peak RSS of a pass over all the task files;
* ``grid`` (``--parts grid``): the transfer grid planned over every evaluation task with the
  default shots and contexts, then every task's encoded test items held at once, as the grid
  held them before it encoded them cell by cell: what each holds (``bench/full_scale_grid.py``);
* ``model`` (``--parts model``): a T5-large-shaped (or ~1B Llama-shaped) model from a local
  config: a few training steps, a checkpoint, an exact resume, and one transfer cell with each
  LoRA engine, with times, peak RSS and the checkpoint's size on disk.

Targets (issue 12): peak RSS per process <= 2 GB with the bundled model and flat from step 100
to the last step; first step <= 30 s with a warm cache. The JSON records each with pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED_SLICE = REPO.parent / "shared" / "data" / "sni-slice" / "tasks"
RSS_TARGET_GB = 2.0
FIRST_STEP_TARGET_S = 30.0
FLAT_TOLERANCE_MB = 50.0  # "beyond noise": allocator and page-cache jitter over a run


class RssSampler:
    """The summed RSS of a process and its children, sampled on a thread.

    Each sample also keeps the file-backed part (``shared``: pages of memory-mapped files such
    as the tokenized cache, which the kernel can drop at will), so growth can be split into
    anonymous memory (what a leak grows) and touched file pages (what reading the cache grows).
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (s since start, RSS MB, file MB)
        self.peak_single_mb = 0.0  # the largest single process (the target is per process)
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.process, *self.process.children(recursive=True)]
                sizes, files = [], []
                for process in processes:
                    try:
                        info = process.memory_info()
                    except psutil.Error:
                        continue
                    sizes.append(info.rss / 2**20)
                    files.append(getattr(info, "shared", 0) / 2**20)
                self.samples.append((time.perf_counter() - self._started, sum(sizes), sum(files)))
                self.peak_single_mb = max([self.peak_single_mb, *sizes])
            except psutil.Error:
                break
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max((sample[1] for sample in self.samples), default=0.0)

    def at(self, seconds: float) -> float | None:
        """The RSS (MB) sampled closest to ``seconds`` after the start."""
        if not self.samples:
            return None
        return min(self.samples, key=lambda sample: abs(sample[0] - seconds))[1]


def run_measured(command: list[str], env: dict[str, str], log_file: Path | None = None,
                 timeout: float = 7200) -> dict[str, Any]:
    """Run ``command``; its wall time, peak RSS, and (with ``log_file``) when each step logged."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    sampler = RssSampler(process.pid)
    step_times: dict[int, float] = {}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        if log_file is not None and log_file.is_file():
            for line in log_file.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                step_times.setdefault(int(row["step"]), time.perf_counter() - started)
        if time.perf_counter() - started > timeout:
            process.kill()
        time.sleep(0.2)
    reader.join()
    sampler.stop()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{''.join(output[-40:])}")
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": round(sampler.peak_mb, 1),
        "peak_rss_single_process_mb": round(sampler.peak_single_mb, 1),
        "sampler": sampler,
        "step_times": step_times,
        "output": "".join(output),
    }


def ensure_standin(folder: Path, num_tasks: int | None) -> dict[str, Any]:
    if not folder.is_dir() or not any(folder.glob("task*.json")):
        size = [] if num_tasks is None else [
            "--tasks", str(num_tasks), "--instances", str(num_tasks * 3960)]
        subprocess.run([sys.executable, str(REPO / "tools" / "make_full_size_standin.py"),
                        str(SHARED_SLICE), str(folder), *size], check=True)
    files = list(folder.glob("task*.json"))
    return {"path": str(folder), "task_files": len(files),
            "gigabytes": round(sum(f.stat().st_size for f in files) / 1e9, 2)}


def itransfer(*args: str) -> list[str]:
    return [sys.executable, "-m", "itransfer", *args]


def bench_data_summary(standin: Path, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    command = itransfer("data", "summary", "--sni-dir", str(standin), "--json")
    cold = run_measured(command, env)
    warm = run_measured(command, env)
    summary = json.loads(warm["output"][warm["output"].index("{"):])
    counts = {group: len(names) for group, names in summary.items() if isinstance(names, list)}
    return {"cold_s": round(cold["seconds"], 1), "cold_peak_rss_mb": cold["peak_rss_mb"],
            "warm_s": round(warm["seconds"], 2), "warm_peak_rss_mb": warm["peak_rss_mb"],
            "group_sizes": counts or None}


def bench_train(standin: Path, out: Path, env: dict[str, str], steps: int, *, warm: bool,
                batch_size: int) -> dict[str, Any]:
    command = itransfer(
        "train", "--out", str(out),
        "--set", f"data.sni_dir={standin}", "--set", f"train.steps={steps}",
        "--set", f"train.batch_size={batch_size}", "--set", "train.log_every=1",
        "--set", "train.tensorboard=false", "--set", "train.warmup_steps=10",
    )
    measured = run_measured(command, env, log_file=out / "train_log.jsonl")
    step_times, sampler = measured["step_times"], measured["sampler"]
    first = step_times.get(1)
    row: dict[str, Any] = {
        "steps": steps, "batch_size": batch_size, "seconds": round(measured["seconds"], 1),
        "seconds_to_first_step": round(first, 1) if first is not None else None,
        "peak_rss_mb": measured["peak_rss_mb"],
        "peak_rss_single_process_mb": measured["peak_rss_single_process_mb"],
    }
    early = min(100, steps // 2)
    if early in step_times and steps in step_times:
        row |= {f"rss_mb_at_step_{early}": round(sampler.at(step_times[early]), 1),
                f"rss_mb_at_step_{steps}": round(sampler.at(step_times[steps]), 1)}
        # One sample swings by a batch's activations (±200 MB for the longest batches), so
        # growth is judged on medians over a tenth of the run: just after step ``early``,
        # and the last tenth.
        span = max(1, steps // 10)
        opening = _window(sampler, step_times, early, min(steps, early + span))
        closing = _window(sampler, step_times, max(early, steps - span), steps)
        if opening and closing:
            row |= {
                "rss_window_steps": [[early, min(steps, early + span)],
                                     [max(early, steps - span), steps]],
                "rss_median_mb": [opening["rss"], closing["rss"]],
                "rss_growth_mb": round(closing["rss"] - opening["rss"], 1),
                "rss_growth_anonymous_mb": round(closing["anonymous"] - opening["anonymous"], 1),
                "rss_growth_file_backed_mb": round(closing["file"] - opening["file"], 1),
            }
        # RSS every ~10% of the run: a curve shows a trend that two points cannot.
        marks = sorted({max(1, round(steps * i / 10)) for i in range(1, 11)} & set(step_times))
        row["rss_mb_by_step"] = {str(step): round(sampler.at(step_times[step]), 1)
                                 for step in marks}
    if not warm:
        row["seconds_steps"] = round(measured["seconds"] - (first or 0.0), 1)
    return row


def _window(sampler: RssSampler, step_times: dict[int, float], start: int,
            stop: int) -> dict[str, float] | None:
    """Median RSS, anonymous and file-backed MB over the samples taken from step ``start`` to
    step ``stop``."""
    if start not in step_times or stop not in step_times:
        return None
    samples = [s for s in sampler.samples if step_times[start] <= s[0] <= step_times[stop]]
    if not samples:
        return None
    return {"rss": round(statistics.median(s[1] for s in samples), 1),
            "anonymous": round(statistics.median(s[1] - s[2] for s in samples), 1),
            "file": round(statistics.median(s[2] for s in samples), 1)}


def bench_eval_seen(standin: Path, out: Path, env: dict[str, str], cap: int) -> dict[str, Any]:
    """``itransfer eval seen`` over every seen task (``cap`` instances per task and split) with
    the bundled model: evaluation walks all the task files, so what it keeps of them shows."""
    command = itransfer("eval", "seen", "--out", str(out), "--sni-dir", str(standin),
                        "--set", f"eval.seen_max_instances={cap}")
    measured = run_measured(command, env)
    sampler = measured["sampler"]
    anonymous = max((rss - file for _, rss, file in sampler.samples), default=0.0)
    return {"seconds": round(measured["seconds"], 1), "instances_per_task_and_split": cap,
            "peak_rss_mb": measured["peak_rss_mb"],
            "peak_rss_anonymous_mb": round(anonymous, 1)}


def bench_grid(standin: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """What the planned transfer grid holds, against all its test items held at once."""
    script = REPO / "bench" / "full_scale_grid.py"
    measured = run_measured([sys.executable, str(script), "--standin", str(standin),
                             "--work", str(work)], env)
    result = json.loads(measured["output"].strip().splitlines()[-1])
    return result | {"peak_rss_mb": measured["peak_rss_mb"],
                     "seconds": round(measured["seconds"], 1)}


def bench_model(model: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """A few steps, a checkpoint, an exact resume and one transfer cell per engine."""
    script = REPO / "bench" / "full_scale_model.py"
    measured = run_measured([sys.executable, str(script), "--model", model,
                             "--work", str(work)], env)
    result = json.loads(measured["output"].strip().splitlines()[-1])
    return result | {"peak_rss_mb": measured["peak_rss_mb"],
                     "seconds": round(measured["seconds"], 1)}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    warm = result.get("train_warm", {})
    checks: dict[str, Any] = {}
    if "peak_rss_single_process_mb" in warm:
        checks["peak_rss_per_process_le_2gb"] = warm["peak_rss_single_process_mb"] <= (
            RSS_TARGET_GB * 1024)
    if "rss_growth_anonymous_mb" in warm:
        # Anonymous memory is what a leak grows; file-backed pages of the memory-mapped cache
        # are the node's page cache, shared by its processes and dropped under pressure.
        checks["rss_flat_over_run"] = warm["rss_growth_anonymous_mb"] <= FLAT_TOLERANCE_MB
    if warm.get("seconds_to_first_step") is not None:
        checks["first_step_warm_le_30s"] = warm["seconds_to_first_step"] <= FIRST_STEP_TARGET_S
    return checks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", type=Path, default=Path(tempfile.gettempdir()) / "sni-full"
                        / "tasks")
    parser.add_argument("--parts", default="data,train",
                        help="data, cold, warm, eval, grid, model (comma list; train = cold,warm)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the index and tokenized cache here (default: a scratch folder "
                             "removed at the end), so a later --parts warm reuses a cold build")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the warm-cache run")
    parser.add_argument("--cold-steps", type=int, default=20,
                        help="steps of the cold-cache run (it measures the build and start-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-cap", type=int, default=2,
                        help="instances per seen task and split in the eval part")
    parser.add_argument("--standin-tasks", type=int, default=None,
                        help="build a smaller stand-in (this many task files; a quick check)")
    parser.add_argument("--model", default="t5-large-shape",
                        choices=["t5-large-shape", "llama-1b-shape", "tiny"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-full_scale-cpu.json")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if "train" in parts:
        parts |= {"cold", "warm"}

    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result |= {"machine": {"cpus": os.cpu_count(),
                           "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="full-scale-") as scratch:
        work = Path(scratch)
        cache = args.cache or work / "cache"
        env = {**os.environ, "ITRANSFER_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
        if parts & {"data", "cold", "warm", "eval", "grid"}:
            result["standin"] = ensure_standin(args.standin, args.standin_tasks)
        if "data" in parts:
            result["data_summary"] = bench_data_summary(args.standin, cache, env)
            print("data summary:", result["data_summary"], flush=True)
        if "cold" in parts:
            if (cache / "tokenized").is_dir() and any((cache / "tokenized").iterdir()):
                sys.exit(f"--parts cold needs an empty cache, and {cache / 'tokenized'} is not")
            result["train_cold"] = bench_train(args.standin, work / "cold", env, args.cold_steps,
                                               warm=False, batch_size=args.batch_size)
            metas = list((cache / "tokenized").glob("*/itransfer_meta.json"))
            if metas:
                meta = json.loads(metas[0].read_text())
                result["train_cold"] |= {"cache_build_s": meta["build_seconds"],
                                         "cached_examples": meta["rows"]}
            cache_bytes = sum(f.stat().st_size for f in (cache / "tokenized").rglob("*")
                              if f.is_file())
            result["tokenized_cache_gb"] = round(cache_bytes / 1e9, 2)
            print("train, cold cache:", result["train_cold"], flush=True)
        if "warm" in parts:
            result["train_warm"] = bench_train(args.standin, work / "warm", env, args.steps,
                                               warm=True, batch_size=args.batch_size)
            print("train, warm cache:", result["train_warm"], flush=True)
        if "eval" in parts:
            result["eval_seen"] = bench_eval_seen(args.standin, work / "eval", env, args.eval_cap)
            print("eval seen:", result["eval_seen"], flush=True)
        if "grid" in parts:
            result["grid_plan"] = bench_grid(args.standin, work, env)
            print("transfer grid plan:", result["grid_plan"], flush=True)
        if "model" in parts:
            result.setdefault("models", {})[args.model] = bench_model(args.model, work, env)
            print(args.model, result["models"][args.model], flush=True)
    result["targets"] = targets(result)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["targets"]), "->", args.out)


if __name__ == "__main__":
    main()
