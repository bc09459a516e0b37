"""Tiny decoder-only models of real shapes, built from local configs with the bundled tokenizer.

A Llama-shaped one (grouped-query attention, rotary positions), a GPT-NeoX-shaped one (fused
query_key_value, partial rotary) and a GPT-2-shaped one (learned absolute positions, Conv1D
layers), random weights, ~1M parameters each, fast on a CPU. Rotary attention depends on
relative positions only, so a row's positions shifted by its left padding change its logits
by rounding alone; learned absolute positions change them outright, which is why position
ids under left padding are checked on GPT-2's shape too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer, save_model


def build_causal_model(folder: Path, shape: str = "llama", *, pad_token: bool = True,
                       chat_template: str | None = None, seed: int = 0) -> Path:
    """Save a tiny ``shape`` ("llama", "gpt_neox" or "gpt2") model with the bundled tokenizer to
    ``folder``; ``pad_token=False`` saves a tokenizer that has none."""
    tokenizer = load_model_and_tokenizer(DEFAULT_MODEL).tokenizer
    common = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 512,
              "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None,
              "pad_token_id": tokenizer.pad_token_id if pad_token else None}
    torch.manual_seed(seed)
    if shape == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **common))
    elif shape == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(rotary_pct=0.5, **common))
    elif shape == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=512,
            eos_token_id=common["eos_token_id"], bos_token_id=None,
            pad_token_id=common["pad_token_id"],
        ))
    else:
        raise ValueError(shape)
    if not pad_token:
        tokenizer.pad_token = None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return save_model(model, tokenizer, folder)
