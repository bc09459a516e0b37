"""Build the embedded default model: a tiny LM-adapted T5, made the way t5-lm-adapt was.

Lester et al. (2021) took T5 v1.1, pre-trained on C4 with span corruption, and continued
training it with a prefix-LM objective ("LM adaptation"); the paper (§2.4, App. B) instruction-
tunes those checkpoints. This recipe repeats the three steps at toy scale on a text corpus:

1. train a SentencePiece-style (Metaspace) BPE tokenizer with T5's special tokens
   (pad=0, ``</s>``=1, unk=2, ``<extra_id_0>``..``<extra_id_99>`` at the top of the vocabulary);
2. span corruption (15 % noise, mean span 3), as T5;
3. prefix LM: a window of text split at a random point, the encoder reads the prefix and the
   decoder predicts the continuation, as the LM adaptation.

The tokenizer lives in :mod:`itransfer.pretraining.tokenizer`, the objectives in
:mod:`itransfer.pretraining.objectives`; this module packs the corpus and runs the two phases. The
decoder-only default (``itransfer:tiny-llama``) reuses this tokenizer, the corpus packing and
:func:`train_phase`: see :mod:`itransfer.pretraining.causal`.

Run it from the command line::

    itransfer pretrain --out runs/tiny-t5            # the shipped settings, ~12 min on 2 cores

or from Python: ``pretrain(PretrainConfig(), Path("runs/tiny-t5"))``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from itransfer.data.corpus import iter_corpus_documents
from itransfer.encoding.examples import IGNORE_INDEX, EncodedExample, collate
from itransfer.errors import ConfigError, ITransferError
from itransfer.models.loading import save_model
from itransfer.pretraining.config import CausalPretrainConfig, PretrainConfig
from itransfer.pretraining.objectives import (
    apply_span_corruption,
    random_spans_noise_mask,
    span_corruption_raw_length,
    split_prefix_lm,
)
from itransfer.pretraining.tokenizer import (
    EOS_ID,
    PAD_ID,
    sentinel_ids,
    train_tokenizer,
)
from itransfer.runtime.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainStep:
    """What a progress callback sees after each optimizer step."""

    phase: str
    step: int
    total_steps: int
    loss: float
    lr: float


@dataclass
class PhaseResult:
    phase: str
    steps: int
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)


ProgressCallback = Callable[[PretrainStep], None]


# --------------------------------------------------------------------------- data


def packed_windows(
    documents: Callable[[int], Iterator[str]],
    tokenizer: PreTrainedTokenizerFast,
    window_length: int,
    tokenize_batch: int = 256,
) -> Iterator[list[int]]:
    """Endless fixed-length windows of the concatenated token stream (each document ends with
    ``</s>``), as T5 packs C4. ``documents(epoch)`` reopens the corpus for each pass."""
    buffer: list[int] = []
    # Every document adds at least its </s>, so even a tiny corpus fills a window eventually.
    for epoch in itertools.count():
        for chunk in _batched(documents(epoch), tokenize_batch):
            for ids in tokenizer(chunk, add_special_tokens=True)["input_ids"]:
                buffer.extend(ids)
            while len(buffer) >= window_length:
                yield buffer[:window_length]
                del buffer[:window_length]


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def collate_pairs(pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """A T5 batch of (encoder input, target) id pairs, padded as instruction tuning pads."""
    examples = [EncodedExample(tuple(source), tuple(target)) for source, target in pairs]
    return collate(examples, pad_token_id=PAD_ID, architecture="seq2seq")


def span_corruption_batches(
    windows: Iterator[list[int]], config: PretrainConfig, sentinels: list[int],
    rng: np.random.Generator,
) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        pairs = []
        for _ in range(config.batch_size):
            window = next(windows)
            mask = random_spans_noise_mask(
                len(window), config.noise_density, config.mean_noise_span_length, rng
            )
            pairs.append(apply_span_corruption(window, mask, sentinels))
        yield collate_pairs(pairs)


def prefix_lm_batches(
    windows: Iterator[list[int]], config: PretrainConfig, rng: np.random.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        pairs = [
            split_prefix_lm(
                next(windows), rng, config.prefix_input_length, config.prefix_target_length
            )
            for _ in range(config.batch_size)
        ]
        yield collate_pairs(pairs)


# --------------------------------------------------------------------------- model + loop


def build_model(config: PretrainConfig, vocab_size: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 v1.1-style model (gated-GELU, relative position buckets).

    transformers 5 always ties ``lm_head`` to the shared embedding for T5; we keep the original
    T5 rescaling of decoder outputs by ``d_model**-0.5`` that goes with tying.
    """
    t5_config = T5Config(
        vocab_size=vocab_size,
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    return T5ForConditionalGeneration(t5_config)


def phase_schedule(warmup_steps: int, steps: int) -> Callable[[int], float]:
    """LR factor of one pre-training phase: the lower of a warm-up ramp and a decay to 0.

    Not the instruction-tuning loop's ``linear_schedule`` (nor transformers'
    ``get_linear_schedule_with_warmup``, which also starts at 0): the decay line runs from step
    0 rather than from the end of warm-up, and warm-up is capped at a tenth of the phase (so
    short test runs still decay), which puts the peak a little below ``lr``. The shipped
    ``itransfer:tiny-t5`` was trained with exactly this; changing it changes the recipe.
    """
    warmup = max(1, min(warmup_steps, steps // 10 + 1))

    def factor(step: int) -> float:
        return min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps)))

    return factor


class OptimizerConfig(Protocol):
    """What :func:`train_phase` reads from a recipe config (seq2seq's or the causal one)."""

    lr: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float


def train_phase(
    model: PreTrainedModel,
    batches: Iterator[dict[str, torch.Tensor]],
    *,
    phase: str,
    steps: int,
    config: OptimizerConfig,
    progress: ProgressCallback | None = None,
) -> PhaseResult:
    """One objective: AdamW with linear warm-up to ``config.lr`` and linear decay to zero."""
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, phase_schedule(config.warmup_steps, steps)
    )
    model.train()
    losses: list[float] = []
    for step in range(1, steps + 1):
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(PretrainStep(phase, step, steps, losses[-1], lr))
    model.eval()
    tail = losses[-min(len(losses), 100):]
    final = float(np.mean(tail)) if tail else math.nan
    logger.info("%s: %d steps, final loss %.3f", phase, steps, final)
    return PhaseResult(phase, steps, final, time.perf_counter() - started, losses)


@torch.no_grad()
def prefix_lm_loss(
    model: T5ForConditionalGeneration,
    tokenizer: PreTrainedTokenizerFast,
    documents: Iterable[str],
    *,
    max_input: int = 128,
    max_target: int = 64,
    batch_size: int = 32,
) -> float:
    """Mean per-token loss of predicting the second half of each document from its first half:
    the LM-adaptation objective on unseen text, deterministic so runs can be compared."""
    pairs = []
    for ids in tokenizer(list(documents), add_special_tokens=True)["input_ids"]:
        if len(ids) >= 4:
            middle = len(ids) // 2
            pairs.append((ids[max(0, middle - max_input):middle], ids[middle:middle + max_target]))
    if not pairs:
        raise ConfigError("prefix_lm_loss needs documents of at least 4 tokens")
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start:start + batch_size])
        tokens = int((batch["labels"] != IGNORE_INDEX).sum())
        total_loss += float(model(**batch).loss) * tokens
        total_tokens += tokens
    return total_loss / total_tokens


def unigram_entropy(token_counts: Counter[int]) -> float:
    """Cross-entropy (nats/token) of the best context-free predictor: the baseline to beat."""
    counts = np.array(list(token_counts.values()), dtype=np.float64)
    probabilities = counts / counts.sum()
    return float(-(probabilities * np.log(probabilities)).sum())


def pretrain(
    config: PretrainConfig, out_dir: str | Path, progress: ProgressCallback | None = None
) -> Path:
    """Tokenizer → span corruption → prefix LM; save to ``out_dir`` (atomically) and return it.

    ``out_dir`` must be absent or empty. Also writes ``pretrain_log.json`` beside the weights:
    config, losses, unigram baseline, timings.
    """
    return run_recipe(_pretrain, config, out_dir, progress)


Recipe = TypeVar("Recipe", PretrainConfig, CausalPretrainConfig)


def run_recipe(
    body: Callable[[Recipe, Path, ProgressCallback | None, float], Path], config: Recipe,
    out_dir: str | Path, progress: ProgressCallback | None,
) -> Path:
    """What both recipes do around their training: refuse a non-empty ``out_dir``, seed, and
    use ``config.num_threads`` torch threads for the call only."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        # Checked before hours of training, and so a typo cannot replace an unrelated folder.
        raise ITransferError(f"{out_dir} already exists and is not empty; choose a new --out")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads or min(2, os.cpu_count() or 1))
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    try:
        return body(config, out_dir, progress, started)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(
    config: PretrainConfig, out_dir: Path, progress: ProgressCallback | None, started: float
) -> Path:
    tokenizer, baseline = _tokenizer_and_baseline(config)
    model = build_model(config, len(tokenizer))

    def documents(phase_seed: int) -> Callable[[int], Iterator[str]]:
        return lambda epoch: iter_corpus_documents(
            config.corpus, shuffle_buffer=config.shuffle_buffer,
            seed=config.seed * 1000 + phase_seed * 100 + epoch,
        )

    span_windows = packed_windows(
        documents(1), tokenizer,
        span_corruption_raw_length(
            config.span_input_length, config.noise_density, config.mean_noise_span_length
        ),
    )
    span = train_phase(
        model,
        span_corruption_batches(
            span_windows, config, sentinel_ids(tokenizer), np.random.default_rng(config.seed + 1)
        ),
        phase="span_corruption", steps=config.steps_span, config=config, progress=progress,
    )
    prefix_windows = packed_windows(
        documents(2), tokenizer, config.prefix_input_length + config.prefix_target_length
    )
    prefix = train_phase(
        model,
        prefix_lm_batches(prefix_windows, config, np.random.default_rng(config.seed + 2)),
        phase="prefix_lm", steps=config.steps_prefix, config=config, progress=progress,
    )
    save_model(model, tokenizer, out_dir, overwrite=True)
    log = {
        "config": config.model_dump(),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "unigram_baseline_nats": baseline,
        "phases": [
            {k: v for k, v in asdict(result).items() if k != "losses"}
            | {"loss_every_50_steps": result.losses[::50]}
            for result in (span, prefix)
        ],
        "wall_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_text(out_dir / "pretrain_log.json", json.dumps(log, indent=1) + "\n")
    return out_dir


def _tokenizer_and_baseline(config: PretrainConfig) -> tuple[PreTrainedTokenizerFast, float]:
    """A tokenizer trained on the corpus's first documents, and the unigram entropy of their
    first 20,000 in its tokens: the loss a model that ignores context reaches."""
    tokenizer_sample = [
        doc for _, doc in zip(
            range(config.tokenizer_documents), iter_corpus_documents(config.corpus), strict=False
        )
    ]
    tokenizer = train_tokenizer(tokenizer_sample, config.vocab_size)
    token_counts: Counter[int] = Counter()
    for ids in tokenizer(tokenizer_sample[:20_000])["input_ids"]:
        token_counts.update(ids)
    baseline = unigram_entropy(token_counts)
    logger.info("tokenizer: %d tokens; unigram baseline %.3f nats", len(tokenizer), baseline)
    return tokenizer, baseline
