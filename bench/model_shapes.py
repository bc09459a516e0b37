"""Real model sizes built from local configs (random weights, the bundled tokenizer): no download.

Shared by the benchmarks that check that itransfer keeps working at the paper's model size.
"""

from __future__ import annotations

from pathlib import Path

from itransfer.models import DEFAULT_MODEL, load_model_and_tokenizer, save_model

SHAPES = ("tiny", "t5-large-shape", "llama-1b-shape")


def build_shape(kind: str, target: Path) -> str:
    """A model folder (or, for ``tiny``, the bundled model's name) of the given shape."""
    if kind == "tiny":
        return DEFAULT_MODEL
    tokenizer = load_model_and_tokenizer(DEFAULT_MODEL).tokenizer
    if kind == "t5-large-shape":  # T5 v1.1 / LM-adapt large: 24+24 layers, d_model 1024
        from transformers import T5Config, T5ForConditionalGeneration

        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tokenizer), d_model=1024, d_kv=64, d_ff=2816, num_layers=24,
            num_decoder_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
            eos_token_id=1,
        ))
    elif kind == "llama-1b-shape":  # TinyLlama-1.1B's shape (GQA 32/4, rotary)
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632,
            num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
            max_position_embeddings=2048, tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")
    save_model(model, tokenizer, target)
    return str(target)
