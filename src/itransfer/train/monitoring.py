"""Watching transfer while training runs: the hook the training loop calls, not the probe.

The loop knows a :class:`Monitor` only through this protocol; the concrete one (few-shot LoRA
transfer and ICL on probe tasks) is built from the evaluation parts in
:mod:`itransfer.eval.monitor`, which training must not import. A probe must leave the training
run exactly as it was, so that the monitor changes no loss and no weight (tests/test_monitor.py
checks both bit for bit):

* every RNG it could draw from is forked or saved and put back (torch on every device in use,
  Python's ``random``, numpy's global state), so the next batch and dropout mask are the same;
* the model goes to eval mode for it and back to the mode it was in;
* it runs on the main process alone (the others wait at the next step's collective), since its
  LoRA steps are not synchronised and under FSDP the weights are shards;
* the optimizer, scheduler, sampler and batch stream are not handed to it at all.

Each probe appends one row ``{"step": s, "monitor": {...}}`` to ``train_log.jsonl`` (readers of
training rows skip rows without ``loss``; the log is read through
:mod:`itransfer.runs.monitor_log`, which evaluation uses too) and goes to TensorBoard and W&B as
``monitor/<name>`` scalars. A run that resumes keeps the rows up to its checkpoint, these
included (the probe of a step runs before that step's checkpoint is saved).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from accelerate import DistributedType

from itransfer.config.schema import ExperimentConfig
from itransfer.errors import ConfigError
from itransfer.runs.monitor_log import MONITOR_KEY, monitor_rows
from itransfer.runs.probe import Monitor, ProbeContext
from itransfer.train.recipe import TrainState, append_log

logger = logging.getLogger(__name__)

# The probe values that go to TensorBoard and W&B as `monitor/<name>` scalars.
SCALARS = ("finetune_loss", "icl_loss", "spearman", "seconds")


@contextmanager
def isolated(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, draw from any RNG and switch ``model``'s mode freely: on leaving, the
    RNG states and the mode are what they were."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    was_training = model.training
    with torch.random.fork_rng(devices=devices):
        try:
            model.eval()
            yield
        finally:
            model.train(was_training)
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class ForgettingWatch:
    """Says once, in one line, when the transfer loss rises above its step-0 value by more
    than ``margin`` (forgetting has started), and once when it comes back within it."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.baseline: float | None = None
        self.forgetting = False

    def observe(self, step: int, loss: float | None, *, quiet: bool = False) -> bool:
        """Take the probe of ``step``; returns whether the run is forgetting now. ``quiet``
        replays a resumed run's earlier probes without saying again what was said."""
        if loss is None:
            return self.forgetting
        if self.baseline is None:
            self.baseline = loss
            return False
        above = loss > self.baseline + self.margin
        if above != self.forgetting and not quiet:
            if above:
                logger.warning(
                    "step %d: transfer loss %.4f is above its step-0 value %.4f by more than "
                    "%.3g: forgetting has started", step, loss, self.baseline, self.margin)
            else:
                logger.warning(
                    "step %d: transfer loss %.4f is back within %.3g of its step-0 value %.4f",
                    step, loss, self.margin, self.baseline)
        self.forgetting = above
        return above


class MonitorHook:
    """What the training loop holds: when to probe, the probe itself isolated from training,
    and where its row goes."""

    def __init__(self, monitor: Monitor | None, *, forgetting_margin: float) -> None:
        self.monitor = monitor
        self.watch = ForgettingWatch(forgetting_margin)

    @classmethod
    def for_run(cls, monitor: Monitor | None, config: ExperimentConfig) -> MonitorHook:
        """The hook of a run; without a monitor, one that does nothing."""
        monitor_config = config.train.monitor
        margin = monitor_config.forgetting_margin if monitor_config else 0.0
        return cls(monitor, forgetting_margin=margin)

    def begin(self, state: TrainState) -> None:
        """Before the first step: prepare the probe, replay a resumed run's earlier probes, and
        probe step 0 when the run starts fresh."""
        if self.monitor is None:
            return
        if state.accelerator.distributed_type == DistributedType.FSDP:
            raise ConfigError("train.monitor does not run under FSDP yet (the probe needs whole "
                              "weights); leave train.monitor unset for this run")
        if not state.is_main_process:
            return
        self.monitor.start(ProbeContext(state.tokenizer, state.architecture,
                                        state.accelerator.device, state.out_dir))
        for row in monitor_rows(state.log):
            self.watch.observe(row["step"], row[MONITOR_KEY].get("finetune_loss"), quiet=True)
        if state.it_step == 0:
            self.probe(state)

    def after_step(self, state: TrainState) -> None:
        if self.monitor is not None and state.is_main_process and self.monitor.due(state.it_step):
            self.probe(state)

    def probe(self, state: TrainState) -> dict[str, Any]:
        """Measure now, log the row, and keep the probe's time out of the throughput."""
        started = time.perf_counter()
        assert self.monitor is not None
        model = state.accelerator.unwrap_model(state.model)
        with isolated(model):
            values = self.monitor.measure(model, state.it_step)
        values["forgetting"] = self.watch.observe(state.it_step, values.get("finetune_loss"))
        row = {"step": state.it_step, MONITOR_KEY: values}
        append_log(state, row)  # the main process's: the probe runs there alone
        scalars = {f"monitor/{key}": float(values[key]) for key in SCALARS
                   if values.get(key) is not None}
        for sink in state.sinks:
            sink.log_scalars(state.it_step, scalars)
        state.throughput.leave_out(time.perf_counter() - started)
        return row
