"""Token ids for training and evaluation: (r_k; x) → source ids, y → target ids, and batches.

Shared by instruction tuning (:mod:`itransfer.train`) and evaluation (:mod:`itransfer.eval`);
the per-token losses both compute from these batches are in :mod:`itransfer.token_losses`.

Seq2seq models (T5) read the source in the encoder and predict the target in the decoder.
Decoder-only models read ``source + target`` and are trained on the target tokens only (the
source positions get label -100), as in the paper's conditional generation loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

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


    def encode_task(
        self, task: Task, instances: Sequence[Instance]
    ) -> Iterator[tuple[EncodedExample, bool]]:
        """:meth:`encode` of each instance, and whether its input itself had to be cut.

        Equal to calling :meth:`encode` one by one, faster: the sources whose whole context fits
        the budget (most of them) and all targets are tokenized in one batch call each; only
        the rest go through the context's cutting, one at a time.
        """
        exemplars = list(self.context.exemplars(task))
        sources = self._source_ids_batch([
            self.context.render(task, instance.input, exemplars, task.definition)
            for instance in instances
        ])
        targets = self._target_ids_batch([instance.outputs[0] for instance in instances])
        cut_counts = self.context.inputs_cut
        for instance, source, target in zip(instances, sources, targets, strict=True):
            if len(source) <= self.max_source_length:
                yield EncodedExample(tuple(source), tuple(target)), False
                continue
            cuts_before = cut_counts.get(task.name, 0)
            example = self.encode(task, instance)
            yield example, cut_counts.get(task.name, 0) > cuts_before

    def _source_ids_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=self.architecture == "seq2seq")
        return encoded["input_ids"]

    def _target_ids_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        eos = self.tokenizer.eos_token_id
        return [
            [*ids[: self.max_target_length - 1], *([eos] if eos is not None else [])]
            for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ]


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
