"""Keyed dropout: a row's masks depend on its key and the element, never on the batch around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from itransfer.eval.keyed_dropout import example_keys, keep_mask, keyed_dropout

CPU = torch.device("cpu")
KEYS = torch.tensor(example_keys(cell_seed=7, step=0, count=16))


def _fmix32_reference(value: int) -> int:
    mask = (1 << 32) - 1
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & mask
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & mask
    return value ^ (value >> 16)


def test_masks_do_not_depend_on_padding_or_on_the_other_rows() -> None:
    hidden = keep_mask((16, 20, 24), KEYS, call=3, p=0.3, device=CPU)
    padded = keep_mask((16, 33, 24), KEYS, call=3, p=0.3, device=CPU)
    assert torch.equal(padded[:, :20], hidden)
    picked = [9, 2, 2, 14]
    assert torch.equal(keep_mask((4, 20, 24), KEYS[picked], 3, 0.3, CPU), hidden[picked])
    # Attention probabilities [rows, heads, queries, keys]: both lengths are padded.
    attention = keep_mask((16, 4, 11, 13), KEYS, call=0, p=0.3, device=CPU)
    assert torch.equal(keep_mask((16, 4, 17, 19), KEYS, 0, 0.3, CPU)[:, :, :11, :13], attention)


def test_masks_differ_by_call_row_and_head_and_keep_one_minus_p() -> None:
    first = keep_mask((16, 64, 64), KEYS, call=0, p=0.5, device=CPU).float()
    second = keep_mask((16, 64, 64), KEYS, call=1, p=0.5, device=CPU).float()
    # Independent fair coins agree half of the time.
    assert (first == second).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert (first[0] == first[1]).float().mean().item() == pytest.approx(0.5, abs=0.02)
    heads = keep_mask((2, 8, 32, 32), KEYS[:2], call=0, p=0.5, device=CPU).float()
    assert (heads[:, 0] == heads[:, 1]).float().mean().item() == pytest.approx(0.5, abs=0.03)
    deeper = keep_mask((2, 3, 4, 32, 32), KEYS[:2], call=0, p=0.5, device=CPU).float()
    agree = (deeper[:, 1, 2] == deeper[:, 2, 1]).float().mean().item()
    assert agree == pytest.approx(0.5, abs=0.03)
    assert torch.equal(keep_mask((2, 3, 4, 20, 32), KEYS[:2], 0, 0.5, CPU), deeper[..., :20, :] > 0)
    kept = keep_mask((16, 128, 128), KEYS, call=0, p=0.1, device=CPU).float().mean().item()
    assert kept == pytest.approx(0.9, abs=0.003)
    assert example_keys(7, 0, 3) != example_keys(7, 1, 3) != example_keys(8, 0, 3)


def test_hash_arithmetic_wraps_like_the_reference() -> None:
    # The masks rely on int32 multiplication wrapping modulo 2**32 on this platform.
    from itransfer.eval.keyed_dropout import _fmix32_

    values = [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1, 987654321]
    signed = torch.tensor([v - (1 << 32) if v >= 2**31 else v for v in values], dtype=torch.int32)
    hashed = _fmix32_(signed.clone())
    assert [int(h) & 0xFFFFFFFF for h in hashed] == [_fmix32_reference(v) for v in values]


def test_every_dropout_of_a_forward_pass_is_keyed() -> None:
    x = torch.randn(4, 6, 8)
    with keyed_dropout(KEYS[:4]):
        module = torch.nn.Dropout(0.4)(x)  # the module and the function number their calls
        function = F.dropout(x, 0.4, training=True)
        untouched = F.dropout(x, 0.4, training=False)
    expected_first = x * keep_mask(x.shape, KEYS[:4], 0, 0.4, CPU) / 0.6
    expected_second = x * keep_mask(x.shape, KEYS[:4], 1, 0.4, CPU) / 0.6
    torch.testing.assert_close(module, expected_first)
    torch.testing.assert_close(function, expected_second)
    assert untouched is x
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    with keyed_dropout(KEYS[:4]):
        F.dropout(x, 0.4, training=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global draws
    with keyed_dropout(KEYS[:3]), pytest.raises(RuntimeError, match="3 row keys"):
        F.dropout(x, 0.4, training=True)
    with keyed_dropout(KEYS[:4]), pytest.raises(NotImplementedError, match="dropout2d"):
        F.dropout2d(x, 0.4, training=True)


def test_fused_attention_dropout_is_keyed_per_row() -> None:
    torch.manual_seed(0)
    query, key, value = (torch.randn(4, 2, 5, 8) for _ in range(3))
    with keyed_dropout(KEYS[:4]):
        together = F.scaled_dot_product_attention(query, key, value, dropout_p=0.5, is_causal=True)
    with keyed_dropout(KEYS[2:3]):
        alone = F.scaled_dot_product_attention(
            query[2:3], key[2:3], value[2:3], dropout_p=0.5, is_causal=True
        )
    torch.testing.assert_close(together[2:3], alone)
    with keyed_dropout(KEYS[:4]):
        no_dropout = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    reference = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    torch.testing.assert_close(no_dropout, reference)
    assert not torch.allclose(together, reference)
    # p → 0 in the math path gives the fused kernel's result.
    with keyed_dropout(KEYS[:4]):
        tiny = F.scaled_dot_product_attention(query, key, value, dropout_p=1e-9, is_causal=True)
    torch.testing.assert_close(tiny, reference)
