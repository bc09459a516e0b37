"""What the transfer monitor (``train.monitor``) costs: the quickstart's training run with the
monitor off and on (its defaults), in this one process.

    python bench/monitor_overhead.py                 # the quickstart's 240 steps, CPU
    python bench/monitor_overhead.py --steps 2000    # the quickstart's small scale

A short warm-up run comes first (imports, the tokenized training set's cache, the first
forward passes), then the run without the monitor, then the run with it, each in a fresh run
folder. Reported: each run's wall time, the overhead ratio (on - off) / off, the probes' own
time (the ``seconds`` of their rows) over the run without the monitor, and ``probe_share``: the
probes' time over the rest of the monitored run, measured within that one run, so that a change
in the machine's load between the two runs (2 shared cores) does not move it. The two runs'
training losses are compared too: the monitor must not change them.

    python bench/monitor_overhead.py --shape t5-large   # the paper's model's layer shapes

``--shape`` measures the same ratio at another model's shape, in one run: a model with that
shape's layers and widths (random weights, the bundled tokenizer's vocabulary; built here,
nothing is downloaded) trains the quickstart's data for a few steps, logging each step's
throughput, with the monitor's step-0 probe first. A probe's time over a training step's (the
mean over the steps after the first, a warm-up) gives the probe's cost in training
steps, and from it the monitor's share at the default ``every_steps``, on a long run and on the
quickstart's 240 steps. T5-large's full fine-tuning holds ~12 GB of weights, gradients and
AdamW state; its batch of 16 is taken in 2 micro-batches to stay within ~20 GB of memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from itransfer.config.packaged import packaged_config
from itransfer.config.schema import ExperimentConfig
from itransfer.experiments.definition import load_experiment

# The layer shapes of google/t5-{small,large}-lm-adapt (T5 v1.1: gated-GELU, untied head).
SHAPES: dict[str, dict[str, Any]] = {
    "t5-small": {"d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8,
                 "num_decoder_layers": 8, "num_heads": 6},
    "t5-large": {"d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24,
                 "num_decoder_layers": 24, "num_heads": 16},
}


def _config(steps: int | None, *, monitor: bool, extra: list[str] | None = None
            ) -> ExperimentConfig:
    overrides = [f"train.steps={steps}"] if steps is not None else []
    overrides.append("train.tensorboard=false")
    overrides.extend(extra or [])
    if monitor:
        overrides.append("train.monitor={}")
    return load_experiment(packaged_config("quickstart"), overrides=overrides).variants[
        "it-proportional"]


def _train(config: ExperimentConfig, out: Path) -> tuple[float, list[dict[str, Any]]]:
    from itransfer.eval.monitor import monitor_for
    from itransfer.train.loop import instruction_tune

    started = time.perf_counter()
    result = instruction_tune(config, out, monitor=monitor_for(config))
    return time.perf_counter() - started, result.log


def _shaped_model(shape: str, out: Path) -> int:
    """A randomly initialised T5 with ``shape``'s layers and the bundled model's tokenizer."""
    import torch
    from transformers import T5ForConditionalGeneration

    from itransfer.models.loading import load_model_and_tokenizer

    bundled = load_model_and_tokenizer(_config(None, monitor=False).model.name_or_path)
    config = bundled.model.config
    for key, value in {**SHAPES[shape], "feed_forward_proj": "gated-gelu",
                       "tie_word_embeddings": False}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(out, safe_serialization=True)
    bundled.tokenizer.save_pretrained(out)
    return model.num_parameters()


def measure_shape(shape: str, steps: int) -> dict[str, Any]:
    """The monitor's cost at ``shape``, from one run: its step-0 probe against its steps."""
    import statistics

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model_dir = root / "model"
        parameters = _shaped_model(shape, model_dir)
        extra = [f"model.name_or_path={model_dir}", "train.log_every=1",
                 "train.gradient_accumulation=2", "train.checkpoint_every=1000000",
                 "train.warmup_steps=1"]
        config = _config(steps, monitor=True, extra=extra)
        _, log = _train(config, root / "run")
    probe = next(row["monitor"] for row in log if "monitor" in row)
    batch = config.train.batch_size
    step_seconds = [batch / row["samples_per_s"] for row in log
                    if "loss" in row and row["step"] > 1]
    # The mean, not the median: the quickstart batches examples of similar lengths together,
    # so steps differ by their batches' lengths, and a run's time is the sum of its steps.
    step = statistics.fmean(step_seconds)
    monitor = config.train.monitor
    assert monitor is not None and monitor.every_steps is not None
    quickstart_steps = _config(None, monitor=False).train.steps or 0
    quickstart_probes = 1 + quickstart_steps // monitor.every_steps
    return {
        "shape": shape, "layers": SHAPES[shape],
        "parameters": parameters,
        "monitor": monitor.model_dump(mode="json"),
        "steps": steps, "batch_size": batch,
        "micro_batches": config.train.gradient_accumulation,
        "step_seconds": [round(value, 2) for value in step_seconds],
        "mean_step_seconds": round(step, 2),
        "probe_seconds": round(probe["seconds"], 2),
        "probe_in_steps": round(probe["seconds"] / step, 2),
        # A probe every `every_steps` steps of a long run.
        "long_run_share": round(probe["seconds"] / (monitor.every_steps * step), 4),
        # The quickstart's length: its step-0 probe and one every `every_steps`.
        "quickstart_share": round(quickstart_probes * probe["seconds"]
                                  / (quickstart_steps * step), 4),
        "probe": {key: probe[key] for key in ("finetune_loss", "icl_loss", "k", "tasks",
                                               "test_items")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the quickstart's)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="measure at this model's layer shapes instead (one run)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the numbers go (default: bench/results-monitor_overhead-"
                             "cpu.json, or …-<shape>-shape-cpu.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.shape is not None:
        result = measure_shape(args.shape, args.steps or 4)
        path = args.json or Path(__file__).with_name(
            f"results-monitor_overhead-{args.shape}-shape-cpu.json")
        print(json.dumps(result, indent=1))
        path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        return
    args.json = args.json or Path(__file__).with_name("results-monitor_overhead-cpu.json")
    steps = args.steps or _config(None, monitor=False).train.steps or 0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _train(_config(4, monitor=True).model_copy(deep=True), root / "warm-up")
        off_seconds, off_log = _train(_config(steps, monitor=False), root / "off")
        on_seconds, on_log = _train(_config(steps, monitor=True), root / "on")
    probes = [row["monitor"] for row in on_log if "monitor" in row]
    probe_seconds = sum(probe["seconds"] for probe in probes)
    losses_on = [row["loss"] for row in on_log if "loss" in row]
    losses_off = [row["loss"] for row in off_log if "loss" in row]
    monitor = _config(steps, monitor=True).train.monitor
    assert monitor is not None
    result = {
        "steps": steps,
        "monitor": monitor.model_dump(mode="json"),
        "probes": len(probes),
        "probe_steps": [row["step"] for row in on_log if "monitor" in row],
        "seconds_off": round(off_seconds, 2),
        "seconds_on": round(on_seconds, 2),
        "overhead_ratio": round((on_seconds - off_seconds) / off_seconds, 4),
        "probe_seconds": round(probe_seconds, 2),
        "probe_ratio": round(probe_seconds / off_seconds, 4),
        # Within the monitored run alone: robust to the load of a shared machine changing
        # between the two runs, which the two ratios above are not.
        "probe_share": round(probe_seconds / (on_seconds - probe_seconds), 4),
        "same_losses": losses_on == losses_off,
        "final_probe": {key: probes[-1][key] for key in
                        ("finetune_loss", "icl_loss", "spearman", "k", "tasks", "test_items")},
    }
    print(json.dumps(result, indent=1))
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
