"""Token ids for training and evaluation: (r_k; x) → source ids, y → target ids, and batches.

Seq2seq models (T5) read the source in the encoder and predict the target in the decoder.
Decoder-only models read ``source + target`` and are trained on the target tokens only (the
source positions get label -100), as in the paper's conditional generation loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from itransfer.data.contexts import TaskContext
from itransfer.data.sni import Instance, Task

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
Architecture = Literal["seq2seq", "causal"]


@dataclass(frozen=True)
class EncodedExample:
    source_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.source_ids) + len(self.target_ids)


class ExampleEncoder:
    """Renders an instance with its task context and tokenizes it within the length limits."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        architecture: Architecture,
        context: TaskContext,
        *,
        max_source_length: int,
        max_target_length: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.context = context
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length

    def count_tokens(self, text: str) -> int:
        return len(self._source_ids(text))

    def _source_ids(self, text: str) -> list[int]:
        # T5 tokenizers append </s> to every input; causal tokenizers usually add nothing.
        return self.tokenizer(text, add_special_tokens=self.architecture == "seq2seq")["input_ids"]

    def _target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids[: self.max_target_length - 1]
        eos = self.tokenizer.eos_token_id
        return [*ids, eos] if eos is not None else ids

    def source_text(self, task: Task, x: str) -> str:
        encoded = self.context.encode(
            task, x, max_tokens=self.max_source_length, count_tokens=self.count_tokens
        )
        return encoded.text

    def encode(self, task: Task, instance: Instance) -> EncodedExample:
        source = self._source_ids(self.source_text(task, instance.input))
        # The context encoder already fit the text to the budget; this guards odd tokenizers.
        source = source[: self.max_source_length]
        target = self._target_ids(instance.outputs[0])
        return EncodedExample(tuple(source), tuple(target))


def collate(
    examples: Sequence[EncodedExample], *, pad_token_id: int, architecture: Architecture
) -> dict[str, torch.Tensor]:
    """Pad to the longest example of this batch only (never to a fixed maximum)."""
    if architecture == "seq2seq":
        source_length = max(len(example.source_ids) for example in examples)
        target_length = max(len(example.target_ids) for example in examples)
        input_ids = torch.full((len(examples), source_length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), source_length), dtype=torch.long)
        labels = torch.full((len(examples), target_length), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(examples):
            input_ids[row, : len(example.source_ids)] = torch.tensor(example.source_ids)
            attention_mask[row, : len(example.source_ids)] = 1
            labels[row, : len(example.target_ids)] = torch.tensor(example.target_ids)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    length = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example.source_ids + example.target_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        start = len(example.source_ids)
        labels[row, start : len(ids)] = torch.tensor(example.target_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


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
            logits.float(), targets[scored], reduction="none"
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
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return losses.view(targets.shape)


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


def target_mask(batch: dict[str, torch.Tensor], *, causal: bool) -> torch.Tensor:
    """Which positions of :func:`token_losses`' output are target tokens."""
    labels = batch["labels"][:, 1:] if causal else batch["labels"]
    return labels != IGNORE_INDEX


def count_targets(example: EncodedExample, causal: bool) -> int:
    """Target tokens that receive a loss (a causal LM cannot predict its very first token)."""
    first_is_target = causal and not example.source_ids and bool(example.target_ids)
    return len(example.target_ids) - (1 if first_is_target else 0)


def padded_parts(example: EncodedExample, architecture: Architecture) -> tuple[int, ...]:
    """The lengths :func:`collate` pads separately: source and target, or the whole sequence."""
    if architecture == "seq2seq":
        return (len(example.source_ids), len(example.target_ids))
    return (len(example),)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP and torch.compile wrap the HF model; the helper method lives on the inner one.
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)
