"""The stages of `itransfer run`: which ones a run has (planned without I/O), and how one stage
is run (caching, --force, stops, timing, its marker), each checked apart from training and
evaluation."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from itransfer.config.packaged import packaged_config_dir
from itransfer.errors import StoppedBySignal, TrainingStopped
from itransfer.experiments.definition import Experiment, load_experiment
from itransfer.experiments.pipeline import (
    STAGE_FILE,
    EvaluationStage,
    SilentReporter,
    StageRun,
    TrainingStage,
    evaluation_stages,
    plan_evaluations,
    plan_stages,
    run_stage,
    training_stages,
)
from itransfer.runs.checkpoints import Trajectory
from itransfer.runs.eval_plan import PRETRAINED, EvalPlan
from itransfer.runs.identity import training_key
from itransfer.runtime.stopping import StopRequest

SECTIONS = {
    "transfer": {"instruction_tuned": "it-a"},
    "samplers": {"models": {"proportional": "it-a", "uniform": "it-b"}},
    "trajectory": {"model": "it-a", "phase_split_step": 3},
}


def _experiment(tmp_path: Path, sections: dict[str, Any] = SECTIONS) -> Experiment:
    spec = {
        "name": "stages-test",
        "base": {"model": {"name_or_path": "itransfer:tiny-t5"},
                 "train": {"steps": 6, "checkpoint_every": 3},
                 "eval": {"shots": [0, 5], "transfer_contexts": ["none"]}},
        "variants": {"it-a": {}, "it-b": {"train": {"sampler": {"name": "uniform"}}},
                     "it-unused": {"train": {"learning_rate": 1e-3}}},
        "sections": sections,
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


def _trajectory(run_dir: Path, *steps: int) -> Trajectory:
    return Trajectory(run_dir, {step: run_dir / "checkpoints" / f"step-{step:07d}"
                                for step in steps}, max(steps, default=None))


# --- planning -----------------------------------------------------------------------------


def test_training_stages_are_the_evaluated_variants_in_label_order(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    stages = training_stages(experiment)
    assert [stage.name for stage in stages] == ["train:it-a", "train:it-b"]  # not it-unused
    for stage in stages:
        assert stage.config == experiment.variants[stage.label]
        assert stage.directory == f"train-{training_key(stage.config)}"
        assert not stage.forced


def test_plan_stages_trains_first_then_evaluates_each_checkpoint_once(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    trajectories = {"it-a": _trajectory(tmp_path / "a", 3, 6),
                    "it-b": _trajectory(tmp_path / "b", 2, 6)}
    stages = plan_stages(experiment, trajectories)
    assert [stage.name for stage in stages] == [
        "train:it-a", "train:it-b",
        "eval:it-a@3", "eval:it-a@6", "eval:it-b@6", "eval:pretrained@0",
    ]
    evaluations = {stage.name: stage for stage in stages if isinstance(stage, EvaluationStage)}
    plans = plan_evaluations(experiment)
    # it-a's final checkpoint is both the transfer/samplers model and the trajectory's end: one
    # stage measures the union; its earlier checkpoint only what the trajectory asks.
    assert evaluations["eval:it-a@6"].plan == plans[("it-a", "final")] | plans[("it-a",
                                                                                 "trajectory")]
    assert evaluations["eval:it-a@3"].plan == plans[("it-a", "trajectory")]
    assert evaluations["eval:it-b@6"].plan == plans[("it-b", "final")]  # not its step 2
    assert evaluations["eval:it-a@3"].checkpoint == str(trajectories["it-a"].checkpoints[3])
    assert evaluations["eval:pretrained@0"].checkpoint == "itransfer:tiny-t5"
    # The stage's config asks for exactly what its plan measures.
    merged = evaluations["eval:it-a@6"]
    assert merged.config.eval.shots == sorted(merged.plan.shots)
    assert merged.config.eval.transfer_contexts == sorted(merged.plan.contexts)
    assert len({stage.directory for stage in stages}) == len(stages)


def test_evaluations_wait_for_the_trajectory_of_their_model(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    # Before training only the pre-trained model's checkpoint is known; a run that saved no
    # checkpoint has nothing to evaluate.
    assert [stage.name for stage in evaluation_stages(experiment, {})] == ["eval:pretrained@0"]
    empty = {"it-a": Trajectory(tmp_path / "a", {}), "it-b": _trajectory(tmp_path / "b", 6)}
    assert [stage.name for stage in evaluation_stages(experiment, empty)] == [
        "eval:it-b@6", "eval:pretrained@0"]


def test_stage_keys_do_not_depend_on_the_order_of_the_sections(tmp_path: Path) -> None:
    trajectories = {"it-a": _trajectory(tmp_path / "a", 3, 6),
                    "it-b": _trajectory(tmp_path / "b", 6)}
    forward = plan_stages(_experiment(tmp_path), trajectories)
    backward = plan_stages(_experiment(tmp_path, dict(reversed(SECTIONS.items()))), trajectories)
    assert [(s.name, s.directory) for s in forward] == [(s.name, s.directory) for s in backward]


def test_force_marks_the_named_stages_and_keeps_their_keys(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    trajectories = {"it-a": _trajectory(tmp_path / "a", 3, 6),
                    "it-b": _trajectory(tmp_path / "b", 6)}
    plain = plan_stages(experiment, trajectories)
    # "eval:LABEL" names every checkpoint of that model, "eval:LABEL@STEP" one of them.
    forced = plan_stages(experiment, trajectories,
                         force=("train:it-b", "eval:it-a", "eval:pretrained@0"))
    assert [stage.name for stage in forced if stage.forced] == [
        "train:it-b", "eval:it-a@3", "eval:it-a@6", "eval:pretrained@0"]
    assert [stage.directory for stage in forced] == [stage.directory for stage in plain]
    one = plan_stages(experiment, trajectories, force=("eval:it-a@6", "train:it-c"))
    assert [stage.name for stage in one if stage.forced] == ["eval:it-a@6"]


def test_the_quickstart_stage_folders_keep_their_names() -> None:
    """The folders written before the planning left the run loop (computed by that code): a
    change orphans every stage store and blocks resuming, see test_identity_pins."""
    experiment = load_experiment(packaged_config_dir() / "quickstart.yaml")
    labels = {label for label, _ in plan_evaluations(experiment)} - {PRETRAINED}
    trajectories = {label: _trajectory(Path("/runs") / label, 80, 160, 240) for label in labels}
    assert [f"{s.name} {s.directory}" for s in plan_stages(experiment, trajectories)] == [
        "train:it-limit10 train-0254babee393",
        "train:it-mix3 train-38de4b3e6da5",
        "train:it-proportional train-bd56c59e97c9",
        "train:it-uniform train-8cc1f8f6f69c",
        "eval:it-limit10@240 eval-2667035d0baf",
        "eval:it-mix3@80 eval-efb48cc04016",
        "eval:it-mix3@160 eval-813ba8f27fd4",
        "eval:it-mix3@240 eval-fc09463cf095",
        "eval:it-proportional@80 eval-4fc64d9a7054",
        "eval:it-proportional@160 eval-7ffb6e0b5c2b",
        "eval:it-proportional@240 eval-e5b89f45c5c5",
        "eval:it-uniform@240 eval-d22ceba9c347",
        "eval:pretrained@0 eval-b9070923e4d4",
    ]


# --- running one stage --------------------------------------------------------------------


class Recorder(SilentReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def stage(self, name: str, status: str, seconds: float | None = None) -> None:
        self.events.append((name, status))


def _run(store: Path, *, main: bool = True, stop: StopRequest | None = None) -> StageRun:
    # One process: the main process's answer is this process's own (launch.agreed).
    state = SimpleNamespace(num_processes=1, is_main_process=main,
                            wait_for_everyone=lambda: None)
    return StageRun(state=state, store=store, stop=stop or StopRequest(), reporter=Recorder())


def _training(forced: bool = False) -> TrainingStage:
    return TrainingStage(label="toy", key="k1", forced=forced, config=None)  # type: ignore[arg-type]


def _evaluation(forced: bool = False) -> EvaluationStage:
    return EvaluationStage(label="toy", key="k2", forced=forced, step=3, checkpoint="ckpt",
                           plan=EvalPlan(icl=True), config=None)  # type: ignore[arg-type]


class FakeWork:
    """Writes one file into the stage folder; ``then`` runs inside it (a stop, an error)."""

    def __init__(self, then: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.calls: list[Path] = []
        self.then = then

    def __call__(self, stage_dir: Path, stop_point: Callable[[], None]) -> None:
        self.calls.append(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / f"output-{len(self.calls)}").touch()
        if self.then is not None:
            self.then(stop_point)


def _marker(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / STAGE_FILE).read_text())


def test_a_stage_runs_once_then_is_cached(tmp_path: Path) -> None:
    run, work = _run(tmp_path), FakeWork()
    assert run_stage(run, _evaluation(), work)
    stage_dir = tmp_path / "eval-k2"
    assert work.calls == [stage_dir]
    marker = _marker(stage_dir)
    assert (marker["kind"], marker["label"], marker["step"]) == ("eval", "toy", 3)
    assert marker["seconds"] == run.timings["eval:toy@3"] >= 0
    assert not run_stage(run, _evaluation(), work)
    assert len(work.calls) == 1 and run.cached == ["eval:toy@3"]
    assert run.reporter.events == [("eval:toy@3", "running"), ("eval:toy@3", "done"),  # type: ignore[attr-defined]
                                   ("eval:toy@3", "cached")]


def test_forcing_a_training_stage_sets_the_old_one_aside(tmp_path: Path) -> None:
    run, work = _run(tmp_path), FakeWork()
    run_stage(run, _training(), work)
    assert run_stage(run, _training(forced=True), work)
    (replaced,) = (tmp_path / ".replaced").iterdir()
    assert replaced.name.startswith("train-k1-")
    assert {path.name for path in replaced.iterdir()} == {"output-1", STAGE_FILE}
    # The rerun starts from an empty folder.
    assert {path.name for path in (tmp_path / "train-k1").iterdir()} == {"output-2", STAGE_FILE}
    assert _marker(tmp_path / "train-k1")["kind"] == "train"


def test_forcing_an_evaluation_stage_measures_again_in_place(tmp_path: Path) -> None:
    run, work = _run(tmp_path), FakeWork()
    run_stage(run, _evaluation(), work)
    assert run_stage(run, _evaluation(forced=True), work)
    assert not (tmp_path / ".replaced").exists()
    assert {path.name for path in (tmp_path / "eval-k2").iterdir()} == {
        "output-1", "output-2", STAGE_FILE}  # the earlier rows stay; newer rows win


def test_only_the_main_process_writes_markers_and_sets_stages_aside(tmp_path: Path) -> None:
    run_stage(_run(tmp_path), _training(), FakeWork())
    other, work = _run(tmp_path, main=False), FakeWork()
    (tmp_path / "train-k1" / STAGE_FILE).unlink()
    assert run_stage(other, _training(forced=True), work)
    assert not (tmp_path / ".replaced").exists()
    assert not (tmp_path / "train-k1" / STAGE_FILE).exists()
    assert "train:toy" in other.timings


def test_a_stop_request_ends_the_run_before_a_stage(tmp_path: Path) -> None:
    run, work = _run(tmp_path, stop=StopRequest(signal.SIGTERM)), FakeWork()
    with pytest.raises(StoppedBySignal, match="SIGTERM: stopped before train:toy") as info:
        run_stage(run, _training(), work)
    assert info.value.signal_number == signal.SIGTERM
    assert work.calls == [] and not (tmp_path / "train-k1").exists()


def test_a_cached_stage_is_passed_even_when_a_stop_was_requested(tmp_path: Path) -> None:
    run_stage(_run(tmp_path), _training(), FakeWork())
    stopping, work = _run(tmp_path, stop=StopRequest(signal.SIGUSR1)), FakeWork()
    assert not run_stage(stopping, _training(), work)
    assert work.calls == []


def test_a_stop_inside_a_stage_leaves_it_unfinished(tmp_path: Path) -> None:
    run = _run(tmp_path)

    def signal_then_reach_the_stop_point(stop_point: Callable[[], None]) -> None:
        stop_point()  # nothing requested yet: goes on
        run.stop.signal = signal.SIGUSR1
        stop_point()

    with pytest.raises(StoppedBySignal, match="SIGUSR1: stopped during eval:toy@3 after "
                                              "writing its finished rows; run the same"):
        run_stage(run, _evaluation(), FakeWork(signal_then_reach_the_stop_point))
    assert not (tmp_path / "eval-k2" / STAGE_FILE).exists()
    assert "eval:toy@3" not in run.timings


def test_a_training_run_that_stopped_itself_stops_the_run(tmp_path: Path) -> None:
    def trainer_stops(stop_point: Callable[[], None]) -> None:
        raise TrainingStopped("stopped at step 2", signal.SIGINT)

    run = _run(tmp_path)
    with pytest.raises(StoppedBySignal, match="SIGINT: stopped during train:toy after a step, "
                                              "with a resumable checkpoint") as info:
        run_stage(run, _training(), FakeWork(trainer_stops))
    assert info.value.signal_number == signal.SIGINT
    assert not (tmp_path / "train-k1" / STAGE_FILE).exists()
