"""Seen-task fit (§4, Figure 3): per-task train, validation and test loss on the seen tasks.

The validation loss is what §4 picks reverse annealing's maximum temperature by.

Each row carries the task's training-set size (after the data limit), and a ``split_size`` row
per split gives the weight of the task in an example-weighted (pooled) average of that split:
§4 compares samplers on it as well as on the per-task mean, and proportional sampling
minimises the first where uniform sampling minimises the second.

Which instances are scored, per task and split (the first ones of the split's order, which is a
seeded shuffle, so they are a simple random sample and each task's mean loss is unbiased):

* ``eval.seen_max_instances`` alone: at most that many per task (every task weighs alike in
  the cost; the pooled average is still unbiased, but its big tasks are estimated from few);
* with ``eval.seen_budget``: about that many across all seen tasks per split, each task's share
  proportional to its split size (:func:`seen_allocation`), so the pooled average is estimated
  as precisely as the budget allows, raised to ``eval.seen_min_instances`` per task so the
  per-task mean of small tasks does not rest on one instance. At full SNI size (619 tasks, up to
  6,500 instances each) the cost is bounded by ``budget + 619 * min_instances`` per split
  instead of growing with the ~1.5 million training instances.

The training split's examples come from the tokenized training cache when the run that trained
the model left one (same tokenizer, context, lengths, split and task files) instead of being
encoded again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from itransfer.config.schema import EvalConfig, SplitConfig
from itransfer.data.splits import limited_size, seen_split_sizes
from itransfer.encoding.cache import TokenizedTrainingSet, find_training_set
from itransfer.eval.inference import EvalItem
from itransfer.eval.session import EvalSession, ProgressCallback


def evaluate_seen(
    session: EvalSession, *, force: bool = False, progress: ProgressCallback | None = None
) -> int:
    """Train and test loss of every seen task; returns the number of rows written."""
    context = session.config.data.context.name
    counts = scored_counts(session)
    config_hash = session.measurement_hash("seen", context=context)
    done = session.finished_cells(force=force)
    tasks = [
        name for name in session.benchmark.selection.seen
        if _cell(session, name, config_hash) not in done
    ]
    mine = session.shard(tasks)
    cached = _training_cache(session, context) if mine else None
    cache_rows = {name: task for task, name in enumerate(session.benchmark.selection.seen)}
    written = 0
    for position, name in enumerate(mine):
        task = session.benchmark.task(name)
        split = session.benchmark.split(name)
        common = {"task": name, "category": task.categories[0], "method": "seen",
                  "context": context, "shots": 0, "config_hash": config_hash,
                  "cell": _cell(session, name, config_hash)}
        rows = [session.row(split="train", metric="train_size",
                                value=float(len(split.train)), n=len(split.train), **common)]
        for split_name, instances in (
            ("train", split.train), ("validation", split.validation), ("test", split.test),
        ):
            rows.append(session.row(split=split_name, metric="split_size",
                                    value=float(len(instances)), n=len(instances), **common))
            chosen = instances[:counts[split_name][name]]
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


def _cell(session: EvalSession, task: str, config_hash: str) -> str:
    return f"seen|{session.model_label}|{session.checkpoint_step}|{task}|{config_hash}"


def _training_cache(session: EvalSession, context: str) -> TokenizedTrainingSet | None:
    """The training run's tokenized cache, if it left one. Its rows are the training split in
    split order, so the first ones are the instances the split lists first; losses need no
    references."""
    seen = list(session.benchmark.selection.seen)
    return find_training_set(session.encoder(context), session.benchmark.index, seen,
                             session.config.data.splits, session.config.seed)


SEEN_SPLITS = ("train", "validation", "test")


def seen_allocation(
    sizes: Sequence[int], budget: int, *, floor: int = 1, cap: int | None = None,
) -> np.ndarray:
    """Instances to score per task, from splits of ``sizes``, under a total ``budget``.

    Shares proportional to size, rounded by largest remainders (ties to the earlier task) so
    they sum to ``budget``; then each is raised to ``floor`` and cut to ``cap`` and to the split
    itself. The total is therefore at most ``budget + len(sizes) * floor``.
    """
    split_sizes = np.asarray(sizes, dtype=np.int64)
    total = int(split_sizes.sum())
    if total == 0:
        return np.zeros_like(split_sizes)
    quotas = budget * split_sizes / total
    shares = np.floor(quotas).astype(np.int64)
    # argsort of the negated remainders, stable: the largest first, ties in task order.
    order = np.argsort(-(quotas - shares), kind="stable")
    shares[order[: budget - int(shares.sum())]] += 1
    limit = split_sizes if cap is None else np.minimum(split_sizes, cap)
    return np.minimum(np.maximum(shares, floor), limit)


def split_sizes(num_instances: int, splits: SplitConfig) -> dict[str, int]:
    """A seen task's split sizes from its instance count (no task file is parsed)."""
    test, validation, train = seen_split_sizes(num_instances, splits)
    return {"train": limited_size(train, splits), "validation": validation, "test": test}


def allocate(sizes: dict[str, dict[str, int]], eval_config: EvalConfig
             ) -> dict[str, dict[str, int]]:
    """Per split, per task (``sizes``: split → task → split size): how many instances to score
    under ``eval_config``'s cap, or its budget (see the module's docstring)."""
    cap, budget = eval_config.seen_max_instances, eval_config.seen_budget
    if budget is None:
        return {split: {task: size if cap is None else min(size, cap)
                        for task, size in of_split.items()}
                for split, of_split in sizes.items()}
    allotted = {}
    for split, of_split in sizes.items():
        counts = seen_allocation(list(of_split.values()), budget,
                                 floor=eval_config.seen_min_instances, cap=cap)
        allotted[split] = dict(zip(of_split, counts.tolist(), strict=True))
    return allotted


def scored_counts(session: EvalSession) -> dict[str, dict[str, int]]:
    """:func:`allocate` over every seen task (not this process's shard only, so that every
    process of a distributed evaluation draws the same sample)."""
    sizes: dict[str, dict[str, int]] = {split: {} for split in SEEN_SPLITS}
    for name in session.benchmark.selection.seen:
        count = session.benchmark.index.get(name).metadata.num_instances
        for split, size in split_sizes(count, session.config.data.splits).items():
            sizes[split][name] = size
    return allocate(sizes, session.config.eval)
