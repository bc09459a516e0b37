"""Build the embedded decoder-only default: a tiny Llama-shaped LM, trained as GPT/Llama are.

One objective, next-token prediction on packed windows of the corpus (documents joined with
``</s>``), on the same corpus as ``itransfer:tiny-t5`` and with *its* tokenizer rather than a
new one, so the two families share a vocabulary and their losses compare token for token.
The model is a ``LlamaForCausalLM``: RMSNorm, SwiGLU, rotary positions, grouped-query attention
(4 query heads share 2 key/value heads), tied embeddings, no dropout, no biases.

Run it from the command line::

    itransfer pretrain --architecture causal --out runs/tiny-llama   # the shipped settings

or from Python: ``pretrain_causal(CausalPretrainConfig(), Path("runs/tiny-llama"))``.
The optimizer, schedule and corpus streaming are :mod:`itransfer.pretraining.seq2seq`'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from itransfer.data.corpus import iter_corpus_documents
from itransfer.encoding.examples import IGNORE_INDEX
from itransfer.errors import ConfigError
from itransfer.models.loading import resolve_model_source, save_model
from itransfer.pretraining.config import CausalPretrainConfig
from itransfer.pretraining.seq2seq import (
    ProgressCallback,
    packed_windows,
    run_recipe,
    train_phase,
    unigram_entropy,
)
from itransfer.runtime.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)

CAUSAL_PHASE = "causal_lm"


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder or a bundled model (never the hub: recipes are local)."""
    source, local = resolve_model_source(name_or_path)
    if not local:
        raise ConfigError(f"pretrain.tokenizer must be a local folder or itransfer:NAME, "
                          f"not {name_or_path!r}")
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    # Load-time switches that save_pretrained would otherwise write into tokenizer_config.json;
    # without them the saved files are the source's, byte for byte.
    for switch in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(switch, None)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer of {name_or_path} needs an EOS and a pad token")
    return tokenizer


def build_causal_model(
    config: CausalPretrainConfig, tokenizer: PreTrainedTokenizerBase
) -> LlamaForCausalLM:
    """A randomly initialised Llama-shaped LM for ``tokenizer``'s vocabulary.

    BOS is the tokenizer's EOS (``</s>``), as GPT-2's ``<|endoftext|>``: in packed pre-training
    every document follows a ``</s>``, so that is what the model saw before a text starts.
    """
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_theta=config.rope_theta,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(llama_config)


def causal_lm_batches(
    windows: Iterator[list[int]], batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Full windows, no padding: every position predicts the next token (the model shifts)."""
    while True:
        input_ids = torch.tensor([next(windows) for _ in range(batch_size)], dtype=torch.long)
        yield {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
               "labels": input_ids.clone()}


@torch.no_grad()
def causal_prefix_lm_loss(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    documents: Iterable[str],
    *,
    max_input: int = 128,
    max_target: int = 64,
    batch_size: int = 32,
) -> float:
    """Mean per-token loss of each document's second half given its first half.

    The split is :func:`itransfer.pretraining.seq2seq.prefix_lm_loss`'s, so with the shared
    tokenizer the number compares directly with the seq2seq model's held-out prefix-LM loss.
    """
    sequences: list[tuple[list[int], int]] = []
    for ids in tokenizer(list(documents), add_special_tokens=True)["input_ids"]:
        if len(ids) >= 4:
            middle = len(ids) // 2
            prefix = ids[max(0, middle - max_input):middle]
            sequences.append((prefix + ids[middle:middle + max_target], len(prefix)))
    if not sequences:
        raise ConfigError("causal_prefix_lm_loss needs documents of at least 4 tokens")
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        # Right padding: positions then count from each row's first token without position ids.
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, prefix_length) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = 1
            labels[row, prefix_length:len(ids)] = torch.tensor(ids[prefix_length:])
        tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        total_loss += float(loss) * tokens
        total_tokens += tokens
    return total_loss / total_tokens


def pretrain_causal(
    config: CausalPretrainConfig, out_dir: str | Path, progress: ProgressCallback | None = None
) -> Path:
    """Causal LM pre-training; save to ``out_dir`` (atomically) with ``pretrain_log.json``.

    ``out_dir`` must be absent or empty.
    """
    return run_recipe(_pretrain_causal, config, out_dir, progress)


def _pretrain_causal(
    config: CausalPretrainConfig, out_dir: Path, progress: ProgressCallback | None,
    started: float,
) -> Path:
    tokenizer = load_tokenizer(config.tokenizer)
    token_counts: Counter[int] = Counter()
    sample = [doc for _, doc in zip(range(20_000), iter_corpus_documents(config.corpus),
                                    strict=False)]
    for ids in tokenizer(sample)["input_ids"]:
        token_counts.update(ids)
    baseline = unigram_entropy(token_counts)
    del sample

    model = build_causal_model(config, tokenizer)

    def documents(epoch: int) -> Iterator[str]:
        return iter_corpus_documents(config.corpus, shuffle_buffer=config.shuffle_buffer,
                                     seed=config.seed * 1000 + 300 + epoch)

    windows = packed_windows(documents, tokenizer, config.context_length)
    result = train_phase(model, causal_lm_batches(windows, config.batch_size),
                         phase=CAUSAL_PHASE, steps=config.steps, config=config,
                         progress=progress)
    save_model(model, tokenizer, out_dir, overwrite=True)
    log = {
        "architecture": "causal",
        "config": config.model_dump(),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "unigram_baseline_nats": baseline,
        "phases": [{k: v for k, v in asdict(result).items() if k != "losses"}
                   | {"loss_every_50_steps": result.losses[::50]}],
        "wall_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_text(out_dir / "pretrain_log.json", json.dumps(log, indent=1) + "\n")
    return out_dir

