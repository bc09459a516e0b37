"""Per-task instance splits, deterministic from (seed, task name).

Each task's instances are shuffled by a generator seeded from ``sha256(seed, task name)``, so a
task's split does not depend on which other tasks are loaded or in what order.

* seen tasks: the first 10 % of the shuffled instances are test, the next 10 % validation, the
  rest training (§2.4);
* evaluation tasks (unseen, held-out): the first 100 are test, the next 40 the few-shot pool
  (§2.4); the two never overlap.

k-shot draws: each fine-tuning seed s draws its own k-shot sets from the pool. Seed s permutes
the pool with a generator seeded from ``sha256(split seed, task name, s)``
(:func:`few_shot_draw`), and ``few_shot_subset(k, seed=s)`` takes the first k of that order, so
within a seed the k = 5, 10, 20, 40 sets are nested, while different seeds train on different
examples. Every seed draws, 0 included (no seed keeps the pool's own order), and a draw depends
only on (split seed, task, s): not on which other seeds, k or tasks are run, nor on how the work
is sharded. The test set is the same for every seed. :data:`FEW_SHOT_DRAWS` names this scheme;
the transfer evaluation hashes it into its settings so results drawn otherwise are never mixed
with these.

The per-task data limit (§3.2) keeps the first ``max_train_instances_per_task`` training
instances *after* splitting, so changing the limit never moves the validation or test sets, and
a smaller limit's training set is a subset of a larger one's.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from itransfer.config.schema import SplitConfig
from itransfer.data.sni import Instance, Task
from itransfer.errors import DataError

# The k-shot draw scheme (see the module docstring); change it whenever draws change, so cached
# or resumed transfer results drawn the old way are recomputed rather than mixed in.
FEW_SHOT_DRAWS = "per-seed-permutation-v1"


@dataclass(frozen=True)
class TaskSplit:
    """The instances of one task, by role."""

    task: str
    train: tuple[Instance, ...] = ()
    validation: tuple[Instance, ...] = ()
    test: tuple[Instance, ...] = ()
    few_shot_pool: tuple[Instance, ...] = ()
    train_size_before_limit: int = 0
    split_seed: int = 0  # the seed this split was drawn with; the k-shot draws derive from it

    def few_shot_indices(self, k: int, *, seed: int) -> list[int]:
        """Positions in ``few_shot_pool`` of seed ``seed``'s k-shot set, in draw order (nested
        across k for one seed)."""
        if k < 0:
            raise ValueError(f"task {self.task}: k must be >= 0, got {k}")
        if k > len(self.few_shot_pool):
            raise DataError(
                self.task,
                f"k={k} exceeds the few-shot pool of {len(self.few_shot_pool)} instances",
            )
        return few_shot_draw(len(self.few_shot_pool), self.split_seed, self.task, seed)[:k]

    def few_shot_subset(self, k: int, *, seed: int) -> tuple[Instance, ...]:
        """Seed ``seed``'s k-shot set: the first ``k`` of its permutation of the pool."""
        return tuple(self.few_shot_pool[i] for i in self.few_shot_indices(k, seed=seed))


def _seeded_permutation(count: int, key: str) -> list[int]:
    # sha256, not hash(): Python salts str hashes per process, and every process (and every
    # later run) must draw the same permutation.
    digest = hashlib.sha256(key.encode()).digest()
    order = list(range(count))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def shuffled_order(num_instances: int, seed: int, task_name: str) -> list[int]:
    """A permutation of ``range(num_instances)`` that depends only on (seed, task name)."""
    return _seeded_permutation(num_instances, f"{seed}\x00{task_name}")


def few_shot_draw(pool_size: int, split_seed: int, task_name: str, seed: int) -> list[int]:
    """Seed ``seed``'s order of a task's few-shot pool: a permutation of ``range(pool_size)``
    that depends only on (split seed, task name, seed)."""
    return _seeded_permutation(pool_size, f"few-shot\x00{split_seed}\x00{task_name}\x00{seed}")


def _limit(train: tuple[Instance, ...], config: SplitConfig) -> tuple[Instance, ...]:
    limit = config.max_train_instances_per_task
    return train if limit is None else train[:limit]


def seen_split_sizes(num_instances: int, config: SplitConfig) -> tuple[int, int, int]:
    """(test, validation, train) sizes of a seen task's split, before the data limit; known
    from the instance count alone, so a run whose examples are cached never parses the task."""
    num_test = int(num_instances * config.seen_test_fraction)
    num_validation = int(num_instances * config.seen_validation_fraction)
    return num_test, num_validation, num_instances - num_test - num_validation


def limited_size(train_size: int, config: SplitConfig) -> int:
    """How many of ``train_size`` training instances the per-task data limit keeps."""
    limit = config.max_train_instances_per_task
    return train_size if limit is None else min(train_size, limit)


def split_seen_task(task: Task, config: SplitConfig, seed: int) -> TaskSplit:
    """80/10/10 train/validation/test (by default) for a training task."""
    order = [task.instances[i] for i in shuffled_order(len(task.instances), seed, task.name)]
    num_test, num_validation, _ = seen_split_sizes(len(order), config)
    test = tuple(order[:num_test])
    validation = tuple(order[num_test : num_test + num_validation])
    train = tuple(order[num_test + num_validation :])
    return TaskSplit(
        task=task.name,
        train=_limit(train, config),
        validation=validation,
        test=test,
        train_size_before_limit=len(train),
        split_seed=seed,
    )


def split_evaluation_task(task: Task, config: SplitConfig, seed: int) -> TaskSplit:
    """100 test + 40 few-shot instances (by default) for an unseen or held-out task."""
    needed = config.unseen_test_size + config.few_shot_pool_size
    if len(task.instances) < needed:
        raise DataError(
            task.path or task.name,
            f"task {task.name} has {len(task.instances)} instances; an evaluation task needs "
            f"{config.unseen_test_size} test + {config.few_shot_pool_size} few-shot = {needed}",
        )
    order = [task.instances[i] for i in shuffled_order(len(task.instances), seed, task.name)]
    test = tuple(order[: config.unseen_test_size])
    few_shot_pool = tuple(order[config.unseen_test_size : needed])
    return TaskSplit(task=task.name, test=test, few_shot_pool=few_shot_pool, split_seed=seed)
