"""The transfer monitor (``train.monitor``): few-shot LoRA transfer and ICL on probe tasks,
measured on the weights of a run while it trains.

A probe trains one LoRA per (probe task, k) on the task's seeded k-shot draw with the batched
engine (:func:`~itransfer.eval.multilora.train_cells_batched`, all cells in the same passes),
measures each adapter's test loss on the task's first ``test_items`` test instances, measures
the model's ICL loss on the same instances with exemplars in the input, and correlates the two
across the probe tasks (Spearman). The adapters are removed afterwards; the training loop runs
the probe isolated from training (:mod:`itransfer.train.monitoring`).

The probe tasks are not the evaluation tasks. By default they are drawn, by the run's seed,
from the evaluation groups (unseen, unseen_synthetic, held-out domain and adversarial) whose
tasks the run's evaluation does not use: choosing a checkpoint by the monitor then never
selects on the tasks it will be tested on. On the bundled slice with the default evaluation
(``eval.task_groups: [unseen]``) they come from the 11 held-out domain and adversarial tasks.
``train.monitor.probe_tasks`` names them instead; either way they are written, with why, to
``monitor_probe.json`` in the run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from scipy import stats

from itransfer.config.schema import EVALUATION_TASK_GROUPS, ExperimentConfig, MonitorConfig
from itransfer.data.benchmark import SNIBenchmark, open_benchmark
from itransfer.data.selection import TaskSelection
from itransfer.encoding.examples import ExampleEncoder
from itransfer.errors import ConfigError
from itransfer.eval.inference import EvalItem, evaluate_items
from itransfer.eval.lora import TransferCell
from itransfer.eval.multilora import train_cells_batched
from itransfer.runs.probe import ProbeContext
from itransfer.runtime.atomic_files import atomic_write_text

PROBE_FILE = "monitor_probe.json"


@dataclass(frozen=True)
class ProbeChoice:
    """The probe tasks of a run and why they are these."""

    tasks: tuple[str, ...]
    evaluated: tuple[str, ...]  # what the run's evaluation uses: never probed
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "why": self.why,
                "evaluation_tasks": list(self.evaluated)}


def evaluated_tasks(config: ExperimentConfig, selection: TaskSelection) -> set[str]:
    """Every task the run's evaluation may use: all tasks of its groups (not only the first
    ``eval.max_tasks``, so a later, wider evaluation is covered too) and its named tasks."""
    groups = {**selection.groups(), "heldout_generalization": selection.heldout_generalization}
    names = {name for group in config.eval.task_groups for name in groups[group]}
    return names | set(config.eval.tasks or ())


def choose_probe_tasks(config: ExperimentConfig, benchmark: SNIBenchmark) -> ProbeChoice:
    """The probe tasks: ``train.monitor.probe_tasks``, or ``train.monitor.tasks`` tasks drawn
    by the seed from the evaluation groups' tasks that the evaluation does not use. One-line
    :class:`ConfigError` naming the setting when there are none."""
    monitor = _monitor_config(config)
    selection = benchmark.selection
    evaluated = evaluated_tasks(config, selection)
    if monitor.probe_tasks is not None:
        _check_named(monitor.probe_tasks, evaluated, benchmark)
        return ProbeChoice(tuple(monitor.probe_tasks), tuple(sorted(evaluated)),
                           "named by train.monitor.probe_tasks")
    groups = selection.groups()
    spare = sorted({name for group in EVALUATION_TASK_GROUPS for name in groups[group]}
                   - evaluated)
    if len(spare) < 2:
        raise ConfigError(
            f"train.monitor: {len(spare)} evaluation task(s) are left outside the evaluation "
            f"(eval.task_groups={config.eval.task_groups}) and the probe needs at least 2; "
            "name tasks the evaluation does not use in train.monitor.probe_tasks: [...], or "
            "evaluate fewer groups")
    # sha256 of the seed, not hash(): every process and every later run draws alike.
    digest = hashlib.sha256(f"monitor-probe|{config.seed}".encode()).digest()
    drawn = random.Random(int.from_bytes(digest[:8], "big")).sample(
        spare, min(monitor.tasks, len(spare)))
    used = sorted(group for group in EVALUATION_TASK_GROUPS
                  if any(name in evaluated for name in groups[group]))
    why = (f"drawn by seed {config.seed} from the {len(spare)} evaluation-group tasks that "
           f"the evaluation (groups {', '.join(used) or 'none'}"
           f"{', named tasks' if config.eval.tasks else ''}) does not use, so that choosing a "
           "checkpoint by the monitor never selects on the test tasks")
    return ProbeChoice(tuple(sorted(drawn)), tuple(sorted(evaluated)), why)


def _check_named(names: list[str], evaluated: set[str], benchmark: SNIBenchmark) -> None:
    for name in names:
        group = benchmark.group_of(name)  # one line naming the folder for an unknown task
        if group not in EVALUATION_TASK_GROUPS:
            raise ConfigError(
                f"train.monitor.probe_tasks: {name} is a {group} task; a probe task needs a "
                "few-shot pool and must not be trained on (an unseen or held-out task)")
        if name in evaluated:
            raise ConfigError(
                f"train.monitor.probe_tasks: {name} is evaluated (eval.task_groups="
                f"{benchmark.group_of(name)}); probing it would select checkpoints on test tasks")
    if len(set(names)) < 2:
        raise ConfigError("train.monitor.probe_tasks: name at least 2 tasks (Spearman)")


def _monitor_config(config: ExperimentConfig) -> MonitorConfig:
    if config.train.monitor is None:
        raise ConfigError("train.monitor is not set")
    return config.train.monitor


def monitor_for(config: ExperimentConfig) -> TransferMonitor | None:
    """The run's monitor, or None when ``train.monitor`` is unset (checked before training:
    a bad probe set fails at once, not after the first steps)."""
    return TransferMonitor(config) if config.train.monitor is not None else None


@dataclass
class _Probe:
    """The encoded items of one probe: per task, its ICL items and its test items; the cells."""

    icl: dict[str, list[EvalItem]]
    tests: dict[str, list[EvalItem]]
    cells: list[TransferCell]


class TransferMonitor:
    """:class:`~itransfer.train.monitoring.Monitor` of few-shot LoRA transfer and ICL."""

    def __init__(
        self, config: ExperimentConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.monitor = _monitor_config(config)
        self.benchmark = open_benchmark(config.data, config.seed)
        self.choice = choose_probe_tasks(config, self.benchmark)
        self.clock = clock
        self.last_probe = clock()
        self.context: ProbeContext | None = None
        self.probe: _Probe | None = None

    def start(self, context: ProbeContext) -> None:
        self.context = context
        self.probe = self._encode(context)
        self.last_probe = self.clock()
        record = {**self.choice.to_json(), "seed": self.config.seed,
                  "settings": self.monitor.model_dump(mode="json")}
        atomic_write_text(context.out_dir / PROBE_FILE, json.dumps(record, indent=1) + "\n")

    def due(self, step: int) -> bool:
        every_steps, every_minutes = self.monitor.every_steps, self.monitor.every_minutes
        if every_steps is not None and step % every_steps == 0:
            return True
        return every_minutes is not None and self.clock() - self.last_probe >= every_minutes * 60

    def _encode(self, context: ProbeContext) -> _Probe:
        def encoder(name: str) -> ExampleEncoder:
            return ExampleEncoder.for_config(self.config, context.tokenizer,
                                             context.architecture, name)  # type: ignore[arg-type]

        icl_encoder, transfer_encoder = encoder(self.config.eval.icl_context), encoder(
            self.monitor.context)
        probe = _Probe({}, {}, [])
        seed = self.config.eval.seeds[0]
        for name in self.choice.tasks:
            task, split = self.benchmark.task(name), self.benchmark.split(name)
            test = split.test[: self.monitor.test_items]
            probe.icl[name] = _items(icl_encoder, task, test)
            probe.tests[name] = _items(transfer_encoder, task, test)
            pool = list(transfer_encoder.encode_task(task, split.few_shot_pool))
            for shots in self.monitor.shots:
                drawn = split.few_shot_indices(shots, seed=seed)
                probe.cells.append(TransferCell(name, shots, self.monitor.context, seed,
                                                tuple(pool[i] for i in drawn)))
        return probe

    def measure(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        """ICL and few-shot transfer losses on the probe tasks at this step; the model comes
        back as it was (its LoRAs removed)."""
        if self.context is None or self.probe is None:
            raise RuntimeError("TransferMonitor.measure before start")
        started = time.perf_counter()
        icl = {name: self._mean_loss(model, items) for name, items in self.probe.icl.items()}
        finetune = self._transfer_losses(model)
        shots = self.monitor.shots
        by_k = {k: [finetune[(name, k)] for name in self.choice.tasks] for k in shots}
        icl_losses = [icl[name] for name in self.choice.tasks]
        first = shots[0]
        self.last_probe = self.clock()
        return {
            "k": first, "tasks": len(self.choice.tasks),
            "test_items": sum(len(items) for items in self.probe.tests.values()),
            "finetune_loss": _mean(by_k[first]), "icl_loss": _mean(icl_losses),
            "spearman": _spearman(by_k[first], icl_losses),
            "finetune_loss_by_k": {str(k): _mean(v) for k, v in by_k.items()},
            "spearman_by_k": {str(k): _spearman(v, icl_losses) for k, v in by_k.items()},
            "per_task": {name: {"icl_loss": icl[name],
                                **{f"finetune_loss_k{k}": finetune[(name, k)] for k in shots}}
                         for name in self.choice.tasks},
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _mean_loss(self, model: torch.nn.Module, items: list[EvalItem], **route: Any) -> float:
        return _mean([result.loss for result in self._evaluate(model, items, **route)])

    def _evaluate(self, model: torch.nn.Module, items: list[EvalItem], **route: Any) -> list[Any]:
        assert self.context is not None
        evaluation = self.config.eval
        return evaluate_items(
            model, self.context.tokenizer, self.context.architecture, items,  # type: ignore[arg-type]
            batch_size=evaluation.batch_size, max_batch_tokens=evaluation.max_batch_tokens,
            generate=False, device=self.context.device, **route)

    def _transfer_losses(self, model: torch.nn.Module) -> dict[tuple[str, int], float]:
        """Each cell's adapter's mean test loss, all cells trained and evaluated together."""
        assert self.context is not None and self.probe is not None
        evaluation = self.config.eval
        lora = evaluation.lora.model_copy(update={"epochs": self.monitor.lora_epochs})
        cells = self.probe.cells
        trained = train_cells_batched(
            model, cells, lora, pad_token_id=self.context.tokenizer.pad_token_id,
            architecture=self.context.architecture,  # type: ignore[arg-type]
            device=self.context.device, max_examples_per_pass=evaluation.max_examples_per_pass,
            max_tokens_per_pass=evaluation.max_tokens_per_pass)
        try:
            items = [EvalItem(item.example, item.references, adapter=index)
                     for index, cell in enumerate(cells) for item in self.probe.tests[cell.task]]
            results = self._evaluate(trained.adapters.model, items, router=trained.adapters.route)
        finally:
            trained.adapters.remove()
        losses: dict[tuple[str, int], float] = {}
        offset = 0
        for cell in cells:
            count = len(self.probe.tests[cell.task])
            cell_results = results[offset : offset + count]
            losses[(cell.task, cell.shots)] = _mean([result.loss for result in cell_results])
            offset += count
        return losses


def _items(encoder: ExampleEncoder, task: Any, instances: Any) -> list[EvalItem]:
    encoded = encoder.encode_task(task, instances)
    return [EvalItem(example=example, references=instance.outputs)
            for example, instance in zip(encoded, instances, strict=True)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _spearman(first: list[float], second: list[float]) -> float | None:
    """Spearman's rho across the probe tasks; None where it is undefined (a constant side)."""
    rho = stats.spearmanr(first, second).statistic
    return None if rho is None or math.isnan(rho) else float(rho)
