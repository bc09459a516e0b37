"""Few-shot LoRA transfer (§3.1): how easily a checkpoint's parameters adapt to unseen tasks.

The grid is tasks × k × fine-tuning context (``none``, or the instruction-tuning context) ×
seeds. Every cell trains a fresh task-specific LoRA and measures test loss and ROUGE-L on the
task's test instances. A seed fixes both what the LoRA trains on and how: seed s draws its own
k-shot sets from the task's 40-instance few-shot pool (a permutation of the pool per (task, s);
within a seed the k = 5, 10, 20, 40 sets are nested, see :mod:`itransfer.data.splits`) and
seeds the LoRA initialisation, the batch order and the dropout masks. The test instances are
the same for every seed. k = 0 is the model as is: it neither draws nor trains, so it is
evaluated once, under the smallest seed. Two engines produce the same numbers:

* ``peft``: one PEFT LoRA per cell, trained and evaluated one after another (the reference);
* ``batched``: the LoRAs of up to ``eval.cells_per_group`` cells trained in the same forward
  passes, each example routed to its own adapter (:mod:`itransfer.eval.multilora`).

Both read the cells :func:`plan_cells` built, so they train on the same draws. Work is split by
task across processes; each finished group of cells is appended to the results table at once,
so an interrupted grid resumes after the last finished cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from itransfer.config.schema import FewShotLoraConfig
from itransfer.data.sni import Instance, Task
from itransfer.eval.inference import EvalItem
from itransfer.eval.lora import TransferCell, train_cell_peft
from itransfer.eval.session import (
    EvalSession,
    ProgressCallback,
    evaluation_tasks,
    prediction_records,
    score_rows,
)


@dataclass
class CellWork:
    """A cell with what it is evaluated on."""

    cell: TransferCell
    task: Task
    test_instances: tuple[Instance, ...]
    cell_id: str


class HeldTestItems:
    """The encoded test items of the cells being run.

    A planned grid holds no encoded items: it plans every cell up front, and holding each task
    and context's items until the grid ends cost 149 MB per process on the full-size stand-in
    (280 tasks and contexts, ~180 tokens an item; more with longer inputs). Items are encoded
    when the first cell of their task and context runs and dropped once no running cell needs
    them; cells are planned task by task, so each task and context is encoded once (and its
    cut inputs counted once).
    """

    def __init__(self, session: EvalSession) -> None:
        self.session = session
        self._held: dict[tuple[str, str], list[EvalItem]] = {}

    def keep_only(self, running: Sequence[CellWork]) -> None:
        needed = {(work.task.name, work.cell.context) for work in running}
        self._held = {key: items for key, items in self._held.items() if key in needed}

    def of(self, work: CellWork) -> list[EvalItem]:
        key = (work.task.name, work.cell.context)
        if key not in self._held:
            self._held[key] = self.session.items(work.task, work.test_instances,
                                                 work.cell.context)
        return self._held[key]


def plan_cells(session: EvalSession, *, force: bool = False) -> tuple[list[CellWork], str]:
    """This process's unfinished cells, grouped by task, and their config hash.

    A cell's training examples are its seed's k-shot draw from the task's few-shot pool; the
    draw is a function of (split seed, task, seed) alone, so it is the same whichever other
    seeds, k or tasks are planned and whichever process gets the task.
    """
    eval_config = session.config.eval
    lora = session.lora_config()  # `auto` hashed as the modules it stands for
    config_hash = session.measurement_hash("finetune", lora=lora.model_dump(mode="json"))
    seeds = list(dict.fromkeys(eval_config.seeds))
    done = session.finished_cells(force=force)
    work: list[CellWork] = []
    for name in session.shard(evaluation_tasks(session)):
        task = session.benchmark.task(name)
        split = session.benchmark.split(name)
        # Cells keep the task's metadata and demonstrations, not its thousands of instances:
        # every planned cell lives until the grid ends.
        slim = replace(task, instances=())
        for context in eval_config.transfer_contexts:
            pool = session.encode(task, split.few_shot_pool, context)
            for shots in eval_config.shots:
                # k = 0 neither draws nor trains: every seed would measure the same model.
                for seed in seeds if shots > 0 else [min(seeds)]:
                    drawn = split.few_shot_indices(shots, seed=seed)  # raises beyond the pool
                    cell = TransferCell(name, shots, context, seed, tuple(pool[i] for i in drawn))
                    cell_id = (
                        f"finetune|{session.model_label}|{session.checkpoint_step}|{cell.key}|"
                        f"{config_hash}"
                    )
                    if cell_id not in done:
                        work.append(CellWork(cell, slim, split.test, cell_id))
    return work, config_hash


def evaluate_transfer(
    session: EvalSession,
    *,
    engine: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> int:
    """Run the transfer grid with ``engine`` (default: the config's); returns rows written."""
    engine = engine or session.config.eval.engine
    work, config_hash = plan_cells(session, force=force)
    lora = session.lora_config()
    run = _run_peft if engine == "peft" else _run_batched
    written = run(session, work, lora, config_hash, progress)
    return session.finish(written)


def _cell_rows(
    session: EvalSession, work: CellWork, test_items: Sequence[EvalItem], losses: Sequence[float],
    predictions: Sequence[str | None], train_losses: Sequence[float], config_hash: str,
) -> list[dict[str, Any]]:
    fields = {"method": "finetune", "context": work.cell.context, "shots": work.cell.shots,
              "seed": work.cell.seed, "config_hash": config_hash, "cell": work.cell_id}
    rows = score_rows(session, work.task, test_items, losses, predictions, **fields)
    if train_losses:
        rows.append(session.row(task=work.task.name, category=work.task.categories[0],
                                split="train", metric="final_train_loss",
                                value=float(train_losses[-1]), n=len(train_losses), **fields))
    if all(prediction is not None for prediction in predictions):
        session.write_predictions(
            f"finetune-{work.cell.context}-k{work.cell.shots}-seed{work.cell.seed}-"
            f"{work.task.name}",
            prediction_records(work.task, work.test_instances, predictions),
        )
    return rows


def _run_peft(
    session: EvalSession, work: list[CellWork], lora: FewShotLoraConfig, config_hash: str,
    progress: ProgressCallback | None,
) -> int:
    eval_config = session.config.eval
    loaded = session.loaded
    device = session.accelerator.device
    written = 0
    held = HeldTestItems(session)
    for position, item in enumerate(work):
        held.keep_only([item])
        test_items = held.of(item)
        model, train_losses = loaded.model, []
        if item.cell.shots > 0:
            model, train_losses = train_cell_peft(
                loaded.model, item.cell, lora, pad_token_id=loaded.tokenizer.pad_token_id,
                architecture=loaded.architecture, device=device,
            )
        try:
            results = session.evaluate(test_items, model=model)
            if eval_config.save_adapters and item.cell.shots > 0:
                model.save_pretrained(session.out_dir / "adapters" / _safe(item.cell.key))
        finally:
            if model is not loaded.model:
                loaded.model = model.unload()  # the base model, without LoRA layers
        rows = _cell_rows(
            session, item, test_items, [r.loss for r in results], [r.prediction for r in results],
            train_losses, config_hash,
        )
        written += session.write(rows)
        if progress is not None:
            progress("transfer", position + 1, len(work))
    return written


def _run_batched(
    session: EvalSession, work: list[CellWork], lora: FewShotLoraConfig, config_hash: str,
    progress: ProgressCallback | None,
) -> int:
    from itransfer.eval.multilora import train_cells_batched

    eval_config = session.config.eval
    loaded = session.loaded
    device = session.accelerator.device
    written = done = 0
    group_size = eval_config.cells_per_group
    held = HeldTestItems(session)
    for start in range(0, len(work), group_size):
        group = work[start : start + group_size]
        held.keep_only(group)
        tests = [held.of(item) for item in group]
        items = [
            EvalItem(test.example, test.references, adapter=index)
            for index, cell_tests in enumerate(tests)
            for test in cell_tests
        ]
        moving = _GroupProgress(progress, done, len(group), len(work), len(items))
        trained = train_cells_batched(
            loaded.model, [item.cell for item in group], lora,
            pad_token_id=loaded.tokenizer.pad_token_id, architecture=loaded.architecture,
            device=device, max_examples_per_pass=eval_config.max_examples_per_pass,
            max_tokens_per_pass=eval_config.max_tokens_per_pass, progress=moving.training,
        )
        multi = trained.adapters
        try:
            results = session.evaluate(
                items, model=multi.model, router=multi.route, progress=moving.evaluated
            )
            if eval_config.save_adapters:
                for index, item in enumerate(group):
                    if item.cell.shots > 0:
                        multi.export_peft_adapter(
                            index, session.out_dir / "adapters" / _safe(item.cell.key)
                        )
        finally:
            multi.remove()
        rows: list[dict[str, Any]] = []
        offset = 0
        for index, (item, cell_tests) in enumerate(zip(group, tests, strict=True)):
            cell_results = results[offset : offset + len(cell_tests)]
            offset += len(cell_tests)
            rows += _cell_rows(
                session, item, cell_tests, [r.loss for r in cell_results],
                [r.prediction for r in cell_results], trained.losses[index], config_hash,
            )
        written += session.write(rows)
        done += len(group)
        if progress is not None:
            progress("transfer", done, len(work))
    return written


class _GroupProgress:
    """A group of cells can take minutes: report its training steps, then its test items,
    each as half of the group's cells (the count is exact again once the group is written)."""

    def __init__(
        self, progress: ProgressCallback | None, done: int, size: int, total: int, items: int
    ) -> None:
        self.progress, self.done, self.size, self.total = progress, done, size, total
        self.items, self.items_done = max(items, 1), 0

    def training(self, step: int, steps: int) -> None:
        self._report(0.5 * step / max(steps, 1))

    def evaluated(self, count: int) -> None:
        self.items_done += count
        self._report(0.5 + 0.5 * self.items_done / self.items)

    def _report(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress("transfer", self.done + self.size * min(fraction, 1.0), self.total)


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
