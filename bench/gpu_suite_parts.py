"""The parts of ``bench/gpu_suite.py``: setup, training throughput (SNI lengths and fixed
shapes), the transfer grid with each engine, and two processes.

Each part writes its figures into the suite's results; the suite times, guards and records
them. The measuring itself is ``bench/train_throughput.py``'s and ``bench/transfer_grid.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import T5Config

from gpu_suite import (
    BENCH_DIR,
    GRACE_S,
    PartSkipped,
    Sizes,
    ratio,
    t5_train_flops_per_sample,
)
from itransfer.config.schema import ExperimentConfig
from itransfer.models.loading import load_model_and_tokenizer, model_facts, save_model
from train_throughput import (
    MODEL_SHAPES,
    build_model_dir,
    fixed_example,
    run_hf,
    run_itransfer,
    throughput_config,
)
from transfer_grid import loss_gaps, run

TRAINING_PRECISION = "bf16"  # autocast over fp32 weights and AdamW state, as the anchor's loop


@dataclass
class PartContext:
    """What the parts share: the options, the sizes, the device and the models built once."""

    args: argparse.Namespace
    sizes: Sizes
    device: str
    workdir: Path
    model_dir: Path | None = None  # float32 weights: what training starts from
    grid_model_dir: Path | None = None  # the same weights saved in bfloat16: the grid's checkpoint

    def setup(self, results: dict[str, Any], deadline: float) -> None:
        """The model every part starts from, randomly initialised once, saved twice."""
        self.model_dir = build_model_dir(self.sizes.model, self.workdir, device=self.device)
        # evaluate loads a checkpoint in the dtype it was saved in: a bf16 checkpoint runs the
        # grid in bf16 (LoRA adapters stay float32) through the same code as the CLI.
        loaded = load_model_and_tokenizer(self.model_dir, dtype="bfloat16")
        self.grid_model_dir = save_model(loaded.model, loaded.tokenizer,
                                         self.workdir / "grid-model")
        facts = model_facts(self.model_dir)
        results["model"] = {
            "shape": self.sizes.model, **MODEL_SHAPES[self.sizes.model],
            "vocab_size": facts.vocab_size if facts else None,
            "parameters": facts.num_parameters if facts else None,
            "training": f"{TRAINING_PRECISION} autocast over float32 weights",
            "grid_checkpoint_dtype": "bfloat16",
        }

    def _training_config(self, steps: int) -> ExperimentConfig:
        assert self.model_dir is not None
        sizes = self.sizes
        return throughput_config(
            self.model_dir, steps=steps, batch_size=sizes.batch_size, context="exemplars",
            precision=TRAINING_PRECISION, max_source_length=sizes.max_source_length,
            max_target_length=sizes.max_target_length, sni_dir=self.args.sni_dir,
        )

    def train_sni(self, results: dict[str, Any], deadline: float) -> None:
        """itransfer vs HF Seq2SeqTrainer on the SNI length distribution, 3-exemplar contexts."""
        config = self._training_config(self.sizes.steps_sni)
        part = results["train"]["sni"] = {
            "context": "exemplars (3)", "max_source_length": self.sizes.max_source_length,
            "max_target_length": self.sizes.max_target_length,
            "batch_size": self.sizes.batch_size, "steps": self.sizes.steps_sni,
        }
        self._both_trainers(part, config, deadline, fixed=None, folder="sni")

    def train_fixed(self, results: dict[str, Any], deadline: float) -> None:
        """Both trainers at fixed shapes; MFU from the model FLOPs of one example."""
        sizes = self.sizes
        shape = T5Config.from_pretrained(self.model_dir)
        example = fixed_example(sizes.fixed_source, sizes.fixed_target, shape.vocab_size)
        part = results["train"]["fixed"] = {
            "source_length": sizes.fixed_source, "target_length": sizes.fixed_target,
            "batch_size": sizes.batch_size, "steps": sizes.steps_fixed,
            "flops_per_sample": t5_train_flops_per_sample(
                shape, sizes.fixed_source, sizes.fixed_target),
        }
        config = self._training_config(sizes.steps_fixed)
        self._both_trainers(part, config, deadline, fixed=example, folder="fixed")

    def _both_trainers(
        self, part: dict[str, Any], config: ExperimentConfig, deadline: float, *,
        fixed: Any, folder: str,
    ) -> None:
        assert self.model_dir is not None
        halfway = time.perf_counter() + (deadline - time.perf_counter()) / 2
        part["itransfer"] = with_step_time(run_itransfer(
            config, self.workdir / folder, fixed=fixed, deadline=halfway), config)
        free_memory()
        part["hf"] = with_step_time(run_hf(
            config, self.model_dir, self.device, self.workdir / folder, fixed=fixed,
            deadline=deadline), config)

    def _grid_overrides(self, tasks: int) -> list[str]:
        sizes = self.sizes
        overrides = [
            f"eval.shots={list(sizes.shots)}", "eval.transfer_contexts=[none]",
            f"data.splits.unseen_test_size={sizes.test_size}",
            f"eval.max_new_tokens={sizes.max_new_tokens}",
            f"model.max_source_length={sizes.max_source_length}", f"eval.max_tasks={tasks}",
            *sizes.grid_overrides, *self.args.grid_set,
        ]
        if self.args.sni_dir is not None:
            overrides.append(f"data.sni_dir={self.args.sni_dir}")
        return overrides

    def grid_batched(self, results: dict[str, Any], deadline: float) -> None:
        results["grid"]["batched"] = self._grid("batched", self.sizes.grid_tasks, deadline)

    def grid_sequential(self, results: dict[str, Any], deadline: float) -> None:
        grid = results["grid"]
        grid["sequential"] = self._grid("peft", self.sizes.sequential_tasks, deadline)
        gaps = loss_gaps(engine_losses(grid, "batched"), grid["sequential"]["losses"])
        grid["max_loss_gap"] = max(gaps) if gaps else None
        grid["loss_gap_cells"] = len(gaps)

    def _grid(self, engine: str, tasks: int, deadline: float) -> dict[str, Any]:
        result = run(engine, str(self.grid_model_dir), self._grid_overrides(tasks),
                     self.workdir / f"grid-{engine}", self.device, deadline=deadline)
        result["tasks"] = tasks
        result["s_per_cell"] = result.pop("seconds_per_cell")
        return result

    def ddp(self, results: dict[str, Any], deadline: float) -> None:
        """A few training steps as two processes (``accelerate launch``), timed by rank 0."""
        gpus = torch.cuda.device_count() if self.device == "cuda" else 0
        wanted = self.args.ddp
        if wanted == "off" or (wanted == "auto" and gpus < 2):
            note = (f"{gpus} GPU(s) visible: two processes need 2+ (--ddp on runs them on "
                    "CPUs too)" if wanted == "auto" else "--ddp off")
            results["ddp"] = {"status": "skipped", "note": note}
            raise PartSkipped(note)
        assert self.model_dir is not None
        out = self.workdir / "ddp.json"
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", TRAINING_PRECISION, "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), str(BENCH_DIR / "gpu_suite.py"),
            "--ddp-worker", str(out), "--model-dir", str(self.model_dir),
            "--budget", str(max(deadline - time.perf_counter(), 1.0)),
            *(["--smoke"] if self.args.smoke else []),
            *(["--sni-dir", str(self.args.sni_dir)] if self.args.sni_dir else []),
        ]
        env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if self.device == "cpu" else {})}
        # Killed before the suite's hard limit (GRACE_S past the deadline) would interrupt
        # this process and leave the launched ones running.
        returncode, stderr = run_process_group(
            command, env, timeout=deadline - time.perf_counter() + GRACE_S / 2)
        if returncode is None:
            results["ddp"] = {"cut_short": True, "note": "two-process run past its budget: "
                              "stopped, no figures"}
            return
        if returncode != 0 or not out.is_file():
            raise RuntimeError(f"two-process run exited {returncode}: {stderr[-2000:]}")
        measured = json.loads(out.read_text(encoding="utf-8"))
        one_process = results["train"].get("sni", {}).get("itransfer", {}).get("samples_per_s")
        results["ddp"] = {**measured, "scaling_vs_one_process":
                          ratio(measured.get("samples_per_s"), one_process)}


def ddp_worker(args: argparse.Namespace, sizes: Sizes) -> int:
    """One of the two processes: itransfer's training step on the SNI lengths; rank 0 writes
    the figures to ``args.ddp_worker``."""
    deadline = time.perf_counter() + args.budget
    context = PartContext(args=args, sizes=sizes, device="cuda" if torch.cuda.is_available()
                          else "cpu", workdir=args.ddp_worker.parent, model_dir=args.model_dir)
    config = context._training_config(sizes.ddp_steps)
    # Only rank 0 writes into the run folder (its run record; no checkpoint is saved).
    measured = run_itransfer(config, args.ddp_worker.parent / "ddp-run", deadline=deadline)
    state = PartialState()  # the processes' group, which the run's accelerator set up
    if state.is_main_process:
        measured["processes"] = state.num_processes
        measured["batch_size_global"] = sizes.batch_size
        args.ddp_worker.write_text(json.dumps(measured, indent=2), encoding="utf-8")
    return 0


def with_step_time(measured: dict[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    samples_per_s = measured.get("samples_per_s")
    measured["step_s"] = config.train.batch_size / samples_per_s if samples_per_s else None
    return measured


def engine_losses(grid: dict[str, Any], engine: str) -> dict[str, float]:
    """An engine's test loss per cell; empty when that engine did not run."""
    return grid.get(engine, {}).get("losses", {})


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_process_group(command: list[str], env: dict[str, str], *, timeout: float
                      ) -> tuple[int | None, str]:
    """Run ``command`` in its own process group; past ``timeout`` the whole group (the
    launcher and the processes it started) is killed and the exit code is None."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, ""
    return process.returncode, stderr
