"""Per-token losses score only target positions and equal the model's own loss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from itransfer.encoding.examples import EncodedExample, collate, target_mask
from itransfer.encoding.token_losses import token_losses
from itransfer.models.loading import load_model_and_tokenizer


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


# The tests below pin how the losses are computed, not only their values: the narrowing of the
# output layer to target positions, the fall-back when it cannot narrow, reused encoder
# outputs, wrapped models and the float precision of the result (mutation testing, issue 27).

def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, bos_token_id=1,
                   eos_token_id=1, pad_token_id=0)
    ).eval()


def _t5(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model_and_tokenizer(tiny_model_dir).model.eval()


def _batch(causal: bool, vocab: int = 300) -> dict[str, torch.Tensor]:
    return collate(_examples(vocab), pad_token_id=0, architecture="causal" if causal else "seq2seq")


def _reference(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], causal: bool
) -> torch.Tensor:
    """Per-token cross-entropy from the model's full [batch, length, vocab] logits."""
    if causal:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
    else:
        logits, targets = model(**batch).logits, batch["labels"]
    return torch.nn.functional.cross_entropy(
        logits.double().reshape(-1, logits.size(-1)), targets.reshape(-1),
        ignore_index=-100, reduction="none").view(targets.shape)


def _head_inputs(model: torch.nn.Module) -> list[tuple[int, ...]]:
    """The shapes the output layer computes on (a forward hook sees its pre-hooks' result)."""
    shapes: list[tuple[int, ...]] = []
    model.get_output_embeddings().register_forward_hook(
        lambda _module, args, _output: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("causal", [True, False])
def test_only_target_positions_reach_the_output_layer(
    causal: bool, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _gpt2() if causal else _t5(tiny_model_dir)
    batch = _batch(causal, model.config.vocab_size)
    expected = _reference(model, batch, causal)
    shapes = _head_inputs(model)
    with caplog.at_level("WARNING"):
        losses = token_losses(model, batch)
    scored = int(target_mask(batch, causal=causal).sum())
    assert shapes == [(scored, model.config.hidden_size if causal else model.config.d_model)]
    assert not caplog.records
    assert losses.dtype == torch.float32 and losses.shape == expected.shape
    assert torch.allclose(losses.double(), expected, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_a_head_that_routes_batch_rows_scores_every_position(
    causal: bool, tiny_model_dir: Path
) -> None:
    model = _gpt2() if causal else _t5(tiny_model_dir)
    model.get_output_embeddings().routes_by_batch_row = True
    batch = _batch(causal, model.config.vocab_size)
    shapes = _head_inputs(model)
    losses = token_losses(model, batch)
    assert len(shapes) == 1 and len(shapes[0]) == 3  # [batch, length, hidden]: not narrowed
    assert losses.dtype == torch.float32
    assert torch.allclose(losses.double(), _reference(model, batch, causal), atol=1e-5)


def test_a_routed_head_with_one_target_per_example_scores_every_position() -> None:
    """As many batch rows as target tokens must not pass for narrowed logits."""
    model = _gpt2()
    model.get_output_embeddings().routes_by_batch_row = True
    examples = [EncodedExample(tuple(range(5, 5 + n)), (7,)) for n in (3, 8, 5)]
    batch = collate(examples, pad_token_id=0, architecture="causal")
    assert int(target_mask(batch, causal=True).sum()) == len(examples)
    losses = token_losses(model, batch)
    assert torch.allclose(losses.double(), _reference(model, batch, True), atol=1e-5)


class _ReshapesLogits(torch.nn.Module):
    """A decoder-only model that adds a leading axis to 2-D logits after its output layer; its
    config has no ``is_encoder_decoder`` at all."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = SimpleNamespace(vocab_size=inner.config.vocab_size)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.get_output_embeddings()

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        logits = self.inner(**inputs).logits
        return SimpleNamespace(logits=logits[None] if logits.dim() == 2 else logits)


def test_a_model_that_reshapes_its_logits_is_scored_everywhere_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = _gpt2()
    batch = _batch(True)
    with caplog.at_level("WARNING", logger="itransfer.encoding.token_losses"):
        losses = token_losses(_ReshapesLogits(inner), batch)
    assert [record.getMessage() for record in caplog.records] == [
        "_ReshapesLogits: the output layer's input could not be narrowed to the target "
        "positions; computing logits everywhere"
    ]
    assert torch.allclose(losses.double(), _reference(inner, batch, True), atol=1e-5)


def test_given_encoder_outputs_the_encoder_does_not_run_again(tiny_model_dir: Path) -> None:
    model = _t5(tiny_model_dir)
    batch = _batch(False, model.config.vocab_size)
    calls: list[int] = []
    model.get_encoder().register_forward_hook(lambda *_: calls.append(1))
    encoded = model.get_encoder()(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"])
    reused = token_losses(model, batch, encoder_outputs=encoded)
    assert len(calls) == 1
    assert torch.equal(reused, token_losses(model, batch)) and len(calls) == 2


class _Wrapper(torch.nn.Module):
    """Stands for DDP (``.module``) or torch.compile (``._orig_mod``): no config of its own."""

    def __init__(self, inner: torch.nn.Module, attribute: str) -> None:
        super().__init__()
        setattr(self, attribute, inner)
        self.attribute = attribute

    def forward(self, **inputs: torch.Tensor) -> object:
        return getattr(self, self.attribute)(**inputs)


@pytest.mark.parametrize("attribute", ["module", "_orig_mod"])
def test_wrapped_models_are_scored_through_the_inner_model(attribute: str) -> None:
    model = _gpt2()
    batch = _batch(True)
    expected = token_losses(model, batch)
    shapes = _head_inputs(model)
    wrapped = _Wrapper(_Wrapper(model, attribute), "module") if attribute == "module" else \
        _Wrapper(model, attribute)
    assert torch.equal(token_losses(wrapped, batch), expected)
    assert len(shapes) == 1 and len(shapes[0]) == 2  # the inner model's head was narrowed


@pytest.mark.parametrize(("dtype", "expected"), [(torch.float64, torch.float64),
                                                 (torch.bfloat16, torch.float32)])
def test_losses_keep_float64_and_upcast_half_precision(
    dtype: torch.dtype, expected: torch.dtype
) -> None:
    model = _gpt2().to(dtype)
    batch = _batch(True)
    losses = token_losses(model, batch)
    assert losses.dtype == expected
    model.get_output_embeddings().routes_by_batch_row = True  # the path without narrowing
    assert token_losses(model, batch).dtype == expected


def test_a_left_padded_causal_batch_is_scored_with_its_attention_mask() -> None:
    """collate pads on the right, where a causal model's mask changes no target; a caller's
    left-padded batch shows that the mask reaches the model."""
    model = _gpt2()
    right = _batch(True)
    lengths = right["attention_mask"].sum(dim=1)
    left = {key: torch.stack([row.roll(int(row.numel() - n))
                              for row, n in zip(value, lengths, strict=True)])
            for key, value in right.items()}
    losses = token_losses(model, left)
    assert torch.allclose(losses.double(), _reference(model, left, True), atol=1e-5)
    unmasked = _reference(model, left | {"attention_mask": torch.ones_like(left["input_ids"])},
                          True)
    assert not torch.allclose(losses.double(), unmasked, atol=1e-3)
