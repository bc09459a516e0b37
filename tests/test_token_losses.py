"""Per-token losses score only target positions and equal the model's own loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from itransfer.examples import EncodedExample, collate
from itransfer.models import load_model_and_tokenizer
from itransfer.token_losses import token_losses


def _examples(vocab: int) -> list[EncodedExample]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(30, 2), (50, 17), (7, 1), (12, 6), (1, 3)]  # varied padding on both sides
    return [
        EncodedExample(
            tuple(torch.randint(5, vocab, (n,), generator=generator).tolist()),
            tuple(torch.randint(5, vocab, (m,), generator=generator).tolist()),
        )
        for n, m in shapes
    ]


def _check(model: torch.nn.Module, architecture: str, vocab: int) -> None:
    batch = collate(_examples(vocab), pad_token_id=0, architecture=architecture)
    losses = token_losses(model, batch)
    labels = batch["labels"] if architecture == "seq2seq" else batch["labels"][:, 1:]
    mask = labels != -100
    assert losses.shape == labels.shape and (losses[~mask] == 0).all()
    # HF's own loss is the mean over target tokens of the full-vocabulary cross-entropy.
    reference = model(**batch).loss
    assert float(losses[mask].mean()) == pytest.approx(float(reference), abs=1e-5)
    # Gradients flow as through the model's own loss.
    weight = model.get_output_embeddings().weight
    ours = torch.autograd.grad(losses[mask].mean(), weight)[0]
    theirs = torch.autograd.grad(model(**batch).loss, weight)[0]
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_seq2seq_losses_match_the_model_loss(tiny_model_dir: Path) -> None:
    loaded = load_model_and_tokenizer(tiny_model_dir)
    _check(loaded.model.eval(), "seq2seq", len(loaded.tokenizer))


def test_causal_losses_match_the_model_loss() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, bos_token_id=1,
                   eos_token_id=1, pad_token_id=0)
    ).eval()
    _check(model, "causal", 300)
