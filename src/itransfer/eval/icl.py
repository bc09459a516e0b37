"""In-context evaluation (§3–§5): a checkpoint on unseen tasks with exemplars in its input.

For each task: the mean test loss of the first reference given (r_k; x), and greedy
generations scored with the SNI metrics, on the task's test instances. Tasks are sharded
across processes; finished tasks are skipped when the evaluation is re-run.
"""

from __future__ import annotations

from itransfer.errors import DataError
from itransfer.eval.session import (
    EvalSession,
    ProgressCallback,
    evaluation_tasks,
    prediction_records,
    score_rows,
)


def evaluate_icl(
    session: EvalSession,
    *,
    context: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> int:
    """Evaluate every configured task in context; returns the number of rows written."""
    eval_config = session.config.eval
    context = context or eval_config.icl_context
    config_hash = session.measurement_hash("icl", context=context)
    done = session.finished_cells(force=force)
    tasks = evaluation_tasks(session)
    todo = [name for name in tasks if _cell(session, name, context, config_hash) not in done]
    mine = session.shard(todo)
    written = 0
    for position, name in enumerate(mine):
        task = session.benchmark.task(name)
        instances = session.benchmark.split(name).test
        if not instances:
            raise DataError(task.path or name, f"task {name} has no test instances")
        items = session.items(task, instances, context)
        results = session.evaluate(items)
        predictions = [result.prediction for result in results]
        shots = session.encoder(context).context.num_exemplars if "exemplars" in context else 0
        rows = score_rows(
            session, task, items, [result.loss for result in results], predictions,
            method="icl", context=context, shots=shots, config_hash=config_hash,
            cell=_cell(session, name, context, config_hash),
        )
        if eval_config.generate:
            session.write_predictions(
                f"icl-{context}-{name}", prediction_records(task, instances, predictions)
            )
        written += session.write(rows)
        if progress is not None:
            progress("icl", position + 1, len(mine))
    return session.finish(written)


def _cell(session: EvalSession, task: str, context: str, config_hash: str) -> str:
    return f"icl|{session.model_label}|{session.checkpoint_step}|{task}|{context}|{config_hash}"
