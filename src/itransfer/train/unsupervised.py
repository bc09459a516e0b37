"""Unsupervised batches for mixing raw text into instruction tuning (§5.2).

The objective matches how the model was pre-trained last: prefix-LM for LM-adapted T5 (the
encoder reads a random-length prefix of a document, the decoder predicts the rest) and plain
causal LM for decoder-only models. Documents are streamed, never loaded whole; the stream's
position and generator are part of the checkpoint so a resumed run sees the same text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from itransfer.encoding.examples import Architecture, EncodedExample


class UnsupervisedBatches:
    """Endless global batches of prefix-LM (seq2seq) or causal-LM (decoder-only) examples."""

    def __init__(
        self,
        open_documents: Callable[[], Iterator[str]],
        tokenizer: PreTrainedTokenizerBase,
        architecture: Architecture,
        *,
        batch_size: int,
        max_length: int,
        seed: int,
    ) -> None:
        self.open_documents = open_documents
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.batch_size = batch_size
        self.max_length = max_length
        self._rng = np.random.default_rng([seed, 0xC4])
        self._documents: Iterator[str] = open_documents()
        self.documents_read = 0
        self.passes = 0

    def _next_document(self) -> str:
        for _ in range(2):
            for document in self._documents:
                self.documents_read += 1
                return document
            # End of the corpus: start another pass rather than stop training.
            self.passes += 1
            self._documents = self.open_documents()
        raise RuntimeError("the unsupervised corpus yielded no documents")

    def _example(self, document: str) -> EncodedExample | None:
        ids = self.tokenizer(document, add_special_tokens=False)["input_ids"][: self.max_length]
        eos = self.tokenizer.eos_token_id
        if self.architecture == "causal":
            return EncodedExample((), tuple(ids) + ((eos,) if eos is not None else ()))
        if len(ids) < 2:
            return None
        split = int(self._rng.integers(1, len(ids)))
        return EncodedExample((*ids[:split], eos), (*ids[split:], eos))

    def next_batch(self) -> list[EncodedExample]:
        batch: list[EncodedExample] = []
        while len(batch) < self.batch_size:
            example = self._example(self._next_document())
            if example is not None:
                batch.append(example)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "documents_read": self.documents_read,
            "passes": self.passes,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._documents = self.open_documents()
        self.documents_read = 0
        self.passes = 0
        target = int(state["documents_read"])
        while self.documents_read < target:
            self._next_document()
        self.passes = int(state["passes"])
        self._rng.bit_generator.state = state["rng"]
