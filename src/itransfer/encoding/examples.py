"""Token ids for training and evaluation: (r_k; x) → source ids, y → target ids, and batches.

Shared by instruction tuning (:mod:`itransfer.train`) and evaluation (:mod:`itransfer.eval`);
the per-token losses both compute from these batches are in :mod:`itransfer.encoding.token_losses`.

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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from itransfer.data.contexts import (
    EncodedInput,
    TaskContext,
    build_context,
    longest_fitting_prefix,
)
from itransfer.data.sni import Instance, Task
from itransfer.errors import ConfigError

if TYPE_CHECKING:
    from itransfer.config.schema import ExperimentConfig

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
Architecture = Literal["seq2seq", "causal"]


@dataclass(frozen=True)
class EncodedExample:
    source_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    # The input itself lost its last words to the source budget (cutting the context was not
    # enough); training and evaluation count these for their one warning line.
    input_cut: bool = False

    def __len__(self) -> int:
        return len(self.source_ids) + len(self.target_ids)


class ExampleEncoder:
    """Renders an instance with its task context and tokenizes it within the length limits.

    Two renderings of ``(r_k; x)`` into source ids, chosen once per tokenizer:

    * **assembled** (fast tokenizers whose pieces join exactly, checked on a probe text at
      construction: T5's, the bundled models', byte-level BPE such as GPT-2's and Llama 3's):
      the source is the context before the input, the input (with the whitespace that joins it),
      and the context after it, each tokenized on its own and concatenated, between the
      tokenizer's special tokens. A task's context is tokenized once per task (and once per
      number of exemplars or instruction words that a length budget keeps), its inputs and
      targets in one batch call each, and every cut is decided on token counts. For tokenizers
      that split words at whitespace this *is* the tokenization of the joined text
      (``tests/test_encoding_paths.py`` compares the two on every bundled task and context).
    * **joined** (chat templates, and tokenizers that fail the probe, e.g. SentencePiece BPE
      without a whitespace pre-tokenizer): the rendered text is tokenized whole, and a cut
      searches by tokenizing candidate texts (:meth:`encode_joined`, the reference).

    Training (the tokenized cache) and evaluation both go through :meth:`encode_task`, so they
    always read the same rendering.
    """

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
        self._backend = _plain_backend(tokenizer)
        self._specials = None if chat_template else self._special_frame()
        self.assembles = (self._specials is not None and bool(getattr(tokenizer, "is_fast", False))
                          and self._pieces_join_exactly())

    @classmethod
    def for_config(cls, config: ExperimentConfig, tokenizer: PreTrainedTokenizerBase,
                   architecture: Architecture, context: str | None = None) -> ExampleEncoder:
        """The encoder a run's config asks for, in ``context`` (default: the config's
        ``data.context``, the instruction-tuning context) with its exemplar count."""
        return cls(
            tokenizer, architecture,
            build_context(context or config.data.context.name,
                          config.data.context.num_exemplars),
            max_source_length=config.model.max_source_length,
            max_target_length=config.model.max_target_length,
            chat_template=config.model.chat_template,
        )

    def _pieces_join_exactly(self) -> bool:
        """Whether the probe's pieces, tokenized apart, give the ids of the joined probe, and
        every whole-word prefix of an input piece gives a prefix of that piece's ids."""
        pieces = self._plain_ids_many(list(_JOINT_PROBE))
        joined = self._plain_ids_many(["".join(_JOINT_PROBE)])[0]
        if [token for piece in pieces for token in piece] != joined:
            return False
        for text in _JOINT_PROBE[1::2]:
            ids, offsets = self._ids_and_offsets([text])[0]
            ends = [match.end() for match in re.finditer(r"\S+", text)]
            prefixes = self._plain_ids_many([text[:end] for end in ends])
            for end, prefix in zip(ends, prefixes, strict=True):
                if prefix != ids[: _tokens_before(offsets, end)]:
                    return False
        return True

    @property
    def rendering(self) -> str:
        """``assembled`` or ``joined`` (see the class docstring)."""
        return "assembled" if self.assembles else "joined"

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
            return self._plain_ids_many(texts)
        return [[*self._bos, *ids] for ids in self._plain_ids_many(texts)]

    def _special_frame(self) -> tuple[list[int], list[int]] | None:
        """The special ids before and after a source's text, or None when they are not a plain
        prefix and suffix of it."""
        if self.architecture == "causal":
            return list(self._bos), []
        probe = "a b"
        plain = self._plain_ids_many([probe])[0]
        whole = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(whole) - len(plain) + 1):
            if whole[start : start + len(plain)] == plain:
                return whole[:start], whole[start + len(plain) :]
        return None

    def _target_ids(self, text: str) -> list[int]:
        return self._target_ids_many([text])[0]

    def _target_ids_many(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        eos = self.tokenizer.eos_token_id
        if self.chat_template:
            texts = [self._assistant_turn(text) for text in texts]
        targets = []
        for ids in self._plain_ids_many(texts):
            if eos is not None and ids and ids[-1] == eos:
                ids = ids[:-1]  # the template ended the turn with EOS: it is put back below
            ids = ids[: self.max_target_length - 1]
            targets.append([*ids, eos] if eos is not None else ids)
        return targets

    def _plain_ids_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, in one batch call."""
        if not texts:
            return []
        backend = self._backend
        # Only while it gives what the wrapper gives: a wrapper call with truncation or padding
        # leaves them set on the backend.
        if backend is not None and backend.truncation is None and backend.padding is None:
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
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
        """The joined text of the source (what :meth:`encode_joined` tokenizes)."""
        return self._fitted_source(task, x).text

    def _fitted_source(self, task: Task, x: str) -> EncodedInput:
        return self.context.encode(
            task, x, max_tokens=self.max_source_length, count_tokens=self.count_tokens
        )

    def encode(self, task: Task, instance: Instance) -> EncodedExample:
        """One instance, as :meth:`encode_task` encodes it."""
        return next(self.encode_task(task, [instance]))

    def encode_joined(self, task: Task, instance: Instance) -> EncodedExample:
        """The reference: the joined text, cut by tokenizing candidates (slow; see the class)."""
        fitted = self._fitted_source(task, instance.input)
        source = self._source_ids(fitted.text)
        # The context encoder already fit the text to the budget; this guards odd tokenizers.
        source = source[: self.max_source_length]
        target = self._target_ids(instance.outputs[0])
        return EncodedExample(tuple(source), tuple(target), input_cut=fitted.input_words_cut > 0)

    def encode_task(self, task: Task, instances: Sequence[Instance]) -> Iterator[EncodedExample]:
        """Each instance's example (``input_cut`` says whether its input itself had to be cut
        to the budget)."""
        if self.assembles:
            yield from self._encode_task_assembled(task, instances)
        else:
            yield from self._encode_task_joined(task, instances)

    def _encode_task_joined(
        self, task: Task, instances: Sequence[Instance]
    ) -> Iterator[EncodedExample]:
        # The sources whose whole context fits the budget (most of them) and all targets are
        # tokenized in one batch call each; only the rest go through the cutting search.
        exemplars = list(self.context.exemplars(task))
        sources = self._source_ids_many([
            self.context.render(task, instance.input, exemplars, task.definition)
            for instance in instances
        ])
        targets = self._target_ids_many([instance.outputs[0] for instance in instances])
        for instance, source, target in zip(instances, sources, targets, strict=True):
            if len(source) <= self.max_source_length:
                yield EncodedExample(tuple(source), tuple(target))
            else:
                yield self.encode_joined(task, instance)

    def _encode_task_assembled(
        self, task: Task, instances: Sequence[Instance]
    ) -> Iterator[EncodedExample]:
        frames = _Frames(self, task)
        full = frames.get(len(frames.exemplars), None)
        inputs = self._plain_ids_many([full.sep + instance.input for instance in instances])
        targets = self._target_ids_many([instance.outputs[0] for instance in instances])
        budget = self.max_source_length
        long = [i for i, ids in enumerate(inputs) if full.length + len(ids) > budget]
        fitted = dict(zip(long, self._fit_many(frames, [instances[i].input for i in long],
                                               [inputs[i] for i in long]), strict=True))
        for i, (input_ids, target) in enumerate(zip(inputs, targets, strict=True)):
            if i in fitted:
                source, input_cut = fitted[i]
                yield EncodedExample(tuple(source[:budget]), tuple(target), input_cut)
            else:
                yield EncodedExample(tuple(full.assemble(input_ids)), tuple(target))

    def _fit_many(
        self, frames: _Frames, texts: list[str], inputs: list[list[int]]
    ) -> list[tuple[list[int], bool]]:
        """Cut the context, then the input's tail, as :meth:`TaskContext.encode` does, but on
        token counts: exemplars from the last, then the instruction's words, then the input's
        last words. ``inputs`` are the ids of each input joined to the full context's frame."""
        budget, task = self.max_source_length, frames.task
        full = frames.get(len(frames.exemplars), None)
        chosen: list[tuple[_Frame, list[int]]] = []
        for x, full_ids in zip(texts, inputs, strict=True):
            def input_ids_for(candidate: _Frame, x: str = x, full_ids: list[int] = full_ids
                              ) -> list[int]:
                if candidate.sep == full.sep:
                    return full_ids
                return self._plain_ids_many([candidate.sep + x])[0]

            kept, frame = len(frames.exemplars), full
            while kept and frame.length + len(input_ids_for(frame)) > budget:
                kept -= 1
                frame = frames.get(kept, None)
            definition_cut = 0
            if self.context.uses_definition and frame.length + len(input_ids_for(frame)) > budget:
                words = task.definition.split()

                def definition_fits(n: int, kept: int = kept) -> bool:
                    candidate = frames.get(kept, n)
                    return candidate.length + len(input_ids_for(candidate)) <= budget

                words_kept = longest_fitting_prefix(len(words), definition_fits)
                definition_cut = len(words) - words_kept
                frame = frames.get(kept, words_kept)
            if kept < len(frames.exemplars) or definition_cut:
                logger.debug("%s: context cut to fit %d tokens (%d exemplars dropped, "
                             "%d instruction words cut)", task.name, budget,
                             len(frames.exemplars) - kept, definition_cut)
            chosen.append((frame, input_ids_for(frame)))

        # Inputs still too long lose their last words: one tokenization with offsets, together.
        tails = [i for i, (frame, ids) in enumerate(chosen) if frame.length + len(ids) > budget]
        pieces = [chosen[i][0].sep + texts[i] for i in tails]
        cut_ids = dict(zip(tails, (
            _prefix_within(ids, offsets, piece, budget - chosen[i][0].length)
            for i, piece, (ids, offsets) in zip(tails, pieces, self._ids_and_offsets(pieces),
                                                strict=True)), strict=True))
        if tails:
            logger.debug("%s: %d inputs longer than the %d-token budget even without context "
                         "lost their last words", task.name, len(tails), budget)
        return [(frame.assemble(cut_ids.get(i, ids)), i in cut_ids)
                for i, (frame, ids) in enumerate(chosen)]

    def _ids_and_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids of each text (no special tokens) with each token's character span."""
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return list(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True))


def _prefix_within(
    ids: list[int], offsets: list[tuple[int, int]], text: str, room: int
) -> list[int]:
    """The ids of the longest whole-word prefix of ``text`` that fits ``room`` tokens: its
    first tokens, up to the end of the last word that ends within them. (For a tokenizer whose
    tokens never span whitespace, which :func:`_pieces_join_exactly` checks, the ids of a word
    prefix are a prefix of the ids.)"""
    if room <= 0:
        return []
    if len(ids) <= room:
        return ids
    limit = offsets[room][0]  # where the first token beyond the room starts
    end = 0  # the end of the last word wholly before it
    for match in re.finditer(r"\S+", text):
        if match.end() > limit:
            break
        end = match.end()
    return ids[: _tokens_before(offsets[:room], end)]


def _tokens_before(offsets: list[tuple[int, int]], end: int) -> int:
    """How many tokens start before character ``end`` (those of the words that end by it, for a
    tokenizer whose tokens never span whitespace)."""
    return sum(1 for start, _ in offsets if start < end)


@dataclass(frozen=True)
class _Frame:
    """A task's context around the input, tokenized: ids before it, the whitespace that joins
    the input to them, ids after it, and the special tokens around the whole."""

    before: list[int]
    sep: str
    after: list[int]
    specials: tuple[list[int], list[int]]

    @property
    def length(self) -> int:
        return (len(self.before) + len(self.after)
                + len(self.specials[0]) + len(self.specials[1]))

    def assemble(self, input_ids: list[int]) -> list[int]:
        opening, closing = self.specials
        return [*opening, *self.before, *input_ids, *self.after, *closing]


# Stands for the input while a context is rendered around it (a private-use character: never in
# SNI text).
_SLOT = "\ue000"


class _Frames:
    """One task's frames, tokenized once each, by (exemplars kept, instruction words kept)."""

    def __init__(self, encoder: ExampleEncoder, task: Task) -> None:
        self.encoder = encoder
        self.task = task
        self.exemplars = list(encoder.context.exemplars(task))
        self._frames: dict[tuple[int, int | None], _Frame] = {}

    def get(self, exemplars: int, definition_words: int | None) -> _Frame:
        key = (exemplars, definition_words)
        if key not in self._frames:
            definition = (self.task.definition if definition_words is None
                          else " ".join(self.task.definition.split()[:definition_words]))
            text = self.encoder.context.render(
                self.task, _SLOT, self.exemplars[:exemplars], definition)
            if text.count(_SLOT) != 1:
                raise ConfigError(
                    f"context {self.encoder.context.name!r} must place the input once in its "
                    f"rendering (task {self.task.name})")
            before, after = text.split(_SLOT)
            core = before.rstrip()
            ids = self.encoder._plain_ids_many([core, after])
            assert self.encoder._specials is not None
            self._frames[key] = _Frame(ids[0] if core else [], before[len(core):],
                                       ids[1] if after else [], self.encoder._specials)
        return self._frames[key]


# A text with the joints an SNI context makes (spaces, newlines, blank lines, punctuation,
# non-ASCII), cut into the pieces :class:`ExampleEncoder` tokenizes apart.
_JOINT_PROBE = (
    "Definition: Answer the question.\n\nPositive Example 1 -\nInput:",
    " Who's \"there\", 3.5 times? Caf\u00e9-na\u00efve\n\t(x)",
    "\nOutput: yes.\ninput:",
    " [a]{b} 12,000-fold!",
    "\nOutput:",
)


def _plain_backend(tokenizer: PreTrainedTokenizerBase) -> Any | None:
    """The fast tokenizer's own backend, whose batch call skips the wrapper's masks and dicts."""
    return getattr(tokenizer, "backend_tokenizer", None)


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
