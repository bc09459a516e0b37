"""Dropout whose masks belong to examples, not to batches: the same draw whatever the packing.

A transfer cell's dropout must not depend on which other cells share its forward passes, how a
global step is split into passes, how far each pass pads, or which process runs the cell —
otherwise the batched engine's speed knobs (``eval.cells_per_group``,
``eval.max_examples_per_pass``, ``eval.max_tokens_per_pass``) and the number of processes change
results. Inside :func:`keyed_dropout`, every dropout of the model (the LoRA's and the model's
own, including the attention-probability dropout inside ``scaled_dot_product_attention``) keeps
element ``x[b, ..., i, j]`` iff a hash of (row ``b``'s key, the dropout call's number in this
forward pass, the element's coordinates) is at least ``p``. A row's key is a function of its
cell and its place in the cell's step (:func:`example_keys`), so both engines, any grouping and
any padding draw the same masks for the same example. Padding positions get masks too, which
nothing reads.

Why hand-written: torch's generators are stateful streams, so a draw depends on everything drawn
before it and on the tensor's shape (padding); no library offers a counter-based draw addressed
by element coordinates. The hash is MurmurHash3's 32-bit finaliser (a bijection, so a mask has
no repeated draws), applied twice to fold in a 64-bit key, in wrapping int32 arithmetic: the
same masks on every device, and on CPU cheaper than ``torch.rand_like``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_MIX1 = 0x85EBCA6B - (1 << 32)  # MurmurHash3 fmix32 constants, as signed int32
_MIX2 = 0xC2B2AE35 - (1 << 32)
_MIX64_1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # SplitMix64 finaliser constants, as signed int64
_MIX64_2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN64 = 0x9E3779B97F4A7C15 - (1 << 64)
_THRESHOLD_BITS = 24  # a draw is the hash's top 24 bits
_MAX_TRAILING = 1 << 16  # the last two dimensions are packed into one 32-bit index

# Dropouts that cannot be keyed here: a model that uses one in training is refused, not run
# with unkeyed draws.
_UNSUPPORTED = (F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)


def example_keys(cell_seed: int, step: int, count: int) -> list[int]:
    """The dropout keys of a cell's ``count`` examples at optimizer step ``step``, by position."""
    keys = []
    for position in range(count):
        digest = hashlib.blake2b(f"{cell_seed}|{step}|{position}".encode(), digest_size=8)
        keys.append(int.from_bytes(digest.digest(), "big", signed=True))
    return keys


@contextmanager
def keyed_dropout(row_keys: Sequence[int] | torch.Tensor) -> Iterator[None]:
    """Inside, one forward pass's dropouts draw per row from ``row_keys`` (one key per row)."""
    with _KeyedDropoutMode(torch.as_tensor(row_keys, dtype=torch.int64)):
        yield


def keep_mask(
    shape: Sequence[int], row_keys: torch.Tensor, call: int, p: float, device: torch.device
) -> torch.Tensor:
    """Boolean keep-mask of ``shape`` (rows first) for dropout call number ``call``."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"keyed dropout needs a [rows, ...] tensor, got shape {shape}")
    if shape[0] != row_keys.shape[0]:
        raise RuntimeError(
            f"keyed dropout got a tensor of {shape[0]} rows but {row_keys.shape[0]} row keys"
        )
    # The call's key is mixed on the CPU and applied as a Python int: no host-to-device copy
    # per dropout call.
    call_key = int(_mix64(torch.tensor(call + 1)))
    keys = _mix64(row_keys.to(device) ^ call_key)
    trailing = shape[-2:] if len(shape) > 2 else shape[-1:]
    leading = shape[1 : len(shape) - len(trailing)]
    for size in leading:
        keys = _mix64(keys.unsqueeze(-1) ^ (torch.arange(1, size + 1, device=device) * _GOLDEN64))
    if any(size > _MAX_TRAILING for size in trailing):
        raise ValueError(f"keyed dropout supports trailing sizes up to {_MAX_TRAILING}: {shape}")
    index = torch.arange(trailing[-1], dtype=torch.int32, device=device)
    if len(trailing) == 2:
        rows = torch.arange(trailing[0], dtype=torch.int32, device=device) * _MAX_TRAILING
        index = rows.view(-1, 1) + index
    expand = (...,) + (None,) * len(trailing)
    low, high = _int32(keys & 0xFFFFFFFF), _int32(_shift_right(keys, 32, 64))
    draws = _fmix32_(_fmix32_(index ^ low[expand]).bitwise_xor_(high[expand]))
    threshold = round(p * (1 << _THRESHOLD_BITS))
    return draws.bitwise_right_shift_(32 - _THRESHOLD_BITS).bitwise_and_(
        (1 << _THRESHOLD_BITS) - 1
    ) >= threshold


class _KeyedDropoutMode(TorchFunctionMode):
    def __init__(self, row_keys: torch.Tensor) -> None:
        super().__init__()
        self.row_keys = row_keys
        self._row_keys_on: dict[torch.device, torch.Tensor] = {}  # copied once per device
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is F.dropout:
            return self._dropout(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if func in _UNSUPPORTED and _drops(args, kwargs):
            raise NotImplementedError(
                f"{func.__name__} in training cannot draw keyed masks; only F.dropout and "
                "scaled_dot_product_attention's dropout can"
            )
        return func(*args, **kwargs)

    def _dropout(
        self, input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
    ) -> torch.Tensor:
        if not training or p == 0:
            return input
        keep = self._next_mask(input, p)
        if inplace:
            return input.mul_(keep).mul_(1 / (1 - p))
        return input * keep * (1 / (1 - p))

    def _attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
        scale: float | None = None, enable_gqa: bool = False,
    ) -> torch.Tensor:
        if dropout_p == 0:
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                enable_gqa=enable_gqa,
            )
        # The fused kernels draw their own dropout; this is their math, with a keyed mask.
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            repeats = query.shape[-3] // key.shape[-3]
            key = key.repeat_interleave(repeats, dim=-3)
            value = value.repeat_interleave(repeats, dim=-3)
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        scores = query @ key.transpose(-2, -1) * scale
        if is_causal:
            length_q, length_k = query.shape[-2], key.shape[-2]
            allowed = torch.ones(length_q, length_k, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        weights = self._dropout(scores.softmax(dim=-1), dropout_p)
        return weights @ value

    def _next_mask(self, input: torch.Tensor, p: float) -> torch.Tensor:
        if input.device not in self._row_keys_on:
            self._row_keys_on[input.device] = self.row_keys.to(input.device)
        row_keys = self._row_keys_on[input.device]
        mask = keep_mask(input.shape, row_keys, self.calls, p, input.device)
        self.calls += 1
        return mask


def _drops(args: tuple, kwargs: dict) -> bool:
    p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
    training = kwargs.get("training", args[2] if len(args) > 2 else False)
    return bool(training) and p > 0


def _shift_right(values: torch.Tensor, bits: int, width: int) -> torch.Tensor:
    """Logical (unsigned) right shift of signed integers: torch's ``>>`` is arithmetic."""
    return (values >> bits) & ((1 << (width - bits)) - 1)


def _mix64(values: torch.Tensor) -> torch.Tensor:
    values = (values ^ _shift_right(values, 30, 64)) * _MIX64_1
    values = (values ^ _shift_right(values, 27, 64)) * _MIX64_2
    return values ^ _shift_right(values, 31, 64)


def _fmix32_(values: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's fmix32, in place (in-place int32 ops were 3-10x faster than new tensors)."""
    values.bitwise_xor_(values.bitwise_right_shift(16).bitwise_and_(0xFFFF)).mul_(_MIX1)
    values.bitwise_xor_(values.bitwise_right_shift(13).bitwise_and_(0x7FFFF)).mul_(_MIX2)
    return values.bitwise_xor_(values.bitwise_right_shift(16).bitwise_and_(0xFFFF))


def _int32(values: torch.Tensor) -> torch.Tensor:
    """int64 holding 0 ≤ v < 2**32 → the int32 with the same bits."""
    return (values - ((values >> 31) << 32)).to(torch.int32)
