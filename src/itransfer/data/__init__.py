"""SNI task files → tasks, the paper's split, per-task splits and task contexts."""

from itransfer.data.benchmark import SNIBenchmark, bundled_sni_dir, open_benchmark
from itransfer.data.contexts import CONTEXTS, EncodedInput, TaskContext, build_context
from itransfer.data.selection import TaskSelection, select_tasks
from itransfer.data.sni import Demonstration, Instance, Task, TaskMetadata, parse_task
from itransfer.data.splits import TaskSplit

__all__ = [
    "CONTEXTS",
    "Demonstration",
    "EncodedInput",
    "Instance",
    "SNIBenchmark",
    "Task",
    "TaskContext",
    "TaskMetadata",
    "TaskSelection",
    "TaskSplit",
    "build_context",
    "bundled_sni_dir",
    "open_benchmark",
    "parse_task",
    "select_tasks",
]
