"""What a run's checkpoints cost on disk at real model sizes: the weights-only trajectory plus
the rolling resumable checkpoints, against the same trajectory with the optimizer in each
checkpoint (how runs were saved before). Computed from the parameter count, counted on the
meta device (nothing is allocated or downloaded).

    python bench/checkpoint_disk.py                     # T5-large (LM-adapted) shape, 6 checkpoints
    python bench/checkpoint_disk.py --checkpoints 11    # another trajectory length
"""

from __future__ import annotations

import argparse

import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from itransfer.train.resumable import CheckpointDiskUsage

SHAPES = {
    # google/t5-large-lm-adapt, the paper's model: T5 v1.1 (gated-GELU, untied embeddings)
    "t5-large-lm-adapt": lambda: T5ForConditionalGeneration(T5Config(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24,
        num_decoder_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False)),
    # the original T5-large (ReLU, tied embeddings)
    "t5-large": lambda: T5ForConditionalGeneration(T5Config(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24,
        num_decoder_layers=24, num_heads=16)),
    # a ~1B decoder-only model (Llama-3.2-1B's shape)
    "llama-1b": lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=6, help="trajectory checkpoints")
    args = parser.parse_args()
    for name, build in SHAPES.items():
        with torch.device("meta"):
            model = build()
        usage = CheckpointDiskUsage(sum(p.numel() for p in model.parameters()), args.checkpoints)
        print(f"{name}:")
        for line in usage.lines():
            print(f"  {line}")


if __name__ == "__main__":
    main()
