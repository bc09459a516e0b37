"""Token ids for training and evaluation: (r_k; x) → source ids, y → target ids, and batches.

Shared by instruction tuning (:mod:`itransfer.train`) and evaluation (:mod:`itransfer.eval`);
the per-token losses both compute from these batches are in :mod:`itransfer.token_losses`.

Seq2seq models (T5) read the source in the encoder and predict the target in the decoder.
Decoder-only models read ``source + target`` and are trained on the target tokens only (the
source positions get label -100), as in the paper's conditional generation loss. Their layout:

* the source is the plain text after the tokenizer's BOS where its tokenizer adds one (Llama,
  Mistral), never followed by EOS (a T5-style tokenizer appends one to every input);
* the target is the text followed by EOS, so a model learns where an answer ends;
* with ``model.chat_template: true`` the source is the user turn of the tokenizer's chat
  template up to the assistant's prompt, and the target the assistant turn (the answer, the
  template's end of turn, EOS); a tokenizer without a template is an error;
* batches are padded on the right for the loss (positions 0..n-1 are real tokens) and on the
  left for generation (see :mod:`itransfer.eval.inference`).
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
from itransfer.errors import ConfigError

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
        chat_template: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.context = context
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.chat_template = chat_template
        if chat_template and architecture != "causal":
            raise ConfigError("model.chat_template: true applies to decoder-only models only")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"model.chat_template: true, but the tokenizer of "
                f"{tokenizer.name_or_path or 'the model'} has no chat template; set it to false"
            )
        self._bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []

    def count_tokens(self, text: str) -> int:
        return len(self._source_ids(text))

    def _source_ids(self, text: str) -> list[int]:
        return self._source_ids_many([text])[0]

    def _source_ids_many(self, texts: list[str]) -> list[list[int]]:
        """Source token ids of each text; one tokenizer call for the whole list."""
        if not texts:
            return []
        if self.architecture == "seq2seq":
            # T5 tokenizers append </s> to every input, as T5 was trained.
            return self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        if self.chat_template:
            # The template writes its own special tokens (BOS, turn markers).
            texts = [self._chat([_user(text)], add_generation_prompt=True) for text in texts]
            return self._tokens_many(texts)
        return [[*self._bos, *ids] for ids in self._tokens_many(texts)]

    def _target_ids(self, text: str) -> list[int]:
        return self._target_ids_many([text])[0]

    def _target_ids_many(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        eos = self.tokenizer.eos_token_id
        if self.chat_template:
            texts = [self._assistant_turn(text) for text in texts]
        targets = []
        for ids in self._tokens_many(texts):
            if eos is not None and ids and ids[-1] == eos:
                ids = ids[:-1]  # the template ended the turn with EOS: it is put back below
            ids = ids[: self.max_target_length - 1]
            targets.append([*ids, eos] if eos is not None else ids)
        return targets

    def _tokens_many(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _assistant_turn(self, target: str) -> str:
        """The text the template adds for an assistant turn answering a user turn: what follows
        the generation prompt in the rendered conversation (the answer, the end of turn)."""
        # Any user text gives the same assistant turn; a fixed one keeps this independent of
        # the source.
        prompt = self._chat([_user("x")], add_generation_prompt=True)
        whole = self._chat([_user("x"), {"role": "assistant", "content": target}],
                           add_generation_prompt=False)
        if not whole.startswith(prompt):
            raise ConfigError(
                f"model.chat_template: the template of {self.tokenizer.name_or_path} does not "
                "render a conversation as its prompt followed by the assistant turn"
            )
        return whole[len(prompt):].rstrip()

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
        sources = self._source_ids_many([
            self.context.render(task, instance.input, exemplars, task.definition)
            for instance in instances
        ])
        targets = self._target_ids_many([instance.outputs[0] for instance in instances])
        cut_counts = self.context.inputs_cut
        for instance, source, target in zip(instances, sources, targets, strict=True):
            if len(source) <= self.max_source_length:
                yield EncodedExample(tuple(source), tuple(target)), False
                continue
            cuts_before = cut_counts.get(task.name, 0)
            example = self.encode(task, instance)
            yield example, cut_counts.get(task.name, 0) > cuts_before


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts every input with BOS (Llama's do, GPT-2's and Qwen's not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[:1] == [bos] and plain[:1] != [bos]


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
