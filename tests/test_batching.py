"""Length-grouped batches keep the task frequencies of P(K) and resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itransfer.data.batching import TaskBatchStream
from itransfer.sampling import build_sampler

SIZES = [50, 200, 750]


def _lengths(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Heavy-tailed lengths, like SNI's (median tens of tokens, a long tail).
    return [rng.lognormal(3.7, 1.0, size).astype(int) + 1 for size in SIZES]


def _stream(sampler_name: str = "proportional", window: int = 16) -> TaskBatchStream:
    lengths = _lengths()
    sampler = build_sampler({"name": sampler_name}, SIZES, total_steps=1000, batch_size=16)
    return TaskBatchStream(
        SIZES, sampler, batch_size=16, seed=3, window_batches=window,
        length_of=lambda task, instance: int(lengths[task][instance]),
    )


def _padding_fraction(stream: TaskBatchStream, steps: int) -> float:
    lengths = _lengths()
    padded = real = 0
    for step in range(steps):
        batch = [int(lengths[t][i]) for t, i in stream.next_batch(step)]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded


def test_task_frequencies_follow_p_of_k() -> None:
    for name, expected in (
        ("proportional", np.array(SIZES) / sum(SIZES)),
        ("uniform", np.full(3, 1 / 3)),
    ):
        stream = _stream(name)
        counts = np.zeros(3)
        for step in range(600):
            for task, _ in stream.next_batch(step):
                counts[task] += 1
        frequencies = counts / counts.sum()
        # 9,600 draws: the standard error of each frequency is below 0.005.
        assert np.abs(frequencies - expected).max() < 0.02, (name, frequencies)


def test_length_grouping_cuts_padding() -> None:
    grouped = _padding_fraction(_stream(window=16), 200)
    ungrouped = _padding_fraction(_stream(window=1), 200)
    assert grouped < ungrouped / 2, (grouped, ungrouped)


def test_instances_cycle_through_each_task_before_repeating() -> None:
    stream = _stream("uniform")
    draws = np.zeros(SIZES[0], dtype=int)
    for step in range(64):  # four whole windows
        for task, instance in stream.next_batch(step):
            if task == 0:
                draws[instance] += 1
    # Each pass shows every instance once, so no instance is drawn twice more than another.
    assert draws.max() - draws.min() <= 1 and draws.min() >= 1
    assert stream.epochs_seen()[0] == draws.sum() / SIZES[0]


def test_state_round_trip_continues_identically() -> None:
    stream = _stream()
    for step in range(7):  # stop mid-window
        stream.next_batch(step)
    state = json.loads(json.dumps(stream.state_dict()))
    expected = [stream.next_batch(step) for step in range(7, 40)]
    resumed = _stream()
    resumed.load_state_dict(state)
    assert [resumed.next_batch(step) for step in range(7, 40)] == expected


class _SwitchAt:
    """All weight on task 0 before ``switch``, on task 2 from it on; remembers what it was asked."""

    def __init__(self, switch: int) -> None:
        self.switch = switch
        self.asked: list[int] = []

    def weights(self, step: int) -> np.ndarray:
        self.asked.append(step)
        return np.array([1.0, 0.0, 0.0]) if step < self.switch else np.array([0.0, 0.0, 1.0])


def test_a_time_varying_sampler_is_read_at_each_windows_first_step() -> None:
    """P(K) changes over a run (reverse annealing, DWA): each window must draw from P(K) at its
    own first step, never from step 0's (which would act as the initial, e.g. proportional)."""
    sampler = _SwitchAt(switch=12)
    stream = TaskBatchStream(SIZES, sampler, batch_size=4, seed=0, window_batches=4,
                             length_of=lambda task, instance: 1)
    tasks = [{task for task, _ in stream.next_batch(step)} for step in range(24)]
    assert sampler.asked == [0, 4, 8, 12, 16, 20]
    assert tasks[:12] == [{0}] * 12 and tasks[12:] == [{2}] * 12


def test_the_smallest_batch_and_window_are_allowed() -> None:
    stream = TaskBatchStream(SIZES, _SwitchAt(0), batch_size=1, seed=0, window_batches=1,
                             length_of=lambda task, instance: 1)
    assert [len(stream.next_batch(step)) for step in range(3)] == [1, 1, 1]
    for batch_size, window in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=r"^batch_size and window_batches must be >= 1$"):
            TaskBatchStream(SIZES, _SwitchAt(0), batch_size=batch_size, seed=0,
                            window_batches=window, length_of=lambda task, instance: 1)


class _OneTask:
    def weights(self, step: int) -> np.ndarray:
        return np.array([1.0])


def test_each_pass_over_a_task_is_a_fresh_shuffle() -> None:
    # Equal lengths: the stable length sort keeps the draw order, so a batch of 7 is one pass.
    stream = TaskBatchStream([7], _OneTask(), batch_size=7, seed=0, window_batches=1,
                             length_of=lambda task, instance: 1)
    passes = [[instance for _, instance in stream.next_batch(step)] for step in range(3)]
    assert all(sorted(one) == list(range(7)) for one in passes)
    assert len({tuple(one) for one in passes}) == 3


def test_the_same_seed_draws_the_same_batches_and_16_batches_is_the_default_window() -> None:
    lengths = _lengths()

    def stream(**options: int) -> TaskBatchStream:
        sampler = build_sampler({"name": "proportional"}, SIZES, total_steps=100, batch_size=16)
        return TaskBatchStream(SIZES, sampler, batch_size=16, seed=3,
                               length_of=lambda task, instance: int(lengths[task][instance]),
                               **options)

    def draws(made: TaskBatchStream) -> list[list[tuple[int, int]]]:
        return [made.next_batch(step) for step in range(40)]

    assert draws(stream()) == draws(stream()) == draws(stream(window_batches=16))
    assert draws(stream()) != draws(stream(window_batches=17))


def test_a_checkpoint_of_other_task_sizes_is_refused_by_name() -> None:
    state = _stream().state_dict()
    other = TaskBatchStream([50, 200, 751], _OneTask(), batch_size=16, seed=3,
                            length_of=lambda task, instance: 1)
    with pytest.raises(ValueError,
                       match=r"^the checkpoint's batch stream was built over other task sizes$"):
        other.load_state_dict(state)
