"""Seen-task fit (§4, Figure 3): per-task train, validation and test loss on the seen tasks.

The validation loss is what §4 picks reverse annealing's maximum temperature by.

Each row carries the task's training-set size (after the data limit), so losses can be binned
by dataset size. ``eval.seen_max_instances`` caps the instances scored per task and split (the
first ones of the split's fixed order), which keeps the cost of 619 tasks bounded.
"""

from __future__ import annotations

from itransfer.eval.session import EvalSession, ProgressCallback


def evaluate_seen(
    session: EvalSession, *, force: bool = False, progress: ProgressCallback | None = None
) -> int:
    """Train and test loss of every seen task; returns the number of rows written."""
    eval_config = session.config.eval
    context = session.config.data.context.name
    cap = eval_config.seen_max_instances
    settings = session.settings_hash(method="seen", context=context, cap=cap)
    done = session.finished_cells(force=force)
    tasks = [
        name for name in session.benchmark.selection.seen
        if _cell(session, name, settings) not in done
    ]
    mine = session.shard(tasks)
    written = 0
    for position, name in enumerate(mine):
        task = session.benchmark.task(name)
        split = session.benchmark.split(name)
        common = {"task": name, "category": task.categories[0], "method": "seen",
                  "context": context, "shots": 0, "config_hash": settings,
                  "cell": _cell(session, name, settings)}
        rows = [session.row(split="train", metric="train_size",
                                value=float(len(split.train)), n=len(split.train), **common)]
        for split_name, instances in (
            ("train", split.train), ("validation", split.validation), ("test", split.test),
        ):
            chosen = instances[:cap] if cap is not None else instances
            if not chosen:
                continue
            results = session.evaluate(session.items(task, chosen, context), generate=False)
            losses = [result.loss for result in results]
            rows.append(session.row(split=split_name, metric="loss",
                                    value=sum(losses) / len(losses), n=len(losses), **common))
        written += session.write(rows)
        if progress is not None:
            progress("seen", position + 1, len(mine))
    return session.finish(written)


def _cell(session: EvalSession, task: str, settings: str) -> str:
    return f"seen|{session.model_label}|{session.checkpoint_step}|{task}|{settings}"
