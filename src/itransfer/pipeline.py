"""An experiment as cached, resumable stages: train variants → evaluate checkpoints → report.

    itransfer run quickstart --out runs/quickstart
    itransfer run paper/sec4_sampling --scale tiny --out runs/sec4-tiny

Stages and where they live (``--store``, default ``<out>/stages``):

* ``train-<key>/``: one instruction-tuning run per variant (its trajectory checkpoints);
* ``eval-<key>/``: the evaluations of one checkpoint (ICL, transfer, seen), a results table;

where ``key`` hashes the stage's resolved config and inputs, less the settings that change no
result (:mod:`itransfer.identity` derives both keys from the config's markers). Two
experiments (or two variants) that need the same stage find it done and reuse it — the
pre-trained baseline is evaluated once for every section — and an interrupted run resumes:
finished stages are skipped, a training stage continues from its last checkpoint, an
evaluation stage after its last finished cells.
``--force train:LABEL`` moves that stage aside (never deleting it) and reruns it;
``--force eval:LABEL`` re-measures that model's evaluations (newer rows win).

The run folder gets ``results/`` (every evaluation stage's rows, labelled with the
experiment's model names), ``manifest.json`` (a :class:`itransfer.schema.RunManifest`: models,
sections, timings, config, provenance) and the report.

SIGINT, SIGTERM and SIGUSR1 stop the run where nothing is lost: between stages, inside a
training stage at a step boundary (with a resumable checkpoint), inside an evaluation stage
after the rows being written; :class:`~itransfer.errors.StoppedBySignal` then carries the
signal (the CLI exits with 128 + it) and the same command continues the run.

Under ``accelerate launch`` every process runs this same driver: training and evaluation
stages are split across them, whether a stage is done is decided once for all (by the main
process), and only the main process writes the stage markers, the manifest and the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from itransfer.config import EVALUATION_TASK_GROUPS, ExperimentConfig
from itransfer.data.contexts import one_warning_for_cuts
from itransfer.errors import ConfigError, StoppedBySignal, TrainingStopped
from itransfer.eval.results import RESULTS_DIR, SCHEMA, ResultsTable
from itransfer.experiment import Experiment
from itransfer.identity import evaluation_key, plan_key, training_key
from itransfer.io_utils import atomic_write_text, staged_dir
from itransfer.launch import agreed, make_state
from itransfer.models import model_facts
from itransfer.provenance import git_revision, hardware, package_versions, write_run_record
from itransfer.schema import (
    MANIFEST,
    MANIFEST_VERSION,
    PRETRAINED,
    EvalPlan,
    ModelInfo,
    RunManifest,
    When,
    read_manifest,
)
from itransfer.stopping import StopRequest, stop_requested_on_signal

STAGE_FILE = "stage.json"


class Reporter(Protocol):
    """What the pipeline tells its caller (the CLI draws it with rich)."""

    def stage(self, name: str, status: str, seconds: float | None = None) -> None: ...

    def progress(self, name: str, done: float, total: int, info: dict[str, Any]) -> None: ...


class SilentReporter:
    def stage(self, name: str, status: str, seconds: float | None = None) -> None:
        del name, status, seconds

    def progress(self, name: str, done: float, total: int, info: dict[str, Any]) -> None:
        del name, done, total, info


@dataclass
class RunSummary:
    out_dir: Path
    timings: dict[str, float]
    report: Path | None
    cached_stages: list[str]


def plan_evaluations(experiment: Experiment) -> dict[tuple[str, When], EvalPlan]:
    """(model label, "final" | "trajectory") → what the sections need measured, merged."""
    plans: dict[tuple[str, When], EvalPlan] = {}
    for section in experiment.spec.sections.values():
        for need in section.needs(experiment.base.eval):
            key = (need.model, need.when)
            plans[key] = plans.get(key, EvalPlan()) | need.plan
    return plans


def _config_of(experiment: Experiment, label: str) -> ExperimentConfig:
    return experiment.base if label == PRETRAINED else experiment.variants[label]


def _finished(stage_dir: Path) -> bool:
    return (stage_dir / STAGE_FILE).is_file()


def _mark_finished(stage_dir: Path, kind: str, seconds: float, **extra: Any) -> None:
    record = {"kind": kind, "seconds": seconds,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    atomic_write_text(stage_dir / STAGE_FILE, json.dumps(record, indent=1) + "\n")


def _set_aside(stage_dir: Path) -> None:
    """--force keeps the old stage, renamed, rather than deleting anything."""
    if stage_dir.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = stage_dir.parent / ".replaced" / f"{stage_dir.name}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        stage_dir.rename(target)


def _check_out_dir(out_dir: Path, experiment: Experiment) -> None:
    if (out_dir / MANIFEST).is_file():
        previous = read_manifest(out_dir).experiment
        if previous != experiment.name:
            raise ConfigError(
                f"{out_dir} holds the results of experiment '{previous}', not "
                f"'{experiment.name}'; choose another --out"
            )
    elif (out_dir / RESULTS_DIR).exists():
        raise ConfigError(f"{out_dir} already holds results of another run; choose another --out")


def _check_tokenizers(experiment: Experiment) -> None:
    """Every model of one experiment must share a tokenizer (their losses are compared)."""
    from transformers import AutoTokenizer

    from itransfer.models import resolve_model_source

    seen: dict[str, tuple[str, int]] = {}
    for label in [PRETRAINED, *experiment.variants]:
        config = _config_of(experiment, label)
        name = config.model.name_or_path
        if name in {entry[0] for entry in seen.values()}:
            continue
        source, local = resolve_model_source(name)
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local, trust_remote_code=config.model.trust_remote_code
        )
        fingerprint = hash(tuple(sorted(tokenizer.get_vocab().items())))
        seen[label] = (name, fingerprint)
    fingerprints = {fingerprint for _, fingerprint in seen.values()}
    if len(fingerprints) > 1:
        described = ", ".join(f"{label}: {name}" for label, (name, _) in seen.items())
        raise ConfigError(
            f"{experiment.source}: the experiment's models use different tokenizers "
            f"({described}); their losses would not be comparable"
        )


def run_experiment(
    experiment: Experiment,
    out_dir: Path,
    *,
    store: Path | None = None,
    force: tuple[str, ...] = (),
    reporter: Reporter | None = None,
    write_report: bool = True,
    stop: StopRequest | None = None,
) -> RunSummary:
    """Run (or resume) every stage of ``experiment``; the report goes to ``out_dir``.

    A stop signal ends it early with :class:`StoppedBySignal` (see the module docstring);
    ``stop`` is a request the caller already watches, else the handlers are installed here."""
    with stop_requested_on_signal(stop) as request, one_warning_for_cuts():
        return _run_stages(experiment, out_dir, store=store, force=force, reporter=reporter,
                           write_report=write_report, stop=request)


def _stop_if_requested(request: StopRequest, where: str) -> None:
    if request.signal is not None:
        raise StoppedBySignal(
            f"{request.name}: stopped {where}; run the same command again to continue",
            request.signal)


def _stop_between_stages(state: Any, request: StopRequest, before: str) -> None:
    """Stop before stage ``before`` if the main process was asked to; every process follows its
    answer, so none goes on into a stage whose collectives the others would never join."""
    signum = agreed(state, lambda: request.signal)
    _stop_if_requested(StopRequest(signum), f"before {before}")


def _run_stages(
    experiment: Experiment,
    out_dir: Path,
    *,
    store: Path | None,
    force: tuple[str, ...],
    reporter: Reporter | None,
    write_report: bool,
    stop: StopRequest,
) -> RunSummary:
    from itransfer.eval.icl import evaluate_icl
    from itransfer.eval.seen import evaluate_seen
    from itransfer.eval.session import open_session
    from itransfer.eval.transfer import evaluate_transfer
    from itransfer.train.checkpoint import list_checkpoints, read_state
    from itransfer.train.loop import instruction_tune

    state = make_state()
    main = state.is_main_process
    reporter = (reporter or SilentReporter()) if main else SilentReporter()
    out_dir = Path(out_dir)
    store = Path(store) if store is not None else out_dir / "stages"
    # Every process checks (so that all of them stop on an error) before any writes.
    _check_out_dir(out_dir, experiment)
    _check_tokenizers(experiment)
    state.wait_for_everyone()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_run_record(out_dir, experiment.base, seed=experiment.base.seed)
    timings: dict[str, float] = {}
    cached: list[str] = []
    plans = plan_evaluations(experiment)

    # 1. instruction tuning of every variant a section uses (trajectory checkpoints included)
    checkpoints: dict[str, dict[int, Path]] = {PRETRAINED: {}}
    total_steps: dict[str, int] = {}  # what each run's step budget came to (its saved state)
    trained_labels = sorted({label for label, _ in plans if label != PRETRAINED})
    for label in trained_labels:
        config = _config_of(experiment, label)
        stage_dir = store / f"train-{training_key(config)}"
        name = f"train:{label}"
        if name in force and main:
            _set_aside(stage_dir)
        if agreed(state, lambda stage_dir=stage_dir: _finished(stage_dir)):
            cached.append(name)
            reporter.stage(name, "cached")
        else:
            _stop_between_stages(state, stop, name)
            reporter.stage(name, "running")
            started = time.perf_counter()

            def on_step(step: int, total: int, row: dict[str, Any], name: str = name) -> None:
                if "phase" in row:  # the training set's tokenization, before the first step
                    reporter.progress(f"{name} {row['phase']}", step, total, {})
                else:
                    reporter.progress(name, step, total, row)

            try:
                instruction_tune(config, stage_dir, resume=True, progress=on_step, stop=stop)
            except TrainingStopped as exc:
                _stop_if_requested(StopRequest(exc.signal_number),
                                   f"during {name} after a step, with a resumable checkpoint")
            timings[name] = time.perf_counter() - started
            if main:
                _mark_finished(stage_dir, "train", timings[name], label=label)
            state.wait_for_everyone()
            reporter.stage(name, "done", timings[name])
        checkpoints[label] = {
            int(path.name.removeprefix("step-")): path
            for path in list_checkpoints(stage_dir / "checkpoints")
        }
        if checkpoints[label]:
            last = checkpoints[label][max(checkpoints[label])]
            total_steps[label] = int(read_state(last)["total_it_steps"])

    # 2. evaluations of each checkpoint the sections need (plans merged per checkpoint)
    merged: dict[tuple[str, int], tuple[EvalPlan, str]] = {}
    for (label, when), plan in sorted(plans.items()):
        config = _config_of(experiment, label)
        if label == PRETRAINED:
            targets = {0: config.model.name_or_path}
        else:
            steps = sorted(checkpoints[label])
            chosen = steps if when == "trajectory" else steps[-1:]
            targets = {step: str(checkpoints[label][step]) for step in chosen}
        for step, checkpoint in targets.items():
            combined, _ = merged.get((label, step), (EvalPlan(), checkpoint))
            merged[(label, step)] = (combined | plan, checkpoint)

    eval_stages: list[tuple[str, int, Path]] = []
    for (label, step), (plan, checkpoint) in sorted(merged.items()):
        config = _config_of(experiment, label)
        # A section's extra groups (held-out tasks) join the config's, in a fixed order
        # so that the stage key does not depend on which section asked first.
        extra_groups = [group for group in EVALUATION_TASK_GROUPS
                        if group in plan.task_groups and group not in config.eval.task_groups]
        eval_config = config.eval.model_copy(
            update={"shots": sorted(plan.shots) or [0],
                    "transfer_contexts": sorted(plan.contexts) or ["none"],
                    "task_groups": [*config.eval.task_groups, *extra_groups]}
        )
        run_config = config.model_copy(update={"eval": eval_config})
        key = evaluation_key(
            run_config,
            checkpoint if label == PRETRAINED else f"{training_key(config)}@{step}",
            plan_key(plan),
        )
        stage_dir = store / f"eval-{key}"
        name = f"eval:{label}@{step}"
        forced = name in force or f"eval:{label}" in force
        eval_stages.append((label, step, stage_dir))
        if agreed(state, lambda stage_dir=stage_dir: _finished(stage_dir)) and not forced:
            cached.append(name)
            reporter.stage(name, "cached")
            continue
        _stop_between_stages(state, stop, name)
        reporter.stage(name, "running")
        started = time.perf_counter()
        session = open_session(run_config, checkpoint, stage_dir, run_name=experiment.name)
        # Inside the stage each process stops after its rows in hand are written (the rows are
        # appended at once, so the rerun skips them).
        session.after_write = lambda name=name: _stop_if_requested(
            stop, f"during {name} after writing its finished rows")

        def on_progress(what: str, done: float, total: int, name: str = name) -> None:
            reporter.progress(f"{name} {what}", done, total, {})

        with session.one_cut_warning(name):
            if plan.icl:
                evaluate_icl(session, force=forced, progress=on_progress)
            if plan.seen:
                evaluate_seen(session, force=forced, progress=on_progress)
            if plan.shots:
                evaluate_transfer(session, force=forced, progress=on_progress)
        timings[name] = time.perf_counter() - started
        if main:
            _mark_finished(stage_dir, "eval", timings[name], label=label, step=step)
        state.wait_for_everyone()
        reporter.stage(name, "done", timings[name])

    # 3. the experiment's own results table and manifest, then the report (main process only)
    report = None
    _stop_between_stages(state, stop, "the report")
    if main:
        _assemble_results(out_dir, experiment, eval_stages)
        _write_manifest(out_dir, experiment, checkpoints, total_steps, timings, store)
        if write_report:
            from itransfer.analysis.report import write_report as render

            started = time.perf_counter()
            reporter.stage("report", "running")
            report = render(out_dir).html
            timings["report"] = time.perf_counter() - started
            reporter.stage("report", "done", timings["report"])
            _write_manifest(out_dir, experiment, checkpoints, total_steps, timings, store)
    # The others wait: a process that exits while its peers still use the group aborts.
    state.wait_for_everyone()
    return RunSummary(out_dir=out_dir, timings=timings, report=report, cached_stages=cached)


def _assemble_results(
    out_dir: Path, experiment: Experiment, stages: list[tuple[str, int, Path]]
) -> None:
    """Copy every evaluation stage's rows into ``<out>/results``, labelled for this experiment.

    This table is derived (the stages keep the measurements), so it is rebuilt whole: written
    to a staging folder and swapped in.
    """
    frames = []
    for label, step, stage_dir in stages:
        frame = ResultsTable(stage_dir).read()
        if frame.empty:
            continue
        frame = frame.assign(model=label, checkpoint_step=step, run=experiment.name)
        frames.append(frame)
    with staged_dir(out_dir / RESULTS_DIR) as staging:
        if frames:
            table = pa.Table.from_pandas(
                pd.concat(frames, ignore_index=True)[SCHEMA.names], schema=SCHEMA,
                preserve_index=False,
            )
            pq.write_table(table, staging / "part-assembled.parquet")


def _write_manifest(
    out_dir: Path, experiment: Experiment, checkpoints: dict[str, dict[int, Path]],
    total_steps: dict[str, int], timings: dict[str, float], store: Path,
) -> None:
    base_model = experiment.base.model
    facts = model_facts(base_model.name_or_path, trust_remote_code=base_model.trust_remote_code)
    models = {PRETRAINED: ModelInfo(
        kind="pretrained", name_or_path=base_model.name_or_path,
        num_parameters=facts.num_parameters if facts else None,
        vocab_size=facts.vocab_size if facts else None,
    )}
    for label, steps in checkpoints.items():
        if label == PRETRAINED:
            continue
        config = experiment.variants[label]
        models[label] = ModelInfo(
            kind="instruction_tuned",
            sampler=config.train.sampler.name,
            sampler_spec=config.train.sampler.model_dump(mode="json"),
            data_limit=config.data.splits.max_train_instances_per_task,
            mixing_every=config.train.mixing.every,
            budget="fixed" if config.train.steps is not None else config.train.budget,
            total_steps=total_steps.get(label),
            final_step=max(steps) if steps else 0,
            trajectory_steps=tuple(sorted(steps)),
            stage=str(next(iter(steps.values())).parent.parent) if steps else None,
        )
    manifest_path = out_dir / MANIFEST
    previous_timings = read_manifest(out_dir).timings if manifest_path.is_file() else {}
    manifest = RunManifest(
        version=MANIFEST_VERSION,
        experiment=experiment.name,
        title=experiment.spec.title,
        source=experiment.source,
        models=models,
        sections=experiment.spec.sections,
        timings={**previous_timings, **timings},
        store=str(store),
        config=experiment.base.model_dump(mode="json"),
        variants={label: config.model_dump(mode="json")
                  for label, config in experiment.variants.items()},
        versions=package_versions(),
        git=git_revision(),
        hardware=hardware(),
    )
    atomic_write_text(manifest_path, manifest.to_json())
