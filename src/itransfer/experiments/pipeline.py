"""An experiment as cached, resumable stages: train variants → evaluate checkpoints → report.

    itransfer run quickstart --out runs/quickstart
    itransfer run paper/sec4_sampling --scale tiny --out runs/sec4-tiny

Stages and where they live (``--store``, default ``<out>/stages``):

* ``train-<key>/``: one instruction-tuning run per variant (its trajectory checkpoints);
* ``eval-<key>/``: the evaluations of one checkpoint (ICL, transfer, seen), a results table;

where ``key`` hashes the stage's resolved config and inputs, less the settings that change no
result (:mod:`itransfer.runs.identity` derives both keys from the config's markers). Two
experiments (or two variants) that need the same stage find it done and reuse it — the
pre-trained baseline is evaluated once for every section — and an interrupted run resumes:
finished stages are skipped, a training stage continues from its last checkpoint, an
evaluation stage after its last finished cells.
``--force train:LABEL`` moves that stage aside (never deleting it) and reruns it;
``--force eval:LABEL`` re-measures that model's evaluations (newer rows win).

The run folder gets ``results/`` (every evaluation stage's rows, labelled with the
experiment's model names), ``manifest.json`` (a
:class:`itransfer.analysis.manifest.RunManifest`: models, sections, timings, config,
provenance) and the report.

SIGINT, SIGTERM and SIGUSR1 stop the run where nothing is lost: between stages, inside a
training stage at a step boundary (with a resumable checkpoint), inside an evaluation stage
after the rows being written; :class:`~itransfer.errors.StoppedBySignal` then carries the
signal (the CLI exits with 128 + it) and the same command continues the run.

In code: :func:`plan_stages` says which stages a run has, in order, with their keys (no I/O;
the evaluation stages of a trained model wait for the checkpoints its training stage saved,
read through :func:`itransfer.runs.checkpoints.read_trajectory`), and :func:`run_stage` runs
one of them: the cache, ``--force``, stops, timing and the finished marker.

Under ``accelerate launch`` every process runs this same driver: training and evaluation
stages are split across them, whether a stage is done is decided once for all (by the main
process), and only the main process writes the stage markers, the manifest and the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from itransfer.analysis.manifest import (
    MANIFEST,
    MANIFEST_VERSION,
    ModelInfo,
    RunManifest,
    read_manifest,
)
from itransfer.config.schema import EVALUATION_TASK_GROUPS, ExperimentConfig
from itransfer.data.contexts import one_warning_for_cuts
from itransfer.errors import ConfigError, StoppedBySignal, TrainingStopped
from itransfer.eval.results import RESULTS_DIR, SCHEMA, ResultsTable
from itransfer.experiments.definition import Experiment
from itransfer.models.loading import model_facts
from itransfer.runs.eval_plan import PRETRAINED, EvalPlan, When
from itransfer.runs.identity import evaluation_key, plan_key, training_key
from itransfer.runs.provenance import git_revision, hardware, package_versions, write_run_record
from itransfer.runtime.atomic_files import atomic_write_text, staged_dir
from itransfer.runtime.launch import agreed, make_state
from itransfer.runtime.stopping import StopRequest, stop_requested_on_signal

if TYPE_CHECKING:  # the checkpoint format imports torch, which the planning does not need
    from itransfer.runs.checkpoints import Trajectory

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

    from itransfer.models.loading import resolve_model_source

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


# --- planning: which stages a run has, in order, with their keys (no I/O) --------------------


@dataclass(frozen=True)
class Stage:
    """One cached unit of work: done once, kept under ``<store>/<kind>-<key>/``."""

    label: str  # the experiment's model label
    key: str  # from itransfer.runs.identity: equal keys mean equal results
    forced: bool  # named by --force: measured again whether or not it is done

    kind: ClassVar[str]
    # --force: a training stage is set aside and redone; an evaluation stage keeps its rows and
    # measures again (newer rows win).
    replaced_when_forced: ClassVar[bool]
    stops_after: ClassVar[str]  # where a stop inside the stage leaves it, for the message

    @property
    def name(self) -> str:
        """What the reporter shows and ``--force`` names."""
        return f"{self.kind}:{self.label}"

    @property
    def directory(self) -> str:
        return f"{self.kind}-{self.key}"

    def marker(self) -> dict[str, Any]:
        """What the stage's finished marker records besides kind and time."""
        return {"label": self.label}


@dataclass(frozen=True)
class TrainingStage(Stage):
    config: ExperimentConfig

    kind: ClassVar[str] = "train"
    replaced_when_forced: ClassVar[bool] = True
    stops_after: ClassVar[str] = "after a step, with a resumable checkpoint"


@dataclass(frozen=True)
class EvaluationStage(Stage):
    step: int
    checkpoint: str  # the model directory evaluated (the pre-trained model's name for step 0)
    plan: EvalPlan  # the merged needs of every section for this checkpoint
    config: ExperimentConfig  # the model's config with the plan's evaluation settings

    kind: ClassVar[str] = "eval"
    replaced_when_forced: ClassVar[bool] = False
    stops_after: ClassVar[str] = "after writing its finished rows"

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.label}@{self.step}"

    def marker(self) -> dict[str, Any]:
        return {"label": self.label, "step": self.step}


def training_stages(experiment: Experiment, force: Collection[str] = ()) -> list[TrainingStage]:
    """One training stage per variant some section evaluates, by label."""
    labels = sorted({label for label, _ in plan_evaluations(experiment) if label != PRETRAINED})
    stages = []
    for label in labels:
        config = _config_of(experiment, label)
        stages.append(TrainingStage(label=label, key=training_key(config), config=config,
                                    forced=f"train:{label}" in force))
    return stages


def evaluation_stages(
    experiment: Experiment, trajectories: Mapping[str, Trajectory], force: Collection[str] = ()
) -> list[EvaluationStage]:
    """One evaluation stage per checkpoint some section needs, by (label, step), each with
    the union of what the sections ask of it; ``trajectories`` are the checkpoints the
    training stages saved (a trained label missing there has nothing to evaluate yet)."""
    merged: dict[tuple[str, int], tuple[EvalPlan, str]] = {}
    for (label, when), plan in sorted(plan_evaluations(experiment).items()):
        for step, checkpoint in _checkpoints_needed(experiment, label, when, trajectories):
            combined, _ = merged.get((label, step), (EvalPlan(), checkpoint))
            merged[(label, step)] = (combined | plan, checkpoint)
    return [_evaluation_stage(experiment, label, step, plan, checkpoint, force)
            for (label, step), (plan, checkpoint) in sorted(merged.items())]


def plan_stages(
    experiment: Experiment, trajectories: Mapping[str, Trajectory], force: Collection[str] = ()
) -> list[Stage]:
    """Every stage of the run in the order it runs them: training, then evaluation."""
    return [*training_stages(experiment, force),
            *evaluation_stages(experiment, trajectories, force)]


def _checkpoints_needed(
    experiment: Experiment, label: str, when: When, trajectories: Mapping[str, Trajectory]
) -> list[tuple[int, str]]:
    """(step, model directory) of each checkpoint of ``label`` a ``when`` need covers."""
    if label == PRETRAINED:
        return [(0, experiment.base.model.name_or_path)]
    trajectory = trajectories.get(label)
    if trajectory is None:
        return []
    steps = trajectory.steps if when == "trajectory" else trajectory.steps[-1:]
    return [(step, str(trajectory.checkpoints[step])) for step in steps]


def _evaluation_stage(
    experiment: Experiment, label: str, step: int, plan: EvalPlan, checkpoint: str,
    force: Collection[str],
) -> EvaluationStage:
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
    forced = f"eval:{label}@{step}" in force or f"eval:{label}" in force
    return EvaluationStage(label=label, key=key, forced=forced, step=step, checkpoint=checkpoint,
                           plan=plan, config=run_config)


# --- running one stage: caching, --force, stops, timing, the marker --------------------------

# What a stage does once it must run: (its folder, a stop point it calls where stopping
# loses nothing).
StageWork = Callable[[Path, Callable[[], None]], None]


@dataclass
class StageRun:
    """What every stage of one run shares, and what they add up to."""

    state: Any  # accelerate's PartialState: the main process decides and writes markers
    store: Path
    stop: StopRequest
    reporter: Reporter = field(default_factory=SilentReporter)
    timings: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return bool(self.state.is_main_process)


def run_stage(run: StageRun, stage: Stage, work: StageWork) -> bool:
    """Run ``stage`` unless it is done (and not forced); returns whether it ran.

    Every process calls this for every stage in the same order: whether the stage is done is
    the main process's answer, and only it sets a forced stage aside and writes the marker.
    A stop request ends the run before the stage, or inside it at the stop point ``work``
    offers (a training run stops itself with :class:`TrainingStopped`).
    """
    stage_dir = run.store / stage.directory
    if stage.forced and stage.replaced_when_forced and run.main:
        _set_aside(stage_dir)
    if agreed(run.state, lambda: _finished(stage_dir)) and not stage.forced:
        run.cached.append(stage.name)
        run.reporter.stage(stage.name, "cached")
        return False
    _stop_between_stages(run.state, run.stop, stage.name)
    run.reporter.stage(stage.name, "running")
    where = f"during {stage.name} {stage.stops_after}"
    started = time.perf_counter()
    try:
        work(stage_dir, lambda: _stop_if_requested(run.stop, where))
    except TrainingStopped as exc:
        _stop_if_requested(StopRequest(exc.signal_number), where)
    seconds = run.timings[stage.name] = time.perf_counter() - started
    if run.main:
        _mark_finished(stage_dir, stage.kind, seconds, **stage.marker())
    run.state.wait_for_everyone()
    run.reporter.stage(stage.name, "done", seconds)
    return True


# --- the run ------------------------------------------------------------------------------


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
    from itransfer.runs.checkpoints import read_trajectory

    state = make_state()
    out_dir = Path(out_dir)
    run = StageRun(state=state, store=Path(store) if store is not None else out_dir / "stages",
                   stop=stop,
                   reporter=(reporter or SilentReporter()) if state.is_main_process
                   else SilentReporter())
    _prepare_out_dir(run, out_dir, experiment)
    # 1. instruction tuning of every variant a section uses (trajectory checkpoints included)
    trajectories: dict[str, Trajectory] = {}
    for training in training_stages(experiment, force):
        run_stage(run, training, _training_work(run, training))
        trajectories[training.label] = read_trajectory(run.store / training.directory)
    # 2. evaluations of each checkpoint the sections need (plans merged per checkpoint)
    evaluations = evaluation_stages(experiment, trajectories, force)
    for evaluation in evaluations:
        run_stage(run, evaluation, _evaluation_work(run, evaluation, experiment.name))
    # 3. the experiment's own results table and manifest, then the report (main process only)
    _stop_between_stages(state, stop, "the report")
    report = (_write_outputs(run, out_dir, experiment, evaluations, trajectories, write_report)
              if run.main else None)
    # The others wait: a process that exits while its peers still use the group aborts.
    state.wait_for_everyone()
    return RunSummary(out_dir=out_dir, timings=run.timings, report=report,
                      cached_stages=run.cached)


def _prepare_out_dir(run: StageRun, out_dir: Path, experiment: Experiment) -> None:
    # Every process checks (so that all of them stop on an error) before any writes.
    _check_out_dir(out_dir, experiment)
    _check_tokenizers(experiment)
    run.state.wait_for_everyone()
    if run.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_run_record(out_dir, experiment.base, seed=experiment.base.seed)


def _training_work(run: StageRun, stage: TrainingStage) -> StageWork:
    def train(stage_dir: Path, stop_point: Callable[[], None]) -> None:
        from itransfer.eval.monitor import monitor_for
        from itransfer.train.loop import instruction_tune

        del stop_point  # the trainer stops itself at a step boundary (TrainingStopped)

        def on_step(step: int, total: int, row: dict[str, Any]) -> None:
            if "phase" in row:  # the training set's tokenization, before the first step
                run.reporter.progress(f"{stage.name} {row['phase']}", step, total, {})
            else:
                run.reporter.progress(stage.name, step, total, row)

        instruction_tune(stage.config, stage_dir, resume=True, progress=on_step, stop=run.stop,
                         monitor=monitor_for(stage.config))

    return train


def _evaluation_work(run: StageRun, stage: EvaluationStage, run_name: str) -> StageWork:
    def evaluate(stage_dir: Path, stop_point: Callable[[], None]) -> None:
        from itransfer.eval.icl import evaluate_icl
        from itransfer.eval.seen import evaluate_seen
        from itransfer.eval.session import open_session
        from itransfer.eval.transfer import evaluate_transfer

        session = open_session(stage.config, stage.checkpoint, stage_dir, run_name=run_name)
        # Inside the stage each process stops after its rows in hand are written (the rows are
        # appended at once, so the rerun skips them).
        session.after_write = stop_point

        def on_progress(what: str, done: float, total: int) -> None:
            run.reporter.progress(f"{stage.name} {what}", done, total, {})

        with session.one_cut_warning(stage.name):
            if stage.plan.icl:
                evaluate_icl(session, force=stage.forced, progress=on_progress)
            if stage.plan.seen:
                evaluate_seen(session, force=stage.forced, progress=on_progress)
            if stage.plan.shots:
                evaluate_transfer(session, force=stage.forced, progress=on_progress)

    return evaluate


def _write_outputs(
    run: StageRun, out_dir: Path, experiment: Experiment, evaluations: list[EvaluationStage],
    trajectories: Mapping[str, Trajectory], write_report: bool,
) -> Path | None:
    """The results table, the manifest and (unless told not to) the report; the manifest is
    written again after the report so that it holds the report's timing too."""
    _assemble_results(out_dir, experiment, evaluations, run.store)
    _write_manifest(out_dir, experiment, trajectories, run.timings, run.store)
    if not write_report:
        return None
    from itransfer.analysis.report import write_report as render

    started = time.perf_counter()
    run.reporter.stage("report", "running")
    report = render(out_dir).html
    run.timings["report"] = time.perf_counter() - started
    run.reporter.stage("report", "done", run.timings["report"])
    _write_manifest(out_dir, experiment, trajectories, run.timings, run.store)
    return report


def _assemble_results(
    out_dir: Path, experiment: Experiment, stages: list[EvaluationStage], store: Path
) -> None:
    """Copy every evaluation stage's rows into ``<out>/results``, labelled for this experiment.

    This table is derived (the stages keep the measurements), so it is rebuilt whole: written
    to a staging folder and swapped in.
    """
    frames = []
    for stage in stages:
        frame = ResultsTable(store / stage.directory).read()
        if frame.empty:
            continue
        frame = frame.assign(model=stage.label, checkpoint_step=stage.step, run=experiment.name)
        frames.append(frame)
    with staged_dir(out_dir / RESULTS_DIR) as staging:
        if frames:
            table = pa.Table.from_pandas(
                pd.concat(frames, ignore_index=True)[SCHEMA.names], schema=SCHEMA,
                preserve_index=False,
            )
            pq.write_table(table, staging / "part-assembled.parquet")


def _write_manifest(
    out_dir: Path, experiment: Experiment, trajectories: Mapping[str, Trajectory],
    timings: dict[str, float], store: Path,
) -> None:
    base_model = experiment.base.model
    facts = model_facts(base_model.name_or_path, trust_remote_code=base_model.trust_remote_code)
    models = {PRETRAINED: ModelInfo(
        kind="pretrained", name_or_path=base_model.name_or_path,
        num_parameters=facts.num_parameters if facts else None,
        vocab_size=facts.vocab_size if facts else None,
    )}
    for label, trajectory in trajectories.items():
        config = experiment.variants[label]
        models[label] = ModelInfo(
            kind="instruction_tuned",
            sampler=config.train.sampler.name,
            sampler_config=config.train.sampler.model_dump(mode="json"),
            data_limit=config.data.splits.max_train_instances_per_task,
            mixing_every=config.train.mixing.every,
            budget="fixed" if config.train.steps is not None else config.train.budget,
            total_steps=trajectory.total_steps,
            final_step=trajectory.final_step,
            trajectory_steps=trajectory.steps,
            stage=str(trajectory.run_dir) if trajectory.checkpoints else None,
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
