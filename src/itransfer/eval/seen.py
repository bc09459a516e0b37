"""Seen-task fit (§4, Figure 3): per-task train, validation and test loss on the seen tasks.

The validation loss is what §4 picks reverse annealing's maximum temperature by.

Each row carries the task's training-set size (after the data limit), so losses can be binned
by dataset size. ``eval.seen_max_instances`` caps the instances scored per task and split (the
first ones of the split's fixed order), which keeps the cost of 619 tasks bounded.

The training split's examples come from the tokenized training cache when the run that trained
the model left one (same tokenizer, context, lengths, split and task files) instead of being
encoded again.
"""

from __future__ import annotations

from itransfer.data.tokenized import TokenizedTrainingSet, find_training_set
from itransfer.eval.inference import EvalItem
from itransfer.eval.session import EvalSession, ProgressCallback


def evaluate_seen(
    session: EvalSession, *, force: bool = False, progress: ProgressCallback | None = None
) -> int:
    """Train and test loss of every seen task; returns the number of rows written."""
    eval_config = session.config.eval
    context = session.config.data.context.name
    cap = eval_config.seen_max_instances
    settings = session.settings_hash("seen", context=context)
    done = session.finished_cells(force=force)
    tasks = [
        name for name in session.benchmark.selection.seen
        if _cell(session, name, settings) not in done
    ]
    mine = session.shard(tasks)
    cached = _training_cache(session, context) if mine else None
    cache_rows = {name: task for task, name in enumerate(session.benchmark.selection.seen)}
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
            if split_name == "train" and cached is not None:
                items = [EvalItem(example=cached(cache_rows[name], row), references=())
                         for row in range(len(chosen))]
            else:
                items = session.items(task, chosen, context)
            results = session.evaluate(items, generate=False)
            losses = [result.loss for result in results]
            rows.append(session.row(split=split_name, metric="loss",
                                    value=sum(losses) / len(losses), n=len(losses), **common))
        written += session.write(rows)
        if progress is not None:
            progress("seen", position + 1, len(mine))
    return session.finish(written)


def _cell(session: EvalSession, task: str, settings: str) -> str:
    return f"seen|{session.model_label}|{session.checkpoint_step}|{task}|{settings}"


def _training_cache(session: EvalSession, context: str) -> TokenizedTrainingSet | None:
    """The training run's tokenized cache, if it left one. Its rows are the training split in
    split order, so the first ones are the instances the split lists first; losses need no
    references."""
    seen = list(session.benchmark.selection.seen)
    return find_training_set(session.encoder(context), session.benchmark.index, seen,
                             session.config.data.splits, session.config.seed)
