"""Batched few-shot LoRA (§3.1): train the LoRAs of many transfer cells in one model pass.

How it works. :class:`MultiLoraModel` swaps every targeted ``nn.Linear`` of a model for a
:class:`MultiLoraLinear` holding one stacked adapter per cell (``lora_A[n, r, in]``,
``lora_B[n, out, r]``). A packed batch mixes the examples of many cells; ``route(indices)`` tells
every layer which adapter each row uses, and the layer adds ``scaling * B_i A_i dropout(x)`` per
row with two batched matmuls over per-row gathered adapters. :func:`train_cells_batched` steps
all cells together: at global step s every cell that still has an s-th batch (from
:func:`~itransfer.eval.lora.epoch_batches`) contributes it, the loss is the sum of each cell's
mean-token loss (so each adapter's gradient is exactly its own cell's), and then every active
cell gets its own gradient clipping and its own AdamW step.

What is equal to the sequential PEFT engine (:func:`~itransfer.eval.lora.train_cell_peft`),
per cell: the initial weights, the batches and their order, the dropout masks (drawn per example
from the cell's keys, :mod:`itransfer.eval.keyed_dropout`, whatever the group, the pass split or
the process), the loss, the clipping and AdamW's arithmetic. What is not: reductions run in a
different order (packed passes pad differently), which is rounding only; but Adam's first steps
normalise each gradient element, so an element near zero can flip sign: in float32 the adapters
of the two engines (or of two pass sizes) differ by up to ~1e-4 after 10 steps, in float64 by
~1e-13 (tests/test_multilora.py).

Why hand-written. PEFT trains one active adapter per forward pass; its mixed-batch inference
(``adapter_names=``) is inference-only. ``torch.optim.AdamW`` over stacked tensors would share
one step count and update (decay, momentum) cells that had no batch at that step, hence
:class:`_MaskedAdamW` and :func:`_clip_per_cell`; one parameter per cell with the stock
optimizer was measured against them (bench/README.md).

Gather, not group-by-adapter: gathering each row's ``A``/``B`` and using ``bmm`` is one kernel
per layer whatever the number of cells, with no host sync and no Python loop over adapters.
Passes are planned by length (``max_examples_per_pass`` rows, ``max_tokens_per_pass`` padded
tokens) so that short examples share big passes; why these choices, with the measurements
behind them, is in bench/README.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from itransfer.config.schema import FewShotLoraConfig
from itransfer.encoding.examples import (
    Architecture,
    EncodedExample,
    collate,
    count_targets,
    padded_parts,
    target_mask,
)
from itransfer.encoding.token_losses import token_losses
from itransfer.eval.inference import plan_batches
from itransfer.eval.keyed_dropout import example_keys, keyed_dropout
from itransfer.eval.lora import (
    TransferCell,
    epoch_batches,
    init_lora_a,
    peft_config,
)
from itransfer.models.lora_targets import is_adaptable, matches, resolve_target_modules
from itransfer.runtime.atomic_files import staged_dir

logger = logging.getLogger(__name__)

_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (total_norm + 1e-6)
_ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults
_ADAM_EPS = 1e-8


class _Router:
    """The adapter index of each batch row, shared by all layers of one :class:`MultiLoraModel`."""

    def __init__(self) -> None:
        self.indices: torch.Tensor | None = None  # [batch]


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``n_adapters`` stacked LoRAs, one chosen per batch row."""

    routes_by_batch_row = True  # its input must keep the batch dimension (see token_losses)

    def __init__(
        self, base: nn.Module, n_adapters: int, *, r: int, alpha: float, dropout: float,
        router: _Router,
    ) -> None:
        super().__init__()
        self.base = base
        # nn.Linear keeps weight [out, in]; GPT-2's Conv1D keeps it [in, out].
        self.in_features, self.out_features = (
            (base.in_features, base.out_features) if isinstance(base, nn.Linear)
            else tuple(base.weight.shape)
        )
        # Half-precision bases get float32 adapters, as PEFT's autocast_adapter_dtype does.
        dtype = base.weight.dtype if base.weight.dtype == torch.float64 else torch.float32
        options = {"device": base.weight.device, "dtype": dtype}
        self.lora_A = nn.Parameter(torch.zeros(n_adapters, r, self.in_features, **options))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, self.out_features, r, **options))
        self.scaling = alpha / r
        self.dropout = dropout
        self._router = router

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        indices = self._router.indices
        if indices is None:
            raise RuntimeError("MultiLoraLinear called outside MultiLoraModel.route(indices)")
        if x.shape[0] != indices.shape[0]:
            raise RuntimeError(
                f"batch has {x.shape[0]} rows but route() got {indices.shape[0]} indices "
                "(for beam search / num_return_sequences, repeat_interleave the indices)"
            )
        rows = x.to(self.lora_A.dtype).reshape(x.shape[0], -1, x.shape[-1])
        # Where PEFT's LoRA drops out (after the base layer), so that inside keyed_dropout both
        # engines number their dropout calls alike and draw the same masks.
        rows = nn.functional.dropout(rows, self.dropout, self.training)
        low_rank = torch.bmm(rows, self.lora_A[indices].transpose(1, 2))
        # result + scaling * (low_rank @ B^T) in one kernel.
        total = torch.baddbmm(
            result.to(low_rank.dtype).reshape(x.shape[0], -1, result.shape[-1]),
            low_rank, self.lora_B[indices].transpose(1, 2), alpha=self.scaling,
        )
        return total.reshape(result.shape).to(result.dtype)


class MultiLoraModel:
    """Injects :class:`MultiLoraLinear` layers (one adapter per cell) into a model, in place.

    ``remove()`` puts the original ``nn.Linear`` modules, ``requires_grad`` flags and train/eval
    mode back, leaving the base model as it was.
    """

    def __init__(
        self, model: nn.Module, cells: Sequence[TransferCell], lora: FewShotLoraConfig,
        *, architecture: Architecture,
    ) -> None:
        self.model = model
        self.cells = tuple(cells)
        self.lora = lora
        self.architecture = architecture
        self._router = _Router()
        self._requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self._was_training = model.training
        # The same resolution as the PEFT engine's, so both adapt the same layers.
        self.target_modules = resolve_target_modules(lora.target_modules, model)
        targets = [name for name, _ in model.named_modules()
                   if name and matches(name, self.target_modules)]
        for name in targets:
            base = model.get_submodule(name)
            if not is_adaptable(base):
                raise TypeError(f"target module {name} is {type(base).__name__}, not nn.Linear")
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.layers: dict[str, MultiLoraLinear] = {}
        for name in targets:
            base = model.get_submodule(name)
            layer = MultiLoraLinear(
                base, len(self.cells), r=lora.r, alpha=lora.alpha,
                dropout=lora.dropout, router=self._router,
            )
            with torch.no_grad():
                for index, cell in enumerate(self.cells):
                    shape = (lora.r, layer.in_features)
                    layer.lora_A[index].copy_(init_lora_a(cell, name, shape))
            _set_submodule(model, name, layer)
            self.layers[name] = layer

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    @contextmanager
    def route(self, indices: torch.Tensor | Sequence[int]) -> Iterator[None]:
        """Within the block, batch row b uses adapter ``indices[b]``."""
        device = next(iter(self.layers.values())).lora_A.device
        indices = torch.as_tensor(indices, dtype=torch.long, device=device)
        if indices.dim() != 1:
            raise ValueError(f"route() takes one index per batch row, got shape {indices.shape}")
        if indices.numel() and (int(indices.max()) >= len(self.cells) or int(indices.min()) < 0):
            raise ValueError(f"adapter indices must be in [0, {len(self.cells)})")
        saved = self._router.indices
        self._router.indices = indices
        try:
            yield
        finally:
            self._router.indices = saved

    def adapter_state(self, cell_index: int) -> dict[str, torch.Tensor]:
        """One cell's weights, keyed as PEFT saves them (``base_model.model.<m>.lora_A.weight``)."""
        state: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            prefix = f"base_model.model.{name}"
            state[f"{prefix}.lora_A.weight"] = layer.lora_A[cell_index].detach().cpu().clone()
            state[f"{prefix}.lora_B.weight"] = layer.lora_B[cell_index].detach().cpu().clone()
        return state

    def export_peft_adapter(self, cell_index: int, out_dir: str | Path) -> Path:
        """Write cell ``cell_index`` as a PEFT adapter folder, atomically (temp dir + rename).

        ``peft.PeftModel.from_pretrained(base_model, out_dir)`` loads it.
        """
        from safetensors.torch import save_file

        target = Path(out_dir)
        with staged_dir(target) as staging:
            peft_config(
                self.lora, self.architecture, self.target_modules
            ).save_pretrained(str(staging))
            save_file(
                self.adapter_state(cell_index), str(staging / "adapter_model.safetensors"),
                metadata={"format": "pt"},
            )
        return target

    def remove(self) -> nn.Module:
        """Restore the original modules, flags and mode; return the base model."""
        for name, layer in self.layers.items():
            _set_submodule(self.model, name, layer.base)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(self._requires_grad[name])
        self.model.train(self._was_training)
        self.layers = {}
        return self.model


@dataclass
class BatchedTrainResult:
    """The trained adapters (call ``adapters.remove()`` when done) and each cell's step losses."""

    adapters: MultiLoraModel
    losses: list[list[float]]  # losses[c][s]: cell c's mean target-token loss at its step s


def train_cells_batched(
    model: nn.Module,
    cells: Sequence[TransferCell],
    lora: FewShotLoraConfig,
    *,
    pad_token_id: int,
    architecture: Architecture,
    device: torch.device,
    max_examples_per_pass: int | None = None,
    max_tokens_per_pass: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchedTrainResult:
    """Train one fresh LoRA per cell, all cells in the same forward passes.

    Cell c's adapter sees exactly what :func:`~itransfer.eval.lora.train_cell_peft` would give
    it: its batches in order, its own clipping and its own AdamW step count. A global step's
    packed batch is split into passes of ``max_examples_per_pass`` examples whose gradients
    accumulate (exact, since every token is weighted by its own cell's token count); a pass
    also holds at most ``max_tokens_per_pass`` padded tokens.
    ``progress(step, total_steps)`` is called after each global step.
    """
    adapters = MultiLoraModel(model, cells, lora, architecture=architecture)
    optimizer = _MaskedAdamW(adapters.adapter_parameters(), len(cells), lora)
    schedules = [epoch_batches(cell, lora) for cell in cells]
    total_steps = max((len(steps) for steps in schedules), default=0)
    losses: list[list[float]] = [[] for _ in cells]
    logger.info("training %d LoRA cells together in %d global steps", len(cells), total_steps)
    model.train()
    try:
        # The group's dropout draws depend on all its cells, as its packed passes do.
        for step in range(total_steps):
            active = [c for c, steps in enumerate(schedules) if step < len(steps)]
            owners = [c for c in active for _ in schedules[c][step]]
            examples = [cells[c].train_examples[i] for c in active for i in schedules[c][step]]
            # Each example's dropout key is its cell's and its place in the cell's step, so a
            # cell draws the same masks in any group, pass split or process (keyed_dropout).
            keys = [
                key for c in active
                for key in example_keys(cells[c].random_seed, step, len(schedules[c][step]))
            ]
            step_losses = _accumulate_gradients(
                adapters, examples, owners, keys, len(cells), pad_token_id=pad_token_id,
                architecture=architecture, device=device,
                max_examples_per_pass=max_examples_per_pass,
                max_tokens_per_pass=max_tokens_per_pass,
            )
            if lora.max_grad_norm is not None:
                _clip_per_cell(adapters.adapter_parameters(), lora.max_grad_norm)
            optimizer.step(active)
            for c in active:
                losses[c].append(float(step_losses[c]))
            if progress is not None:
                progress(step + 1, total_steps)
    except BaseException:
        adapters.remove()  # a failed run must not leave the caller's model wrapped
        raise
    model.eval()
    return BatchedTrainResult(adapters=adapters, losses=losses)


def _accumulate_gradients(
    adapters: MultiLoraModel, examples: list[EncodedExample], owners: list[int],
    dropout_keys: list[int], n_cells: int,
    *, pad_token_id: int, architecture: Architecture, device: torch.device,
    max_examples_per_pass: int | None, max_tokens_per_pass: int | None = None,
) -> torch.Tensor:
    """Backward the sum of per-cell mean-token losses; return each cell's loss (float64, CPU)."""
    token_counts = torch.zeros(n_cells, dtype=torch.float64)
    for example, owner in zip(examples, owners, strict=True):
        token_counts[owner] += count_targets(example, architecture == "causal")
    token_counts = token_counts.clamp(min=1)  # batch_loss's clamp, for empty targets
    step_losses = torch.zeros(n_cells, dtype=torch.float64)
    # Similar lengths share a pass so that chunked passes pad little.
    passes = plan_batches(
        [padded_parts(example, architecture) for example in examples],
        max_rows=max_examples_per_pass or max(len(examples), 1), max_tokens=max_tokens_per_pass,
    )
    for rows in passes:
        batch = collate(
            [examples[i] for i in rows], pad_token_id=pad_token_id, architecture=architecture
        )
        batch = {key: value.to(device) for key, value in batch.items()}
        row_owners = torch.tensor([owners[i] for i in rows], dtype=torch.long)
        with adapters.route(row_owners), keyed_dropout([dropout_keys[i] for i in rows]):
            per_token = token_losses(adapters.model, batch)
        row_sums = (per_token * target_mask(batch, causal=architecture == "causal")).sum(dim=1)
        weights = (1.0 / token_counts[row_owners]).to(device=device, dtype=row_sums.dtype)
        (row_sums * weights).sum().backward()
        step_losses.index_add_(0, row_owners, (row_sums.detach() * weights).double().cpu())
    return step_losses


def _clip_per_cell(parameters: Sequence[nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each cell's slices of all adapter tensors on its own."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    # Like torch: a 2-norm per tensor, then the 2-norm of those norms.
    per_tensor = torch.stack(
        [torch.linalg.vector_norm(g, 2, dim=tuple(range(1, g.dim()))) for g in grads]
    )
    total = torch.linalg.vector_norm(per_tensor, 2, dim=0)
    coefficients = (max_norm / (total + _CLIP_EPS)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(coefficients.view(-1, *([1] * (grad.dim() - 1))))


class _MaskedAdamW:
    """``torch.optim.AdamW`` (amsgrad off, default betas/eps) on stacked per-cell tensors.

    Only the cells given to ``step`` are touched, each with its own step count for bias
    correction, so a cell's trajectory is the one a lone AdamW over its own LoRA would follow.
    """

    def __init__(self, parameters: Sequence[nn.Parameter], n_cells: int, lora: FewShotLoraConfig):
        self.parameters = list(parameters)
        self.lr = lora.learning_rate
        self.weight_decay = lora.weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.parameters]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.parameters]
        self.steps = [0] * n_cells

    @torch.no_grad()
    def step(self, active: Sequence[int]) -> None:
        if not active:
            return
        beta1, beta2 = _ADAM_BETAS
        for c in active:
            self.steps[c] += 1
        # torch computes these scalars in Python double, then applies them as float32.
        step_size = [self.lr / (1 - beta1 ** self.steps[c]) for c in active]
        correction2_sqrt = [math.sqrt(1 - beta2 ** self.steps[c]) for c in active]
        device = self.parameters[0].device
        rows = torch.tensor(list(active), dtype=torch.long, device=device)
        for parameter, exp_avg, exp_avg_sq in zip(
            self.parameters, self.exp_avg, self.exp_avg_sq, strict=True
        ):
            shape = (-1, *([1] * (parameter.dim() - 1)))
            grad = parameter.grad[rows] if parameter.grad is not None else None
            if grad is None:
                grad = torch.zeros_like(parameter[rows])
            value = parameter.data[rows]
            if self.weight_decay:
                value.mul_(1 - self.lr * self.weight_decay)
            first = exp_avg[rows].lerp_(grad, 1 - beta1)
            second = exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (second.sqrt() / _column(correction2_sqrt, value, shape)).add_(_ADAM_EPS)
            value.sub_((first / denom) * _column(step_size, value, shape))
            parameter.data.index_copy_(0, rows, value)
            exp_avg.index_copy_(0, rows, first)
            exp_avg_sq.index_copy_(0, rows, second)
            parameter.grad = None


def _column(values: list[float], like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
