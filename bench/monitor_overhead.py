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


def _config(steps: int | None, *, monitor: bool) -> ExperimentConfig:
    overrides = [f"train.steps={steps}"] if steps is not None else []
    overrides.append("train.tensorboard=false")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the quickstart's)")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).with_name("results-monitor_overhead-cpu.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
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
