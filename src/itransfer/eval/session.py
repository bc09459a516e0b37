"""What every evaluation shares: the checkpoint, the tasks, the results table, the shards.

Evaluations split their work (tasks or cells) across processes with ``accelerate``: all plan
from the main process's view of what is already done, each process takes every ``world``-th
item and appends its own rows, so the table is the same whether one process or several did
the work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object

from itransfer.config.schema import ExperimentConfig, FewShotLoraConfig
from itransfer.data.benchmark import SNIBenchmark, open_benchmark
from itransfer.data.contexts import cut_details, warn_inputs_cut
from itransfer.data.sni import Instance, Task
from itransfer.encoding.examples import EncodedExample, ExampleEncoder
from itransfer.errors import ConfigError, DataError, ITransferError
from itransfer.eval.inference import EvalItem, ItemResult, Router, evaluate_items
from itransfer.eval.metrics import ScoredInstance, aggregate, default_scorer
from itransfer.eval.results import ResultsTable
from itransfer.models.loading import LoadedModel, load_model_and_tokenizer
from itransfer.models.lora_targets import AUTO, resolve_target_modules
from itransfer.runs.checkpoints import STATE_FILE, read_state
from itransfer.runs.identity import measurement_hash
from itransfer.runs.provenance import write_run_record
from itransfer.runtime.atomic_files import atomic_write_text
from itransfer.runtime.launch import agreed, check_launch, make_accelerator

logger = logging.getLogger(__name__)
Item = TypeVar("Item")
ProgressCallback = Callable[[str, float, int], None]  # (what, done, total)


@dataclass
class EvalSession:
    """A loaded checkpoint, the benchmark and where results go."""

    config: ExperimentConfig
    benchmark: SNIBenchmark
    loaded: LoadedModel
    model_label: str
    checkpoint_step: int
    run_name: str
    out_dir: Path
    table: ResultsTable
    accelerator: Accelerator

    encoders: dict[str, ExampleEncoder] = field(default_factory=dict)
    # Inputs cut to the length budget since the last :meth:`finish`: context -> task -> count.
    inputs_cut: dict[str, dict[str, int]] = field(default_factory=dict)
    # Called after each write of rows: where `itransfer run` stops on SIGTERM/SIGUSR1, since
    # what is written is kept and a rerun continues after it.
    after_write: Callable[[], None] | None = None
    held_cuts: dict[str, int] | None = None  # inside one_cut_warning: cut inputs per task

    @contextmanager
    def one_cut_warning(self, stage: str) -> Iterator[None]:
        """Within the block, evaluations count their inputs cut to the length budget together:
        one warning line for ``stage`` at its end instead of one per evaluation."""
        self.held_cuts = {}
        try:
            yield
        finally:
            cuts, self.held_cuts = self.held_cuts, None
            warn_inputs_cut(stage, cuts, self.config.model.max_source_length, details=False)

    def encoder(self, context: str) -> ExampleEncoder:
        """One encoder per context."""
        if context not in self.encoders:
            self.encoders[context] = ExampleEncoder.for_config(
                self.config, self.loaded.tokenizer, self.loaded.architecture, context)
        return self.encoders[context]

    def encode(self, task: Task, instances: Sequence[Instance], context: str
               ) -> list[EncodedExample]:
        """The instances' examples; their cut inputs are counted for :meth:`finish`'s summary."""
        examples = list(self.encoder(context).encode_task(task, instances))
        if cut := sum(example.input_cut for example in examples):
            counts = self.inputs_cut.setdefault(context, {})
            counts[task.name] = counts.get(task.name, 0) + cut
        return examples

    def items(self, task: Task, instances: Sequence[Instance], context: str) -> list[EvalItem]:
        encoded = self.encode(task, instances, context)
        return [EvalItem(example=example, references=instance.outputs)
                for example, instance in zip(encoded, instances, strict=True)]

    def evaluate(
        self, items: Sequence[EvalItem], *, model: torch.nn.Module | None = None,
        generate: bool | None = None, router: Router | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[ItemResult]:
        """Test loss (and greedy predictions) of ``items`` with the config's evaluation batches,
        on the loaded model or on ``model`` (the loaded one with adapters)."""
        eval_config = self.config.eval
        return evaluate_items(
            self.loaded.model if model is None else model, self.loaded.tokenizer,
            self.loaded.architecture, items,
            batch_size=eval_config.batch_size, max_batch_tokens=eval_config.max_batch_tokens,
            max_new_tokens=eval_config.max_new_tokens,
            generate=eval_config.generate if generate is None else generate,
            router=router, device=self.accelerator.device, progress=progress,
        )

    def finished_cells(self, *, force: bool = False) -> set[str]:
        """The cells already in the results table, as the main process sees them.

        Every process must plan from the same list: were each to read the table itself, a fast
        process could finish and write a cell before a slow one reads, the two would shard
        different lists and a cell would be skipped by both.
        """
        if force:
            return set()
        return agreed(PartialState(), self.table.finished_cells)

    def shard(self, items: Sequence[Item]) -> list[Item]:
        return list(items[self.accelerator.process_index :: self.accelerator.num_processes])

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Append this process's rows now (each append is its own file, so processes never
        collide and a crash later keeps what was measured so far)."""
        self.table.append(rows)
        if self.after_write is not None:
            self.after_write()
        return len(rows)

    def finish(self, written: int) -> int:
        """Wait for every process; returns the rows written by all of them.

        Inputs cut to the length budget are counted in one warning line for the evaluation, or
        for the whole stage inside :meth:`one_cut_warning`; which tasks lost what is logged at
        info level (``--verbose``).
        """
        budget = self.config.model.max_source_length
        cuts: dict[str, int] = {}
        for context in self.encoders:
            counted = self.inputs_cut.pop(context, {})
            if details := cut_details(counted, budget):
                logger.info("evaluation (context %s): %s", context, details)
            for task, count in counted.items():
                cuts[task] = cuts.get(task, 0) + count
        if self.held_cuts is not None:
            for task, count in cuts.items():
                self.held_cuts[task] = self.held_cuts.get(task, 0) + count
        else:
            warn_inputs_cut("evaluation", cuts, budget, details=False)
        if self.accelerator.num_processes == 1:
            return written
        counts = gather_object([written])
        self.accelerator.wait_for_everyone()
        return int(sum(counts))

    def row(self, **fields: Any) -> dict[str, Any]:
        """A results row with this session's identity filled in, and its task's group (the
        analysis reports each evaluation group apart, and §3-§5 read the unseen one only)."""
        return {
            "run": self.run_name,
            "model": self.model_label,
            "checkpoint_step": self.checkpoint_step,
            "task_group": self.benchmark.group_of(fields["task"]),
            "split": "test",
            "seed": self.config.seed,
            "n": 0,
            **fields,
        }

    def lora_config(self) -> FewShotLoraConfig:
        """``eval.lora`` with ``target_modules`` resolved for the loaded model (one-line
        :class:`ConfigError` when it names no module of it)."""
        lora = self.config.eval.lora
        targets = resolve_target_modules(lora.target_modules, self.loaded.model)
        return lora.model_copy(update={"target_modules": targets})

    def measurement_hash(self, method: str, **inputs: Any) -> str:
        """The ``config_hash`` of the rows ``method`` measures on this checkpoint
        (:func:`itransfer.runs.identity.measurement_hash`)."""
        return measurement_hash(self.config, self.model_label, method, **inputs)

    def write_predictions(self, name: str, records: list[dict[str, Any]]) -> None:
        """Predictions in the benchmark's evaluation format, for `itransfer score`."""
        path = self.out_dir / "predictions" / f"{name}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def open_session(
    config: ExperimentConfig,
    checkpoint: str | Path,
    out_dir: Path,
    *,
    accelerator: Accelerator | None = None,
    run_name: str | None = None,
) -> EvalSession:
    """Load the checkpoint and the benchmark; check that they fit together."""
    accelerator = accelerator or make_accelerator()
    check_launch(accelerator)
    benchmark = open_benchmark(config.data, config.seed)
    loaded = load_model_and_tokenizer(
        checkpoint,
        architecture=config.model.architecture,
        trust_remote_code=config.model.trust_remote_code,
    )
    _check_tokenizer_fits(loaded, checkpoint)
    config = _with_resolved_lora_targets(config, loaded)
    loaded.model.to(accelerator.device)
    step = _checkpoint_step(Path(loaded.source))
    if accelerator.is_main_process:
        write_run_record(Path(out_dir), config, seed=config.seed)
    return EvalSession(
        config=config,
        benchmark=benchmark,
        loaded=loaded,
        model_label=str(checkpoint),
        checkpoint_step=step,
        run_name=run_name or config.name,
        out_dir=Path(out_dir),
        table=ResultsTable(Path(out_dir)),
        accelerator=accelerator,
    )


def _with_resolved_lora_targets(config: ExperimentConfig, loaded: LoadedModel) -> ExperimentConfig:
    """``config`` with ``eval.lora.target_modules: auto`` replaced by the modules it means for
    this model, so the run record (config.yaml, run.json) says which layers the LoRAs adapt.
    Left as ``auto`` where it has no meaning here: only a transfer evaluation needs it, and
    :meth:`EvalSession.lora_settings` reports that then."""
    lora = config.eval.lora
    if lora.target_modules != AUTO:
        return config
    try:
        targets = resolve_target_modules(AUTO, loaded.model)
    except ConfigError:
        return config
    eval_config = config.eval.model_copy(
        update={"lora": lora.model_copy(update={"target_modules": targets})}
    )
    return config.model_copy(update={"eval": eval_config})


def _check_tokenizer_fits(loaded: LoadedModel, checkpoint: str | Path) -> None:
    embeddings = loaded.model.get_input_embeddings().num_embeddings
    if len(loaded.tokenizer) > embeddings:
        raise ITransferError(
            f"{checkpoint}: the tokenizer has {len(loaded.tokenizer)} tokens but the model's "
            f"embedding only {embeddings}; the checkpoint does not match its tokenizer"
        )


def _checkpoint_step(folder: Path) -> int:
    """The instruction-tuning step of a training checkpoint; 0 for any other model."""
    if (folder / STATE_FILE).is_file():
        return int(read_state(folder).get("it_step", 0))  # damaged: one line naming the file
    return 0


def evaluation_tasks(session: EvalSession) -> list[str]:
    """The tasks the config asks to evaluate: explicit names (the first ``eval.max_tasks`` of
    them), or the selection's groups (the first ``eval.max_tasks`` of each group, so a quick
    run still reaches every group it lists)."""
    selection = session.benchmark.selection
    limit = session.config.eval.max_tasks
    if session.config.eval.tasks:
        names = list(session.config.eval.tasks)
        for name in names:
            group = session.benchmark.group_of(name)
            if group in ("seen", "excluded"):
                raise ConfigError(f"eval.tasks: {name} is a {group} task, not an evaluation task")
        names = names[:limit]
    else:
        groups = {
            **selection.groups(),
            "heldout_generalization": selection.heldout_generalization,
        }
        names = []
        for group in session.config.eval.task_groups:
            names.extend(name for name in list(groups[group])[:limit] if name not in names)
    if not names:
        raise DataError(session.benchmark.tasks_dir, "no evaluation tasks in this selection")
    return names


def score_rows(
    session: EvalSession,
    task: Task,
    items: Sequence[EvalItem],
    losses: Sequence[float],
    predictions: Sequence[str | None],
    **fields: Any,
) -> list[dict[str, Any]]:
    """Mean test loss and (when generated) the SNI metrics of one task as results rows."""
    category = task.categories[0]
    rows = [session.row(task=task.name, category=category, metric="loss",
                        value=sum(losses) / len(losses), n=len(losses), **fields)]
    if all(prediction is not None for prediction in predictions):
        scorer = default_scorer()
        scored = [
            ScoredInstance(str(i), task.name, category, scorer.score(p or "", item.references))
            for i, (item, p) in enumerate(zip(items, predictions, strict=True))
        ]
        overall = aggregate(scored).overall
        for metric in ("rougeL", "rougeL_recall", "exact_match"):
            rows.append(session.row(task=task.name, category=category, metric=metric,
                                    value=getattr(overall, metric), n=overall.n, **fields))
    return rows


def prediction_records(
    task: Task, instances: Sequence[Instance], predictions: Sequence[str | None]
) -> list[dict[str, Any]]:
    return [
        {"id": instance.id, "task_id": task.name, "task_category": task.categories[0],
         "references": list(instance.outputs), "prediction": prediction}
        for instance, prediction in zip(instances, predictions, strict=True)
    ]
