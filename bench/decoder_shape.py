"""A decoder-only model for the benchmarks: Llama's shape at the bundled T5's size, no download.

``tiny-llama-shape`` is a randomly initialised LlamaForCausalLM (grouped-query attention,
rotary positions, SwiGLU) with the bundled tokenizer, ~1.8M parameters like ``itransfer:tiny-t5``
(~2.3M), so the two families are timed at the same scale. The tokenizer's pad token is removed,
as many decoder-only tokenizers ship without one (itransfer pads with EOS then).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer, save_model

NAME = "tiny-llama-shape"


def build_tiny_llama(target: Path, *, seed: int = 0) -> Path:
    tokenizer = load_model_and_tokenizer(DEFAULT_MODEL).tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tokenizer.pad_token = None
    return save_model(model, tokenizer, target)
