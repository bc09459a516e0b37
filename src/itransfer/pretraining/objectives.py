"""T5's pre-training objectives on token ids: span corruption and the prefix LM (LM adaptation)."""

from __future__ import annotations

import numpy as np

from itransfer.pretraining.tokenizer import EOS_ID


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's ``random_spans_noise_mask``: a boolean mask of alternating clean / noise spans."""
    num_noise_tokens = min(max(round(length * noise_density), 1), length - 1)
    num_noise_spans = max(round(num_noise_tokens / mean_noise_span_length), 1)
    num_noise_spans = min(num_noise_spans, num_noise_tokens, length - num_noise_tokens)

    def segment_lengths(num_items: int, num_segments: int) -> np.ndarray:
        first_in_segment = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(first_in_segment)
        segment_id = np.cumsum(np.concatenate([[0], first_in_segment]))
        return np.bincount(segment_id, minlength=num_segments)

    noise_lengths = segment_lengths(num_noise_tokens, num_noise_spans)
    clean_lengths = segment_lengths(length - num_noise_tokens, num_noise_spans)
    # Each sequence starts clean, then noise, then clean ... (as in the T5 code).
    interleaved = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)
    span_starts = np.cumsum(interleaved)[:-1]
    starts = np.zeros(length, dtype=np.int64)
    starts[span_starts] = 1
    return np.cumsum(starts) % 2 == 1


def apply_span_corruption(
    tokens: list[int], noise_mask: np.ndarray, sentinels: list[int], eos_id: int = EOS_ID
) -> tuple[list[int], list[int]]:
    """Replace each noise span by the next sentinel in the input; the target lists the spans.

    ``[a b c d e]`` with ``c d`` noisy → inputs ``[a b S0 e </s>]``, targets ``[S0 c d </s>]``.
    """
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    previous_noise = False
    for token, noisy in zip(tokens, noise_mask.tolist(), strict=True):
        if noisy:
            if not previous_noise:
                span += 1
                inputs.append(sentinels[span])
                targets.append(sentinels[span])
            targets.append(token)
        else:
            inputs.append(token)
        previous_noise = noisy
    return [*inputs, eos_id], [*targets, eos_id]


def span_corruption_raw_length(
    input_length: int, noise_density: float, mean_noise_span_length: float
) -> int:
    """Raw tokens per example so that the corrupted input (with sentinels and EOS) fits
    ``input_length`` (T5's ``random_spans_helper``)."""

    def corrupted_input_length(raw: int) -> int:
        noise = round(raw * noise_density)
        spans = max(round(noise / mean_noise_span_length), 1)
        return raw - noise + spans + 1

    raw = input_length
    while corrupted_input_length(raw + 1) <= input_length:
        raw += 1
    return raw


def split_prefix_lm(
    window: list[int], rng: np.random.Generator, max_input: int, max_target: int
) -> tuple[list[int], list[int]]:
    """Cut ``window`` at a uniform random point: the encoder reads up to ``max_input`` tokens
    before it, the decoder predicts up to ``max_target`` tokens after it."""
    split = int(rng.integers(1, len(window)))
    return window[max(0, split - max_input):split], window[split:split + max_target]
