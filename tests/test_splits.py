"""Per-task splits: sizes, determinism, disjointness and the data limit."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_task
from itransfer.config.schema import SplitConfig
from itransfer.data.sni import Instance, parse_task
from itransfer.data.splits import (
    few_shot_draw,
    seen_split_sizes,
    shuffled_order,
    split_evaluation_task,
    split_seen_task,
)
from itransfer.errors import DataError


def _task(tmp_path: Path, n: int, name: str = "task001_demo"):
    instances = [{"id": f"i{i}", "input": f"x{i}", "output": [f"y{i}"]} for i in range(n)]
    return parse_task(write_task(tmp_path, name, Instances=instances))


def _ids(instances: tuple[Instance, ...]) -> list[str]:
    return [instance.id for instance in instances]


def test_seen_split_is_80_10_10_and_disjoint(tmp_path: Path) -> None:
    split = split_seen_task(_task(tmp_path, 1000), SplitConfig(), seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (800, 100, 100)
    all_ids = _ids(split.train) + _ids(split.validation) + _ids(split.test)
    assert len(set(all_ids)) == 1000
    assert split.few_shot_pool == ()


def test_small_seen_task_keeps_everything_for_training(tmp_path: Path) -> None:
    split = split_seen_task(_task(tmp_path, 9), SplitConfig(), seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (9, 0, 0)


def test_split_depends_only_on_seed_and_task_name(tmp_path: Path) -> None:
    task = _task(tmp_path, 300)
    first = split_seen_task(task, SplitConfig(), seed=3)
    again = split_seen_task(_task(tmp_path / "elsewhere", 300), SplitConfig(), seed=3)
    assert _ids(first.test) == _ids(again.test) and _ids(first.train) == _ids(again.train)
    other_seed = split_seen_task(task, SplitConfig(), seed=4)
    assert _ids(other_seed.test) != _ids(first.test)
    other_name = _task(tmp_path, 300, name="task002_other")
    assert shuffled_order(300, 3, other_name.name) != shuffled_order(300, 3, task.name)
    assert sorted(shuffled_order(300, 3, task.name)) == list(range(300))


def test_evaluation_split_is_100_test_plus_40_few_shot_disjoint(tmp_path: Path) -> None:
    split = split_evaluation_task(_task(tmp_path, 250), SplitConfig(), seed=0)
    assert len(split.test) == 100 and len(split.few_shot_pool) == 40
    assert not set(_ids(split.test)) & set(_ids(split.few_shot_pool))
    assert split.train == () and split.validation == ()


def test_few_shot_subsets_are_nested_within_a_seed(tmp_path: Path) -> None:
    split = split_evaluation_task(_task(tmp_path, 250), SplitConfig(), seed=0)
    pool = set(_ids(split.few_shot_pool))
    for seed in (0, 1, 7):
        subsets = [_ids(split.few_shot_subset(k, seed=seed)) for k in (0, 5, 10, 20, 40)]
        assert [len(subset) for subset in subsets] == [0, 5, 10, 20, 40]
        for smaller, larger in itertools.pairwise(subsets):
            assert larger[: len(smaller)] == smaller
        assert set(subsets[-1]) == pool  # k = 40 is the whole pool, reordered
    with pytest.raises(DataError, match="k=41 exceeds the few-shot pool of 40"):
        split.few_shot_subset(41, seed=0)


# A pool of 400 from which 20 are drawn: two seeds pick the same set with probability
# 1 / C(400, 20) < 1e-33, so any collision is a bug, not chance.
BIG_POOL = SplitConfig(unseen_test_size=100, few_shot_pool_size=400)


def test_each_seed_draws_its_own_k_shot_set(tmp_path: Path) -> None:
    split = split_evaluation_task(_task(tmp_path, 600), BIG_POOL, seed=0)
    drawn = {seed: frozenset(_ids(split.few_shot_subset(20, seed=seed))) for seed in range(5)}
    assert len(set(drawn.values())) == 5
    # Seed 0 draws too: it does not keep the pool's own order (no seed is special).
    assert _ids(split.few_shot_subset(20, seed=0)) != _ids(split.few_shot_pool[:20])
    assert all(subset <= set(_ids(split.few_shot_pool)) for subset in drawn.values())


def test_a_draw_depends_only_on_split_seed_task_and_seed(tmp_path: Path) -> None:
    task = _task(tmp_path, 600)
    split = split_evaluation_task(task, BIG_POOL, seed=3)
    again = split_evaluation_task(_task(tmp_path / "elsewhere", 600), BIG_POOL, seed=3)
    assert _ids(again.few_shot_subset(20, seed=1)) == _ids(split.few_shot_subset(20, seed=1))
    assert split.few_shot_indices(20, seed=1) == few_shot_draw(400, 3, task.name, 1)[:20]
    # Another split seed or another task name draws differently.
    assert few_shot_draw(400, 4, task.name, 1) != few_shot_draw(400, 3, task.name, 1)
    assert few_shot_draw(400, 3, "task002_other", 1) != few_shot_draw(400, 3, task.name, 1)
    assert sorted(few_shot_draw(400, 3, task.name, 1)) == list(range(400))
    # The test set does not depend on the fine-tuning seed: it is drawn before any seed is.
    assert _ids(again.test) == _ids(split.test)
    assert not set(_ids(split.test)) & set(_ids(split.few_shot_pool))


def test_a_draw_is_the_same_in_every_process() -> None:
    # Python salts str hashes per process; a draw keyed on hash() would differ between these.
    code = ("from itransfer.data.splits import few_shot_draw; "
            "print(few_shot_draw(400, 0, 'task001_demo', 2))")
    printed = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert printed == {str(few_shot_draw(400, 0, "task001_demo", 2))}


def test_evaluation_task_needs_140_instances(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs 100 test \\+ 40 few-shot = 140"):
        split_evaluation_task(_task(tmp_path, 139), SplitConfig(), seed=0)


@pytest.mark.parametrize("limit", [10, 50, 100, 500])
def test_data_limit_never_moves_validation_or_test(tmp_path: Path, limit: int) -> None:
    task = _task(tmp_path, 1000)
    full = split_seen_task(task, SplitConfig(), seed=0)
    limited = split_seen_task(task, SplitConfig(max_train_instances_per_task=limit), seed=0)
    assert _ids(limited.test) == _ids(full.test)
    assert _ids(limited.validation) == _ids(full.validation)
    assert _ids(limited.train) == _ids(full.train)[:limit]
    assert limited.train_size_before_limit == 800


def test_limit_larger_than_the_task_uses_all_of_it(tmp_path: Path) -> None:
    split = split_seen_task(_task(tmp_path, 50), SplitConfig(max_train_instances_per_task=5000), 0)
    assert len(split.train) == 40


def test_other_fractions_and_sizes_are_honoured_in_their_places(tmp_path: Path) -> None:
    """Fractions and sizes other than the defaults (10/10 %, 100 + 40), so that swapping test
    and validation, or test and few-shot, or an off-by-one at a boundary, shows."""
    config = SplitConfig(seen_test_fraction=0.2, seen_validation_fraction=0.05)
    assert seen_split_sizes(1000, config) == (200, 50, 750)
    assert seen_split_sizes(999, config) == (199, 49, 751)  # int() rounds each part down
    task = _task(tmp_path, 1000)
    order = [task.instances[i].id for i in shuffled_order(1000, 5, task.name)]
    split = split_seen_task(task, config, seed=5)
    assert _ids(split.test) == order[:200]
    assert _ids(split.validation) == order[200:250]
    assert _ids(split.train) == order[250:]
    assert split.train_size_before_limit == 750 and split.split_seed == 5

    sizes = SplitConfig(unseen_test_size=30, few_shot_pool_size=7)
    small = _task(tmp_path / "small", 37)
    order = [small.instances[i].id for i in shuffled_order(37, 5, small.name)]
    evaluation = split_evaluation_task(small, sizes, seed=5)
    assert _ids(evaluation.test) == order[:30]
    assert _ids(evaluation.few_shot_pool) == order[30:37]
    assert evaluation.split_seed == 5
    with pytest.raises(DataError, match=r"has 36 instances; .* needs 30 test \+ 7 few-shot = 37"):
        split_evaluation_task(_task(tmp_path / "short", 36), sizes, seed=5)


def test_split_errors_name_the_task_and_the_split_the_task(tmp_path: Path) -> None:
    path = write_task(tmp_path / "tasks", "task009_small", Instances=[
        {"input": f"x{i}", "output": ["y"]} for i in range(30)])
    task = parse_task(path)
    with pytest.raises(DataError) as error:
        split_evaluation_task(task, SplitConfig(), seed=0)
    assert error.value.path == path
    seen = split_seen_task(task, SplitConfig(), seed=0)
    evaluation = split_evaluation_task(task, SplitConfig(unseen_test_size=20,
                                                         few_shot_pool_size=10), seed=0)
    assert seen.task == evaluation.task == "task009_small"
    with pytest.raises(ValueError, match=r"^task task009_small: k must be >= 0, got -1$"):
        evaluation.few_shot_indices(-1, seed=0)
