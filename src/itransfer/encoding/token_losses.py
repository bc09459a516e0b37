"""Per-token losses of a batch (:func:`itransfer.encoding.examples.collate`), for training and
evaluation.

Computed here rather than by the model's own ``loss`` so that per-example (and so per-task)
losses and a global-token normalisation across processes are possible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from itransfer.encoding.examples import IGNORE_INDEX

logger = logging.getLogger(__name__)


def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, encoder_outputs: Any = None
) -> torch.Tensor:
    """Per-token NLL, shape [batch, target positions], 0 where the label is ignored.

    Computed here rather than by the model's own ``loss`` so that per-example (and so per-task)
    losses and a global-token normalisation across processes are possible. An encoder-decoder
    given ``encoder_outputs`` (of this batch's inputs) does not run its encoder again.

    Only the positions that predict a target token go through the output layer: a batch pads
    every target to its longest, and with a large vocabulary the output projection and softmax
    of those padding positions would be much of the work (see :func:`_scored_positions_only`).
    """
    labels = batch["labels"]
    inner = _unwrap(model)
    seq2seq = bool(getattr(inner.config, "is_encoder_decoder", False))
    targets = labels if seq2seq else labels[:, 1:]
    scored = targets != IGNORE_INDEX
    # Hidden position t of a decoder-only model predicts token t + 1; the last predicts nothing.
    positions = scored if seq2seq else torch.nn.functional.pad(scored, (0, 1), value=False)
    if seq2seq:
        decoder_input_ids = inner.prepare_decoder_input_ids_from_labels(labels=labels)
        source = (
            {"input_ids": batch["input_ids"]}
            if encoder_outputs is None
            else {"encoder_outputs": encoder_outputs}
        )
        inputs = {**source, "attention_mask": batch["attention_mask"],
                  "decoder_input_ids": decoder_input_ids}
    else:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with _scored_positions_only(inner, positions) as gathered:
        logits = model(**inputs).logits
    if gathered and logits.dim() == 2 and logits.shape[0] == int(scored.sum()):
        values = torch.nn.functional.cross_entropy(
            _at_least_float32(logits), targets[scored], reduction="none"
        )
        return torch.zeros(targets.shape, dtype=values.dtype, device=values.device).masked_scatter(
            scored, values
        )
    if gathered:  # the model reshaped its logits after the output layer: score every position
        logger.warning("%s: the output layer's input could not be narrowed to the target "
                       "positions; computing logits everywhere", type(inner).__name__)
        logits = model(**inputs).logits
    if not seq2seq:
        logits = logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(
        _at_least_float32(logits).reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return losses.view(targets.shape)


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast for a stable softmax; float64 ones are kept, since
    # rounding them to float32 would make a float64 model's losses depend on how its batch was
    # padded (one float32 ulp per token), which the float64 equivalence tests must not see.
    return logits if logits.dtype == torch.float64 else logits.float()


class _Gathered:
    """Whether the output layer's input was narrowed (truthy once it was)."""

    def __init__(self) -> None:
        self.done = False

    def __bool__(self) -> bool:
        return self.done


@contextmanager
def _scored_positions_only(model: torch.nn.Module, positions: torch.Tensor) -> Iterator[_Gathered]:
    """Within the block, the output layer sees only the hidden states at ``positions``.

    A forward pre-hook on the model's output embeddings (``lm_head``) gathers those rows, so the
    model returns logits of shape [n positions, vocab] instead of [batch, length, vocab]; each
    logit it returns is the one it would have computed anyway. Models without output
    embeddings, whose head routes batch rows, or whose head gets an input of another shape, are
    left alone (falsy result).
    """
    gathered = _Gathered()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # A head that treats batch rows differently (the batched LoRA engine's, routed per row)
    # needs its [batch, length] input.
    if not isinstance(head, torch.nn.Module) or getattr(head, "routes_by_batch_row", False):
        yield gathered
        return

    def gather(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0] if args else None
        if gathered.done or hidden is None or hidden.shape[:-1] != positions.shape:
            return None
        gathered.done = True
        return (hidden[positions], *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield gathered
    finally:
        handle.remove()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP and torch.compile wrap the HF model; the helper method lives on the inner one.
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)
