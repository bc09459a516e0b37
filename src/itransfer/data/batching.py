"""Which examples form each training batch: tasks drawn by P(K), grouped by length.

SNI instances range from a few tokens to thousands, so batches of randomly drawn examples are
mostly padding. :class:`TaskBatchStream` draws a *window* of ``window_batches × batch_size``
examples at once — the task of each by the sampler's P(K), the instance by walking a per-task
shuffled order (a fresh shuffle on every pass over the task) — then sorts that window by length,
cuts it into batches and shuffles the batch order. Sorting only reorders examples that were
already drawn, so the per-task frequencies are exactly those of P(K); the cost is that P(K) is
read once per window (``window_batches`` steps) instead of every step.

This module knows nothing of tokenizers: the caller supplies ``length_of(task, instance)``.
Its whole state (generator, per-task cursors, batches still pending) is JSON-serialisable, so a
resumed run draws exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

ExampleRef = tuple[int, int]  # (task index, instance index)


class WeightSource(Protocol):
    def weights(self, step: int) -> np.ndarray: ...


class TaskBatchStream:
    """An endless stream of global batches of (task, instance) references."""

    def __init__(
        self,
        task_sizes: Sequence[int],
        sampler: WeightSource,
        *,
        batch_size: int,
        seed: int,
        length_of: Callable[[int, int], int],
        window_batches: int = 16,
    ) -> None:
        if batch_size < 1 or window_batches < 1:
            raise ValueError("batch_size and window_batches must be >= 1")
        self.task_sizes = [int(size) for size in task_sizes]
        self.sampler = sampler
        self.batch_size = batch_size
        self.window_batches = window_batches
        self.seed = seed
        self.length_of = length_of
        self._rng = np.random.default_rng([seed, 0x5EED])
        self._cursors: dict[int, list[int]] = {}  # task → [pass number, position]
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # task → (pass, shuffled order)
        self._pending: list[list[ExampleRef]] = []

    def next_batch(self, step: int) -> list[ExampleRef]:
        """The batch for optimizer step ``step`` (P(K) is read at window boundaries)."""
        if not self._pending:
            self._fill_window(step)
        return self._pending.pop(0)

    def _fill_window(self, step: int) -> None:
        weights = np.asarray(self.sampler.weights(step), dtype=np.float64)
        count = self.window_batches * self.batch_size
        tasks = self._rng.choice(len(self.task_sizes), size=count, p=weights)
        refs = [(int(task), self._next_instance(int(task))) for task in tasks]
        # A stable sort keeps draw order among equal lengths, so the result is deterministic.
        refs.sort(key=lambda ref: self.length_of(*ref))
        batches = [refs[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        self._pending = [batches[i] for i in self._rng.permutation(len(batches))]

    def _order(self, task: int, pass_number: int) -> np.ndarray:
        cached = self._orders.get(task)
        if cached is None or cached[0] != pass_number:
            generator = np.random.default_rng([self.seed, task, pass_number])
            cached = (pass_number, generator.permutation(self.task_sizes[task]))
            self._orders[task] = cached
        return cached[1]

    def _next_instance(self, task: int) -> int:
        pass_number, position = self._cursors.get(task, [0, 0])
        instance = int(self._order(task, pass_number)[position])
        position += 1
        if position == self.task_sizes[task]:
            pass_number, position = pass_number + 1, 0
        self._cursors[task] = [pass_number, position]
        return instance

    def epochs_seen(self) -> dict[int, float]:
        """How many passes over each task have been drawn so far (fractional)."""
        return {
            task: pass_number + position / self.task_sizes[task]
            for task, (pass_number, position) in self._cursors.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self._rng.bit_generator.state,
            "cursors": {str(task): cursor for task, cursor in self._cursors.items()},
            "pending": [[list(ref) for ref in batch] for batch in self._pending],
            "task_sizes": self.task_sizes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["task_sizes"] != self.task_sizes:
            raise ValueError("the checkpoint's batch stream was built over other task sizes")
        self._rng.bit_generator.state = state["rng"]
        self._cursors = {int(task): list(cursor) for task, cursor in state["cursors"].items()}
        self._pending = [[(int(t), int(i)) for t, i in batch] for batch in state["pending"]]
        self._orders.clear()
