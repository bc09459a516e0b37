"""Real model sizes on the CPU: a few steps, a checkpoint, an exact resume, one cell per engine.

    python bench/full_scale_model.py --model t5-large-shape --work /tmp/x

Run by ``bench/full_scale.py --parts model`` (which measures its peak RSS); prints one JSON
line last. Short sources (256 tokens) and batch 2 keep a 780M-parameter step to seconds on a
CPU: the point is that nothing breaks at this size, not speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from accelerate import Accelerator
from safetensors.torch import load_file

from itransfer.config.schema import load_config
from itransfer.eval.results import ResultsTable
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer
from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer, save_model
from itransfer.train.loop import instruction_tune
from train_throughput import build_model_dir

STEPS = 3
SHAPES = ("tiny", "t5-large-shape", "llama-1b-shape")


def build_shape(kind: str, work: Path, layers: int | None = None) -> str:
    """The model to run: the bundled one, T5-large's shape, or TinyLlama-1.1B's (GQA 32/4,
    rotary); random weights and the bundled tokenizer, so nothing is downloaded."""
    if kind == "tiny":
        return DEFAULT_MODEL
    if kind != "llama-1b-shape":
        return str(build_model_dir(kind, work))
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_model_and_tokenizer(DEFAULT_MODEL).tokenizer
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632,
        num_hidden_layers=layers or 22, num_attention_heads=32, num_key_value_heads=4,
        max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    save_model(model, tokenizer, work / kind)
    return str(work / kind)


class PhasePeaks:
    """This process's peak RSS within each phase (sampled on a thread every 0.1 s), so a
    peak over the whole run can be told apart: training, the resume check, each engine."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peaks: dict[str, float] = {}
        self._current: str | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self._current is not None:
                rss = self.process.memory_info().rss / 2**30
                self.peaks[self._current] = max(self.peaks.get(self._current, 0.0), rss)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        gc.collect()  # what the last phase left behind is not this one's
        self._current = name
        self.peaks[name] = self.process.memory_info().rss / 2**30
        try:
            yield
        finally:
            self.peaks[name] = max(self.peaks[name], self.process.memory_info().rss / 2**30)
            self._current = None
            # As it ends: were the process killed for memory later, these lines remain.
            print(f"phase {name}: peak RSS {self.peaks[name]:.2f} GiB", file=sys.stderr,
                  flush=True)

    def report(self) -> dict[str, float]:
        self._stop.set()
        return {name: round(gb, 2) for name, gb in self.peaks.items()}


def folder_gb(folder: Path, pattern: str = "*") -> float:
    return round(sum(f.stat().st_size for f in folder.rglob(pattern) if f.is_file()) / 1e9, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=SHAPES, default="t5-large-shape")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=None,
                        help="llama-1b-shape with fewer layers (same width): a quick memory check")
    args = parser.parse_args()
    result: dict = {"model": args.model, "layers": args.layers}
    peaks = PhasePeaks()

    started = time.perf_counter()
    with peaks.phase("build"):
        source = build_shape(args.model, args.work, args.layers)
    result["build_s"] = round(time.perf_counter() - started, 1)
    overrides = [
        f"model.name_or_path={source}", "model.max_source_length=256",
        "model.max_target_length=32", "train.batch_size=2", f"train.steps={STEPS}",
        "train.warmup_steps=1", "train.log_every=1", "train.tensorboard=false",
    ]
    config = load_config(None, overrides)

    started = time.perf_counter()
    with peaks.phase("train"):
        unbroken = instruction_tune(config, args.work / "unbroken")
    result["train_s"] = round(time.perf_counter() - started, 1)
    checkpoint = unbroken.final_checkpoint
    result["checkpoint_gb"] = folder_gb(checkpoint)
    result["checkpoint_weights_gb"] = folder_gb(checkpoint, "model*.safetensors")

    started = time.perf_counter()
    with peaks.phase("stop_and_resume"):
        instruction_tune(config, args.work / "resumed", stop_after=STEPS - 1)
        resumed = instruction_tune(config, args.work / "resumed", resume=True)
    result["stop_and_resume_s"] = round(time.perf_counter() - started, 1)
    with peaks.phase("compare_weights"):  # two whole state dicts at once: the bench's, not src's
        a = load_file(str(checkpoint / "model.safetensors"))
        b = load_file(str(resumed.final_checkpoint / "model.safetensors"))
        result["resume_bit_exact"] = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
        del a, b
    result["losses_equal"] = [r["loss"] for r in unbroken.log] == [r["loss"] for r in resumed.log]

    cell = ["eval.shots=[5]", "eval.max_tasks=1", "eval.transfer_contexts=[none]",
            "data.splits.unseen_test_size=10", "eval.max_new_tokens=8", "eval.seeds=[0]"]
    for engine in ("batched", "peft"):
        eval_config = load_config(None, [*overrides, *cell, f"eval.engine={engine}"])
        out = args.work / f"eval-{engine}"
        started = time.perf_counter()
        with peaks.phase(f"cell_{engine}"):
            session = open_session(eval_config, str(checkpoint), out,
                                   accelerator=Accelerator(cpu=True))
            evaluate_transfer(session)
            del session
        frame = ResultsTable(out).read()
        result[f"cell_{engine}_s"] = round(time.perf_counter() - started, 1)
        result[f"cell_{engine}_cells"] = int(frame["cell"].nunique())
    result["peak_rss_gb_by_phase"] = peaks.report()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
