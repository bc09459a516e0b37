"""Test loss and greedy generation over many examples, in length-sorted batches.

Loss is teacher-forced on an instance's first reference: the mean NLL of its target tokens
(the paper's "test loss"). Generation is greedy with the KV cache (``model.generate``). Items
are sorted by length and cut into batches of at most ``batch_size`` rows and ``max_batch_tokens``
padded tokens, so short items share big batches (generation is dominated by per-step overhead
at a few dozen rows) and each batch pads little; results come back in the input order. An
encoder-decoder runs its encoder once per batch, for the loss and generation both.

Items may carry an adapter index, used by the batched multi-adapter LoRA engine: a ``router``
context manager receives each batch's indices so every example runs through its own adapter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from itransfer.encoding.examples import (
    Architecture,
    EncodedExample,
    collate,
    padded_parts,
    target_mask,
)
from itransfer.encoding.token_losses import token_losses

Router = Callable[[list[int]], AbstractContextManager[Any]]


@dataclass(frozen=True)
class EvalItem:
    example: EncodedExample  # source ids and the first reference's target ids
    references: tuple[str, ...]
    adapter: int = -1


@dataclass(frozen=True)
class ItemResult:
    loss: float
    prediction: str | None


@torch.no_grad()
def evaluate_items(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    architecture: Architecture,
    items: Sequence[EvalItem],
    *,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    max_new_tokens: int = 64,
    generate: bool = True,
    router: Router | None = None,
    device: torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ItemResult]:
    """Per-item test loss (and greedy prediction), in the order of ``items``."""
    device = device or next(model.parameters()).device
    model.eval()
    results: list[ItemResult | None] = [None] * len(items)
    pad = tokenizer.pad_token_id
    lengths = [padded_parts(item.example, architecture) for item in items]
    for indices in plan_batches(lengths, max_rows=batch_size, max_tokens=max_batch_tokens):
        batch_items = [items[i] for i in indices]
        route = router([item.adapter for item in batch_items]) if router else nullcontext()
        with route:
            batch = collate(
                [item.example for item in batch_items], pad_token_id=pad, architecture=architecture
            )
            batch = {key: value.to(device) for key, value in batch.items()}
            encoder_outputs = None
            if architecture == "seq2seq":
                encoder_outputs = model.get_encoder()(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    return_dict=True,
                )
            losses = token_losses(model, batch, encoder_outputs=encoder_outputs)
            mask = target_mask(batch, causal=architecture == "causal")
            per_item = ((losses * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
            predictions = (
                _generate(model, tokenizer, architecture, batch, batch_items, max_new_tokens,
                          encoder_outputs=encoder_outputs)
                if generate
                else [None] * len(batch_items)
            )
        for index, loss, prediction in zip(indices, per_item, predictions, strict=True):
            results[index] = ItemResult(loss=loss, prediction=prediction)
        if progress is not None:
            progress(len(indices))
    return [result for result in results if result is not None]


def plan_batches(
    lengths: Sequence[int | tuple[int, ...]], *, max_rows: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices in ascending length, cut so a batch has <= ``max_rows`` rows and, padded, <=
    ``max_tokens`` tokens (an item longer than that still gets a batch).

    An item's length may have parts padded separately (an encoder-decoder's source and
    target): the batch then pads each part to its own longest, as :func:`collate` does.
    """
    if max_rows < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"max_rows and max_tokens must be >= 1, got {max_rows}, {max_tokens}")
    parts = [(length,) if isinstance(length, int) else tuple(length) for length in lengths]
    batches: list[list[int]] = []
    current: list[int] = []
    widths: tuple[int, ...] = ()
    for index in sorted(range(len(parts)), key=lambda i: sum(parts[i])):
        grown = tuple(map(max, widths, parts[index])) if current else parts[index]
        padded = (len(current) + 1) * max(sum(grown), 1)
        if current and (
            len(current) >= max_rows or (max_tokens is not None and padded > max_tokens)
        ):
            batches.append(current)
            current, grown = [], parts[index]
        current.append(index)
        widths = grown
    if current:
        batches.append(current)
    return batches


def _generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    architecture: Architecture,
    batch: dict[str, torch.Tensor],
    items: Sequence[EvalItem],
    max_new_tokens: int,
    *,
    encoder_outputs: Any = None,
) -> list[str]:
    pad = tokenizer.pad_token_id
    if architecture == "seq2seq":
        # The encoder read the batch's right-padded sources already; generation reuses them.
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "encoder_outputs": encoder_outputs}
        width = 0
    else:
        inputs = left_padded_prompts(
            [item.example.source_ids for item in items], pad, device=batch["input_ids"].device
        )
        width = inputs["input_ids"].shape[1]
        if not _accepts_position_ids(model):
            del inputs["position_ids"]
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad
    )
    return tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)


def left_padded_prompts(
    sources: Sequence[Sequence[int]], pad_token_id: int, *, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Prompts for a decoder-only model's batched generation: padded on the left (every row
    continues from its last column), with the attention mask and position ids that make each
    row compute what it would alone.

    Position ids count from each row's first real token (``attention_mask.cumsum - 1``, 0 on
    the padding): rotary and learned position embeddings would otherwise see a row's tokens
    shifted by its padding. ``generate`` extends them step by step with the KV cache.
    """
    width = max((len(source) for source in sources), default=0)
    input_ids = torch.full((len(sources), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, source in enumerate(sources):
        if source:
            input_ids[row, width - len(source):] = torch.tensor(source, dtype=torch.long)
            attention_mask[row, width - len(source):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {name: tensor.to(device) for name, tensor in (
        ("input_ids", input_ids), ("attention_mask", attention_mask),
        ("position_ids", position_ids),
    )}


def _accepts_position_ids(model: torch.nn.Module) -> bool:
    # A PEFT wrapper forwards them to the model it wraps; a model whose forward has no such
    # argument derives positions itself.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "position_ids" in inspect.signature(inner.forward).parameters
