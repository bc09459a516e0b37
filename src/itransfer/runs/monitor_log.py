"""A training run's log as training writes it and evaluation and analysis read it, and the
checkpoint its transfer monitor says transfers best.

Instruction tuning appends its rows to ``<run>/train_log.jsonl`` (:mod:`itransfer.train.recipe`):
training rows (with a ``loss``) and, with ``train.monitor`` set, one probe row
``{"step": s, "monitor": {"finetune_loss": ..., "k": ..., ...}}`` per probe
(:mod:`itransfer.train.monitoring`, measured by :mod:`itransfer.eval.monitor`). Reading them lies
here, below both training and evaluation, so that evaluation can pick a checkpoint by them
without importing the trainer.

``--checkpoint best-transfer:RUN`` (:func:`resolve_checkpoint`) names the trajectory checkpoint
of the run in ``RUN`` whose monitored few-shot transfer loss (``finetune_loss``, the mean test
loss of the probe's LoRAs at its first k) is the lowest, among the steps that have both a probe
row and a saved checkpoint. The step-0 probe measures the pre-trained model, which the run's
``checkpoints/`` does not hold: it is no candidate (:attr:`BestTransfer.pretrained_loss` says
what it measured). Ties go to the earliest step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itransfer.errors import ConfigError, DataError
from itransfer.runs.checkpoints import TRAJECTORY_DIR, checkpoint_step, list_checkpoints

LOG_FILE = "train_log.jsonl"
MONITOR_KEY = "monitor"
TRANSFER_LOSS = "finetune_loss"  # what "best" minimises
BEST_TRANSFER = "best-transfer:"  # --checkpoint best-transfer:RUN


def read_log(out_dir: Path, *, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The rows of the run's ``train_log.jsonl`` (training rows and probe rows), up to a step."""
    path = Path(out_dir) / LOG_FILE
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DataError(path, f"not a JSON row ({exc})", line=number) from exc
    return [row for row in rows if up_to_step is None or row["step"] <= up_to_step]


def is_monitor_row(row: dict[str, Any]) -> bool:
    return MONITOR_KEY in row


def monitor_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The probe rows of a training log, in step order."""
    return [row for row in rows if is_monitor_row(row)]


def read_monitor_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The probe rows of the run in ``run_dir`` (its ``train_log.jsonl``)."""
    return monitor_rows(read_log(Path(run_dir)))


@dataclass(frozen=True)
class BestTransfer:
    """The checkpoint of a run with the lowest monitored transfer loss, and among how many."""

    checkpoint: Path
    step: int
    loss: float
    k: int | None
    candidates: int  # steps with both a probe row and a checkpoint
    pretrained_loss: float | None  # the step-0 probe (the pre-trained model), if there is one

    def describe(self) -> str:
        """One line for the user: the step chosen, its loss, among how many."""
        shots = f" (k={self.k})" if self.k is not None else ""
        line = (f"best-transfer: step {self.step} ({self.checkpoint}), monitored transfer loss "
                f"{self.loss:.4f}{shots}, the lowest of {self.candidates} candidate step(s)")
        if self.pretrained_loss is not None and self.pretrained_loss < self.loss:
            line += (f"; the pre-trained model (step-0 probe) measured lower, "
                     f"{self.pretrained_loss:.4f}, and is not a candidate")
        return line


def _probe_losses(run_dir: Path, rows: list[dict[str, Any]]) -> dict[int, float]:
    """Step -> monitored transfer loss, from every probe row that has a finite one."""
    if not rows:
        raise DataError(run_dir / LOG_FILE,
                        "no monitor rows, so no transfer loss to choose a checkpoint by (train "
                        "with the monitor on: --set 'train.monitor={}')")
    losses = {}
    for row in rows:  # a step probed twice keeps its last row
        loss = row[MONITOR_KEY].get(TRANSFER_LOSS)
        if isinstance(loss, int | float) and math.isfinite(loss):
            losses[int(row["step"])] = float(loss)
    return losses


def best_transfer_checkpoint(run_dir: Path) -> BestTransfer:
    """The trajectory checkpoint of the run in ``run_dir`` with the lowest monitored few-shot
    transfer loss, among the steps after 0 that have both a probe row and a checkpoint; ties
    go to the earliest step. One-line :class:`DataError` naming the file when there is no
    probe row or no such step."""
    run_dir = Path(run_dir)
    rows = read_monitor_rows(run_dir)
    losses = _probe_losses(run_dir, rows)
    checkpoints = {checkpoint_step(path): path
                   for path in list_checkpoints(run_dir / TRAJECTORY_DIR)}
    candidates = sorted(step for step in losses if step > 0 and step in checkpoints)
    if not candidates:
        raise DataError(run_dir / TRAJECTORY_DIR,
                        f"no step has both a monitor row and a saved checkpoint (monitor steps: "
                        f"{sorted(losses) or 'none'}; checkpoint steps: "
                        f"{sorted(checkpoints) or 'none'}; step 0 is the pre-trained model); "
                        "save checkpoints at probed steps: train.checkpoint_every a multiple of "
                        "train.monitor.every_steps, train.keep_checkpoints unset")
    best = min(candidates, key=lambda step: (losses[step], step))
    k = next((row[MONITOR_KEY].get("k") for row in reversed(rows) if row["step"] == best), None)
    return BestTransfer(checkpoint=checkpoints[best], step=best, loss=losses[best], k=k,
                        candidates=len(candidates), pretrained_loss=losses.get(0))


def resolve_checkpoint(spec: str) -> tuple[str, BestTransfer | None]:
    """``--checkpoint`` as a model to load: ``best-transfer:RUN`` becomes the folder of RUN's
    best-transfer checkpoint (with what was chosen); any other spelling is itself."""
    if not spec.startswith(BEST_TRANSFER):
        return spec, None
    run_dir = spec.removeprefix(BEST_TRANSFER)
    if not run_dir:
        raise ConfigError("--checkpoint best-transfer:RUN: name the training run folder, "
                          "e.g. best-transfer:runs/it")
    if not Path(run_dir).is_dir():
        raise DataError(run_dir, "--checkpoint best-transfer: no such training run folder")
    best = best_transfer_checkpoint(Path(run_dir))
    return str(best.checkpoint), best
