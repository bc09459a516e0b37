"""One entry point to the benchmark: index → paper selection → tasks → per-task splits."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from itransfer.config.schema import EVALUATION_TASK_GROUPS, DataConfig
from itransfer.data.index import TaskIndex, build_index
from itransfer.data.selection import TaskSelection, select_tasks
from itransfer.data.sni import Task, parse_task
from itransfer.data.splits import TaskSplit, split_evaluation_task, split_seen_task
from itransfer.errors import DataError


def bundled_sni_dir() -> Path:
    """The SNI slice shipped inside the package (used when no ``--sni-dir`` is given)."""
    return Path(str(resources.files("itransfer") / "bundled" / "sni" / "tasks"))


# Parsed tasks kept in memory at once. Evaluation walks task by task (and asks for a task and
# its split back to back), so a few suffice; at full size the seen tasks' text would be GBs.
PARSED_TASKS_KEPT = 8


@dataclass
class SNIBenchmark:
    """The indexed tasks of one SNI folder with the configured selection and splits."""

    index: TaskIndex
    selection: TaskSelection
    config: DataConfig
    seed: int
    max_parsed_tasks: int = PARSED_TASKS_KEPT
    _tasks: OrderedDict[str, Task] = field(default_factory=OrderedDict, repr=False)

    @property
    def tasks_dir(self) -> Path:
        return self.index.tasks_dir

    def group_of(self, name: str) -> str:
        for group, names in self.selection.groups().items():
            if name in names:
                return group
        if name in self.selection.excluded:
            return "excluded"
        missing = self.tasks_dir / f"{name}.json"
        raise DataError(missing, f"task '{name}' is not in {self.tasks_dir}")

    def task(self, name: str) -> Task:
        """The parsed task; the most recently used few stay parsed, the rest are read again."""
        if name in self._tasks:
            self._tasks.move_to_end(name)
            return self._tasks[name]
        self.group_of(name)  # raises a clear error for unknown names
        task = parse_task(self.tasks_dir / self.index.get(name).file_name)
        self._tasks[name] = task
        while len(self._tasks) > self.max_parsed_tasks:
            self._tasks.popitem(last=False)
        return task

    def split(self, name: str) -> TaskSplit:
        """Seen tasks get train/validation/test; evaluation tasks get test + few-shot pool."""
        group = self.group_of(name)
        task = self.task(name)
        if group in EVALUATION_TASK_GROUPS:
            return split_evaluation_task(task, self.config.splits, self.seed)
        return split_seen_task(task, self.config.splits, self.seed)


def open_benchmark(
    config: DataConfig,
    seed: int,
    *,
    use_cache: bool = True,
    progress: Callable[[Iterable[Path], int], Iterable[Path]] | None = None,
) -> SNIBenchmark:
    """Index ``config.sni_dir`` (or the bundled slice) and apply the paper's selection."""
    sni_dir = config.sni_dir if config.sni_dir is not None else bundled_sni_dir()
    index = build_index(sni_dir, use_cache=use_cache, progress=progress)
    selection = select_tasks(index.metadata, config.selection)
    return SNIBenchmark(index=index, selection=selection, config=config, seed=seed)
