"""Few-shot LoRA transfer cells (§3.1) and the sequential PEFT engine, the reference.

A *cell* is one (task, k shots, context, seed): a fresh task-specific LoRA trained on the
seed's k-shot draw from the task's few-shot pool with the paper's settings (Appendix B: r 16,
alpha 32, dropout 0.05, constant learning rate 1e-3, batch 32, 5 epochs). What a cell trains
on, in which order, from which initial LoRA weights and with which dropout masks are functions
of the cell alone (:func:`epoch_batches`, :func:`init_lora_a`,
:func:`~itransfer.eval.keyed_dropout.example_keys`), so the sequential PEFT engine here and the
batched multi-adapter engine (:mod:`itransfer.eval.multilora`) train the same adapters and are
checked against each other with dropout on.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from itransfer.config.schema import FewShotLoraConfig
from itransfer.encoding.examples import Architecture, EncodedExample, collate, target_mask
from itransfer.encoding.token_losses import token_losses
from itransfer.eval.keyed_dropout import example_keys, keyed_dropout
from itransfer.models.lora_targets import resolve_target_modules


@dataclass(frozen=True)
class TransferCell:
    """One few-shot fine-tuning problem: a task, k, a context and a seed."""

    task: str
    shots: int
    context: str
    seed: int
    train_examples: tuple[EncodedExample, ...]  # the seed's `shots`-instance draw of the pool

    @property
    def key(self) -> str:
        return f"{self.task}|k={self.shots}|{self.context}|seed={self.seed}"

    @property
    def random_seed(self) -> int:
        """A seed derived from the cell's identity (not its position in a grid)."""
        digest = hashlib.sha256(self.key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % (2**63)


def epoch_batches(cell: TransferCell, lora: FewShotLoraConfig) -> list[list[int]]:
    """Indices into ``cell.train_examples`` for every optimizer step, epoch after epoch.

    Each epoch is a fresh seeded shuffle cut into batches of ``lora.batch_size`` (the last
    one smaller), like a shuffling DataLoader without ``drop_last``.
    """
    steps: list[list[int]] = []
    count = len(cell.train_examples)
    for epoch in range(lora.epochs if count else 0):
        order = np.random.default_rng([cell.random_seed, epoch]).permutation(count).tolist()
        steps.extend(
            order[start : start + lora.batch_size]
            for start in range(0, count, lora.batch_size)
        )
    return steps


def init_lora_a(cell: TransferCell, module_name: str, shape: Sequence[int]) -> torch.Tensor:
    """The initial ``lora_A`` of one module for one cell (PEFT's Kaiming-uniform, a=√5).

    Seeded by the cell and the module name; ``lora_B`` starts at zero as in PEFT, so an
    untrained adapter leaves the model unchanged (that is the k = 0 cell).
    """
    generator = torch.Generator().manual_seed(
        (cell.random_seed + zlib.crc32(module_name.encode())) % (2**63)
    )
    weight = torch.empty(*shape)
    fan_in = shape[1]
    # kaiming_uniform_(a=sqrt(5)) bound: gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)).
    bound = math.sqrt(2.0 / (1 + 5)) * math.sqrt(3.0 / fan_in)
    return weight.uniform_(-bound, bound, generator=generator)


@contextmanager
def seeded_rng(seeds: Sequence[int], device: torch.device) -> Iterator[None]:
    """Torch's global RNG seeded from ``seeds`` inside, and restored after.

    For draws that cannot be keyed (PEFT's own LoRA initialisation, overwritten anyway): they
    neither depend on what ran before nor move the caller's random state.
    """
    digest = hashlib.sha256(",".join(map(str, seeds)).encode()).digest()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int.from_bytes(digest[:8], "big") % (2**63))
        yield


def batch_loss(
    model: torch.nn.Module, examples: Sequence[EncodedExample], *, pad_token_id: int,
    architecture: Architecture, device: torch.device,
) -> torch.Tensor:
    """Mean NLL over the target tokens of a batch (the usual HF loss)."""
    batch = collate(examples, pad_token_id=pad_token_id, architecture=architecture)
    batch = {key: value.to(device) for key, value in batch.items()}
    losses = token_losses(model, batch)
    mask = target_mask(batch, causal=architecture == "causal")
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def peft_config(
    lora: FewShotLoraConfig, architecture: Architecture, target_modules: Sequence[str]
) -> Any:
    """PEFT's config for ``lora``, adapting ``target_modules`` (already resolved, see
    :func:`~itransfer.models.lora_targets.resolve_target_modules`)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(target_modules),
        task_type=TaskType.SEQ_2_SEQ_LM if architecture == "seq2seq" else TaskType.CAUSAL_LM,
    )


def train_cell_peft(
    model: torch.nn.Module,
    cell: TransferCell,
    lora: FewShotLoraConfig,
    *,
    pad_token_id: int,
    architecture: Architecture,
    device: torch.device,
) -> tuple[torch.nn.Module, list[float]]:
    """Wrap ``model`` with a fresh PEFT LoRA, train it on the cell, return it and its losses.

    The caller evaluates the returned model and then calls ``.unload()`` on it to get the
    untouched base model back for the next cell.
    """
    from peft import get_peft_model

    targets = resolve_target_modules(lora.target_modules, model)
    # get_peft_model's own LoRA initialisation (overwritten below) draws too.
    with seeded_rng([cell.random_seed], device):
        peft_model = get_peft_model(model, peft_config(lora, architecture, targets))
        for name, module in peft_model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is not None and "default" in lora_a:
                weight = lora_a["default"].weight
                with torch.no_grad():
                    weight.copy_(init_lora_a(cell, _base_module_name(name), weight.shape))
        parameters = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=lora.learning_rate, weight_decay=lora.weight_decay
        )
        peft_model.train()
        losses: list[float] = []
        for step, indices in enumerate(epoch_batches(cell, lora)):
            with keyed_dropout(example_keys(cell.random_seed, step, len(indices))):
                loss = batch_loss(
                    peft_model, [cell.train_examples[i] for i in indices],
                    pad_token_id=pad_token_id, architecture=architecture, device=device,
                )
            loss.backward()
            if lora.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, lora.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    peft_model.eval()
    return peft_model, losses


def _base_module_name(peft_name: str) -> str:
    """``base_model.model.encoder.block.0...q`` → ``encoder.block.0...q`` (the plain model's)."""
    prefix = "base_model.model."
    return peft_name[len(prefix):] if peft_name.startswith(prefix) else peft_name
