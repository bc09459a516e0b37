"""What instruction tuning hands a transfer monitor, and what a monitor must do.

Training (``train/monitoring.py``) calls a :class:`Monitor`; the concrete one
(``eval/monitor.py``) is built from the evaluation's parts. Both import this module, which lies
below both, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class ProbeContext:
    """What a monitor needs from the run to encode its probe items, once, before training."""

    tokenizer: Any
    architecture: str
    device: torch.device
    out_dir: Path


class Monitor(Protocol):
    """Measures the current weights on probe tasks; must not change them (adapters only)."""

    def start(self, context: ProbeContext) -> None: ...

    def due(self, step: int) -> bool: ...

    def measure(self, model: torch.nn.Module, step: int) -> dict[str, Any]: ...
