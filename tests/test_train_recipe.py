"""Each part of the instruction-tuning recipe on its own: setup (fresh and resumed), one step,
the checkpoint it writes and reads back, and clean-up."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from itransfer.data.benchmark import open_benchmark
from itransfer.errors import ConfigError, DataError
from itransfer.sampling import UniformSampler
from itransfer.train import checkpoint as ckpt
from itransfer.train import loop
from itransfer.train.loop import (
    cleanup,
    instruction_tune,
    log_step,
    save_checkpoint,
    save_resumable,
    train_step,
    unsupervised_step,
)
from itransfer.train.recipe import (
    LOG_FILE,
    TrainState,
    check_compatible,
    instruction_tuning_steps,
    setup,
)
from tiny_configs import tiny_train_config as _config


def _weights(state: TrainState) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in state.model.state_dict().items()}


def _inner_optimizer(state: TrainState) -> torch.optim.Optimizer:
    return getattr(state.optimizer, "optimizer", state.optimizer)  # accelerate's wrapper


class RecordingSink:
    def __init__(self, fail_on_close: bool = False) -> None:
        self.closed = False
        self.fail_on_close = fail_on_close

    def log(self, row: dict[str, Any], weights: np.ndarray, task_losses: dict) -> None:
        del row, weights, task_losses

    def close(self) -> None:
        self.closed = True
        if self.fail_on_close:
            raise OSError("disk full")


def test_setup_builds_a_fresh_state(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(
        tiny_model_dir, "train.steps=5", "train.sampler={name: uniform}",
        "data.splits.max_train_instances_per_task=50", "train.tensorboard=true",
    )
    state = setup(config, tmp_path / "run")
    try:
        assert (state.it_step, state.optimizer_step, state.total_it_steps) == (0, 0, 5)
        assert state.log == [] and state.unsupervised is None
        benchmark = open_benchmark(config.data, config.seed)
        assert state.task_names == list(benchmark.selection.seen)
        sizes = [len(benchmark.split(name).train) for name in state.task_names]
        assert max(sizes) == 50  # the data limit applies to the sizes the sampler sees
        assert isinstance(state.sampler, UniformSampler)
        assert list(state.sampler.task_sizes) == sizes
        np.testing.assert_allclose(state.sampler.weights(0), 1 / len(sizes))
        optimizer = _inner_optimizer(state)
        assert isinstance(optimizer, torch.optim.AdamW)
        # Warm-up: the first step runs at 1/warmup_steps of the peak rate.
        assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 / 2)
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert trained == {id(p) for p in state.model.parameters()}
        assert (tmp_path / "run" / LOG_FILE).read_text() == ""
        assert (tmp_path / "run" / "config.yaml").is_file()
        assert len(state.sinks) == 1  # TensorBoard, opened by the main process
    finally:
        cleanup(state)
    assert state.sinks == []


def test_setup_with_mixing_builds_the_corpus_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, "train.steps=6", "train.mixing.every=3")
    state = setup(config, tmp_path / "run")
    weights = _weights(state)
    documents_read = state.unsupervised.state_dict()["documents_read"]
    loss = unsupervised_step(state)
    assert loss == loss and loss > 0
    assert (state.it_step, state.optimizer_step) == (0, 1)  # mixing steps are not IT steps
    assert state.unsupervised.state_dict()["documents_read"] > documents_read
    assert any(not torch.equal(weights[name], value) for name, value in _weights(state).items())
    cleanup(state)


def test_train_step_updates_the_model_and_moves_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = setup(_config(tiny_model_dir, "train.steps=5"), tmp_path / "run")
    before = _weights(state)
    stream_before = state.stream.state_dict()
    row = train_step(state)
    assert (state.it_step, state.optimizer_step) == (1, 1)
    assert row["step"] == 1 and row["loss"] > 0 and row["tokens"] > 0
    after = _weights(state)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    # The first step drew a window of 4 batches and consumed one; the next consumes another.
    assert stream_before["cursors"] == {} and state.stream.state_dict()["cursors"]
    assert len(state.stream.state_dict()["pending"]) == 3
    assert train_step(state)["step"] == 2 and len(state.stream.state_dict()["pending"]) == 2
    assert state.last_task_losses and set(state.last_task_losses) <= set(
        range(len(state.task_names))
    )
    assert state.throughput.examples == 16
    cleanup(state)


def test_checkpoint_reads_back_to_an_identical_state(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(
        tiny_model_dir, "train.steps=8", "train.mixing.every=2",
        "train.sampler={name: dwa, window: 2}",
    )
    state = setup(config, tmp_path / "run")
    for _ in range(3):
        train_step(state)
    unsupervised_step(state)
    trajectory = save_checkpoint(state)
    assert trajectory == tmp_path / "run" / "checkpoints" / "step-0000003"
    assert state.saved_step == 3
    assert not ckpt.is_resumable(trajectory)
    folder = save_resumable(state)
    cleanup(state)
    assert folder == tmp_path / "run" / "resume" / "step-0000003"
    assert state.last_saved == folder and state.resumable_step == 3
    assert {"model.safetensors", "optimizer.safetensors", ckpt.STATE_FILE,
            "rng-rank0.safetensors"} <= {path.name for path in folder.iterdir()}
    # Written at a trajectory step, the resumable checkpoint shares the trajectory's weights.
    weights = folder / "model.safetensors"
    assert weights.stat().st_ino == (trajectory / "model.safetensors").stat().st_ino
    saved_rng = ckpt.read_rank_rng(folder, 0)["torch_cpu"]

    torch.manual_seed(12345)  # resuming must not depend on where the RNG happens to be
    resumed = setup(config, tmp_path / "run", resume=True)
    assert torch.equal(torch.get_rng_state(), saved_rng)
    assert (resumed.it_step, resumed.optimizer_step) == (3, 4)
    assert resumed.sampler.state_dict() == state.sampler.state_dict()
    assert resumed.stream.state_dict() == state.stream.state_dict()
    assert resumed.unsupervised.state_dict() == state.unsupervised.state_dict()
    assert resumed.scheduler.state_dict() == state.scheduler.state_dict()
    original, restored = _weights(state), _weights(resumed)
    assert all(torch.equal(original[name], restored[name]) for name in original)
    moments = _inner_optimizer(state).state_dict()["state"]
    restored_moments = _inner_optimizer(resumed).state_dict()["state"]
    assert all(
        torch.equal(moments[index]["exp_avg"], restored_moments[index]["exp_avg"])
        for index in moments
    )

    # The next step (dropout included) is the same from either state.
    torch.set_rng_state(saved_rng)
    expected = train_step(state)
    torch.set_rng_state(saved_rng)
    assert train_step(resumed) == expected
    cleanup(resumed)


def test_resume_check_ignores_only_settings_that_do_not_change_results(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, "train.steps=6")
    saved = {"model": {"fingerprint": 1}, "config": config.model_dump(mode="json"),
             "world_size": 1}
    for harmless in ("train.log_every=5", "train.tensorboard=true", "train.wandb_project=x",
                     "train.checkpoint_every=2", "train.keep_checkpoints=1",
                     "train.save_every_minutes=5", "train.save_every_steps=10"):
        resumed = _config(tiny_model_dir, "train.steps=6", harmless)
        check_compatible(tmp_path, saved, {"fingerprint": 1}, resumed, world=1)
    for changed, field in (("train.learning_rate=1e-3", "train.learning_rate"),
                           ("seed=1", "seed"), ("train.sampler={name: uniform}", "train.sampler")):
        resumed = _config(tiny_model_dir, "train.steps=6", changed)
        with pytest.raises(ckpt.CheckpointError, match=rf"\({field} differ"):
            check_compatible(tmp_path, saved, {"fingerprint": 1}, resumed, world=1)


def test_cleanup_closes_every_sink_even_when_one_fails(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = setup(_config(tiny_model_dir, "train.steps=2"), tmp_path / "run")
    sinks = [RecordingSink(), RecordingSink(fail_on_close=True), RecordingSink()]
    state.sinks = list(sinks)
    with pytest.raises(OSError, match="disk full"):
        cleanup(state)
    assert all(sink.closed for sink in sinks) and state.sinks == []


def test_the_loop_cleans_up_after_an_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = RecordingSink()
    real_setup, real_step = loop.setup, loop.train_step

    def setup_with_sink(*args: Any, **kwargs: Any) -> TrainState:
        state = real_setup(*args, **kwargs)
        state.sinks.append(sink)
        return state

    def failing_second_step(state: TrainState) -> dict[str, Any]:
        if state.it_step == 1:
            raise RuntimeError("CUDA out of memory")
        return real_step(state)

    monkeypatch.setattr(loop, "setup", setup_with_sink)
    monkeypatch.setattr(loop, "train_step", failing_second_step)
    with pytest.raises(RuntimeError, match="out of memory"):
        instruction_tune(_config(tiny_model_dir, "train.steps=4"), tmp_path / "run")
    assert sink.closed


def test_a_checkpoint_that_saved_only_the_given_sampler_keys_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Before sampler configs were typed, a checkpoint saved `train.sampler` as the user wrote
    # it; the same sampler with its defaults filled in is the same run.
    config = _config(tiny_model_dir, "train.steps=6", "train.sampler={name: reverse_annealing}")
    dumped = config.model_dump(mode="json")
    assert len(dumped["train"]["sampler"]) > 1  # the typed config fills in the defaults
    dumped["train"]["sampler"] = {"name": "reverse_annealing"}
    saved = {"model": {"fingerprint": 1}, "config": dumped, "world_size": 1}
    check_compatible(tmp_path, saved, {"fingerprint": 1}, config, world=1)
    dumped["train"]["sampler"] = {"name": "reverse_annealing", "max_temperature": 10}
    with pytest.raises(ckpt.CheckpointError, match=r"\(train\.sampler differ"):
        check_compatible(tmp_path, saved, {"fingerprint": 1}, config, world=1)


def test_a_checkpoint_from_before_the_annealing_schedule_resumes_as_linear(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Reverse annealing was linear in T before `schedule` existed; such a checkpoint's sampler
    # has every other key and is the same run as today's default, not as another schedule.
    config = _config(tiny_model_dir, "train.steps=6", "train.sampler={name: reverse_annealing}")
    assert config.train.sampler.schedule == "linear"
    dumped = config.model_dump(mode="json")
    del dumped["train"]["sampler"]["schedule"]
    saved = {"model": {"fingerprint": 1}, "config": dumped, "world_size": 1}
    check_compatible(tmp_path, saved, {"fingerprint": 1}, config, world=1)
    for schedule in ("inverse_linear", "log_linear"):
        other = _config(tiny_model_dir, "train.steps=6",
                        f"train.sampler={{name: reverse_annealing, schedule: {schedule}}}")
        with pytest.raises(ckpt.CheckpointError, match=r"\(train\.sampler differ"):
            check_compatible(tmp_path, saved, {"fingerprint": 1}, other, world=1)
        # And the other way round: a checkpoint of another schedule is not today's default.
        saved_other = {**saved, "config": other.model_dump(mode="json")}
        with pytest.raises(ckpt.CheckpointError, match=r"\(train\.sampler differ"):
            check_compatible(tmp_path, saved_other, {"fingerprint": 1}, config, world=1)
        check_compatible(tmp_path, saved_other, {"fingerprint": 1}, other, world=1)


LIMIT_10 = "data.splits.max_train_instances_per_task=10"


def test_step_budget_steps_trains_the_unlimited_runs_step_count(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    def steps(*overrides: str) -> int:
        return instruction_tuning_steps(_config(tiny_model_dir, *overrides))

    config = _config(tiny_model_dir)
    benchmark = open_benchmark(config.data, config.seed)
    seen = list(benchmark.selection.seen)
    all_instances = sum(len(benchmark.split(name).train) for name in seen)
    # 3 epochs at batch 8 over every instance of the bundled slice's seen tasks
    unlimited = steps()
    assert unlimited == math.ceil(3 * all_instances / 8) == steps("train.budget=steps")
    # epochs: passes over the run's own data, so the run shrinks with the limit
    by_limit = [steps(f"data.splits.max_train_instances_per_task={limit}", "train.budget=epochs")
                for limit in (10, 50)]
    assert by_limit[0] == math.ceil(3 * 10 * len(seen) / 8)
    assert by_limit[0] < by_limit[1] < unlimited
    # steps: every limit trains the unlimited run's step count
    for limit in (10, 50):
        assert steps(f"data.splits.max_train_instances_per_task={limit}",
                     "train.budget=steps") == unlimited
    # an explicit train.steps wins under either budget
    assert steps(LIMIT_10, "train.steps=7", "train.budget=steps") == 7
    assert steps(LIMIT_10, "train.steps=7", "train.budget=epochs") == 7

    # The run itself (its schedule and its sampler) follows the budget.
    state = setup(_config(tiny_model_dir, LIMIT_10, "train.budget=steps"), tmp_path / "run")
    try:
        assert state.total_it_steps == state.sampler.total_steps == unlimited
        assert max(state.sampler.task_sizes) == 10  # drawn from the limited data
    finally:
        cleanup(state)


def test_resume_check_tells_the_two_budgets_apart_only_where_they_differ(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    def saved_with(*overrides: str) -> dict[str, Any]:
        return {"model": {"fingerprint": 1}, "world_size": 1,
                "config": _config(tiny_model_dir, *overrides).model_dump(mode="json")}

    epochs = saved_with(LIMIT_10)
    with pytest.raises(ckpt.CheckpointError, match=r"\(train\.budget differ"):
        check_compatible(tmp_path, epochs, {"fingerprint": 1},
                         _config(tiny_model_dir, LIMIT_10, "train.budget=steps"), world=1)
    # A checkpoint written before the setting existed trained by epochs, and resumes so.
    del epochs["config"]["train"]["budget"]
    check_compatible(tmp_path, epochs, {"fingerprint": 1}, _config(tiny_model_dir, LIMIT_10),
                     world=1)
    # Without a data limit the budgets count the same examples: one run.
    check_compatible(tmp_path, saved_with(), {"fingerprint": 1},
                     _config(tiny_model_dir, "train.budget=steps"), world=1)


def test_throughput_is_examples_and_tokens_per_second_of_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from itransfer.train import recipe

    clock = iter([14.0, 14.0, 16.0, 16.0])
    monkeypatch.setattr(recipe.time, "perf_counter", lambda: next(clock))
    throughput = recipe.Throughput(started=10.0)
    throughput.add(20, 300)
    throughput.add(20, 100)
    assert throughput.rates() == {"samples_per_s": 10.0, "tokens_per_s": 100.0}  # at 14
    assert (throughput.started, throughput.examples, throughput.tokens) == (14.0, 0, 0)
    throughput.add(3, 8)
    assert throughput.rates() == {"samples_per_s": 1.5, "tokens_per_s": 4.0}  # at 16


def test_resume_keeps_the_log_up_to_its_step_and_says_where_it_resumed(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tiny_model_dir, "train.steps=6")
    state = setup(config, tmp_path / "run")
    for _ in range(2):
        log_step(state, train_step(state), None)
    folder = save_resumable(state)
    for _ in range(2):
        log_step(state, train_step(state), None)
    cleanup(state)
    log_file = tmp_path / "run" / LOG_FILE
    assert [row["step"] for row in _rows(log_file)] == [1, 2, 3, 4]
    with caplog.at_level("INFO", logger="itransfer.train.recipe"):
        resumed = setup(config, tmp_path / "run", resume=True)
    try:
        assert [row["step"] for row in resumed.log] == [1, 2]
        assert [row["step"] for row in _rows(log_file)] == [1, 2]  # rewritten as restored
        # A resumable checkpoint is not a trajectory one: the trajectory is still unsaved.
        assert resumed.last_saved is None and resumed.saved_step is None
        assert f"resumed from {folder} at step 2" in caplog.messages
    finally:
        cleanup(resumed)


def test_resuming_a_finished_run_counts_its_final_trajectory_checkpoint_as_saved(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, "train.steps=3")
    instruction_tune(config, tmp_path / "run")
    (tmp_path / "run" / LOG_FILE).unlink()  # a run without a log resumes with an empty one
    resumed = setup(config, tmp_path / "run", resume=True)
    try:
        final = tmp_path / "run" / "checkpoints" / "step-0000003"
        assert (resumed.it_step, resumed.last_saved, resumed.saved_step) == (3, final, 3)
        assert resumed.log == []
    finally:
        cleanup(resumed)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_resume_check_names_the_other_model_and_reads_a_checkpoint_without_config(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, "train.steps=6")
    saved = {"model": {"fingerprint": 2}, "config": config.model_dump(mode="json"),
             "world_size": 1}
    with pytest.raises(ckpt.CheckpointError) as error:
        check_compatible(tmp_path, saved, {"fingerprint": 1}, config, world=1)
    assert str(error.value) == (f"{tmp_path} belongs to another model ({{'fingerprint': 2}}); "
                                "this config builds {'fingerprint': 1}")
    without_config = {"model": {"fingerprint": 1}, "world_size": 1}
    with pytest.raises(ckpt.CheckpointError, match=r"\(seed, data, model, train\.\w+.* differ\); "
                       r"resume with the run's own config\.yaml$"):
        check_compatible(tmp_path, without_config, {"fingerprint": 1}, config, world=1)
    with pytest.raises(ckpt.CheckpointError, match="written by 2 processes; resuming with 1"):
        check_compatible(tmp_path, {**saved, "model": {"fingerprint": 1}, "world_size": 2},
                         {"fingerprint": 1}, config, world=1)


def test_linear_schedule_peaks_at_the_end_of_warm_up_and_reaches_zero_at_the_last_step() -> None:
    from itransfer.train.recipe import linear_schedule

    factor = linear_schedule(4, 10)
    assert [factor(step) for step in range(12)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.0])
    short = linear_schedule(2, 3)  # one step after warm-up: the peak, then 0
    assert [short(step) for step in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.0])
    no_warmup = linear_schedule(0, 4)
    assert [no_warmup(step) for step in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


@pytest.mark.parametrize(("precision", "expected"), [("fp32", "no"), ("bf16", "bf16")])
def test_setup_passes_the_precision_to_accelerate(
    precision: str, expected: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state, set by the first Accelerator of the session.
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        state = setup(_config(tiny_model_dir, "train.steps=2", f"train.precision={precision}"),
                      tmp_path / "run")
        assert state.accelerator.mixed_precision == expected
        cleanup(state)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_setup_without_resume_refuses_a_folder_with_checkpoints_and_plans_the_limited_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, "train.steps=2")
    instruction_tune(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        setup(config, tmp_path / "run")
    limited = _config(tiny_model_dir, LIMIT_10, "train.budget=epochs")
    state = setup(limited, tmp_path / "limited")
    try:
        assert state.total_it_steps == instruction_tuning_steps(limited)
        assert state.total_it_steps < instruction_tuning_steps(_config(tiny_model_dir))
    finally:
        cleanup(state)


def test_setup_hands_the_config_to_each_part(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed, the context, the architecture and the model options reach the parts that use
    them (a part silently given its default would train another run)."""
    from itransfer.train import recipe

    seen: dict[str, Any] = {}
    for name in ("load_model_and_tokenizer", "open_training_set", "open_benchmark",
                 "UnsupervisedBatches"):
        real = getattr(recipe, name)

        def recording(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen[_name] = (args, kwargs)
            return _real(*args, **kwargs)

        monkeypatch.setattr(recipe, name, recording)
    def progress(*_: Any) -> None:
        return None

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A first document of plain text.\n\nA second one, longer than it.\n",
                      encoding="utf-8")
    opened: list[tuple[Any, Any]] = []
    real_documents = recipe.iter_corpus_documents
    monkeypatch.setattr(recipe, "iter_corpus_documents", lambda source, seed: (
        opened.append((source, seed)) or real_documents(source, seed=seed)))
    # The metric sinks: recorded, not opened (wandb need not be installed)
    monkeypatch.setattr(recipe, "check_sinks_available",
                        lambda **kwargs: seen.setdefault("check_sinks_available", kwargs))
    monkeypatch.setattr(recipe, "open_sinks",
                        lambda **kwargs: seen.setdefault("open_sinks", kwargs) and [])
    config = _config(tiny_model_dir, "train.steps=2", "seed=3", "train.mixing.every=2",
                     f"train.mixing.source={corpus}", "train.mixing.max_length=64",
                     "data.context={name: exemplars, num_exemplars: 1}",
                     "model.trust_remote_code=true", "train.weight_decay=0.05",
                     "train.tensorboard=false", "train.wandb_project=a-project")
    state = setup(config, tmp_path / "run", tokenizing=progress)
    try:
        assert seen["check_sinks_available"] == {"wandb_project": "a-project"}
        sinks = seen["open_sinks"]
        assert sinks["tensorboard"] is False and sinks["wandb_project"] == "a-project"
        assert sinks["out_dir"] == tmp_path / "run"
        assert sinks["config"] == json.loads(json.dumps(config.model_dump(mode="json")))
        assert sinks["task_names"] == state.task_names
        unsupervised = seen["UnsupervisedBatches"]
        assert unsupervised[1]["max_length"] == 64 and unsupervised[1]["seed"] == 3
        next(iter(unsupervised[0][0]()))
        assert set(opened) == {(str(corpus), 3)}
        assert json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == 3
        assert seen["load_model_and_tokenizer"][1] == {"architecture": "auto",
                                                       "trust_remote_code": True}
        assert seen["open_benchmark"][0][1] == 3
        (encoder, _, _, splits, seed), options = seen["open_training_set"]
        assert (splits, seed, options) == (config.data.splits, 3, {"progress": progress})
        assert (encoder.architecture, encoder.context.num_exemplars) == ("seq2seq", 1)
        assert (encoder.chat_template, encoder.max_source_length) == (False, 96)
        assert seen["UnsupervisedBatches"][0][2] == "seq2seq"
        assert state.fingerprint == recipe.model_fingerprint(state.model, str(tiny_model_dir))
        assert state.architecture == "seq2seq"
        assert _inner_optimizer(state).param_groups[0]["weight_decay"] == 0.05
    finally:
        cleanup(state)


def test_with_mixing_the_schedule_ends_after_the_unsupervised_steps_too(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = setup(_config(tiny_model_dir, "train.steps=7", "train.mixing.every=3"),
                  tmp_path / "run")
    try:
        factor = state.scheduler.lr_lambdas[0]
        # 7 instruction-tuning steps and 7 // 3 = 2 unsupervised ones: 9 optimizer steps.
        assert factor(1) == 1.0 and factor(8) == pytest.approx(1 / 7) and factor(9) == 0.0
    finally:
        cleanup(state)
    plain = setup(_config(tiny_model_dir, "train.steps=7"), tmp_path / "plain")
    try:
        factor = plain.scheduler.lr_lambdas[0]
        assert factor(6) == pytest.approx(1 / 5) and factor(7) == 0.0
    finally:
        cleanup(plain)


def test_a_crash_before_any_resumable_checkpoint_replays_from_step_0(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tiny_model_dir, "train.steps=4")
    state = setup(config, tmp_path / "run")
    for _ in range(2):
        train_step(state)
    save_checkpoint(state)  # weights only; then the process "dies"
    cleanup(state)
    with caplog.at_level("INFO", logger="itransfer.train.recipe"):
        replay = setup(config, tmp_path / "run", resume=True)
    try:
        assert (replay.it_step, replay.optimizer_step, replay.last_saved) == (0, 0, None)
        assert (f"{tmp_path / 'run'} has no resumable checkpoint (trajectory checkpoints hold "
                "weights only): restarting from step 0; the replay rewrites them identically "
                "up to step 2") in caplog.messages
    finally:
        cleanup(replay)
    other = _config(tiny_model_dir, "train.steps=4", "train.learning_rate=1e-4")
    trajectory = tmp_path / "run" / "checkpoints" / "step-0000002"
    with pytest.raises(ckpt.CheckpointError,
                       match=rf"^{re.escape(str(trajectory))} was written with a different config "
                             r"\(train\.learning_rate differ\)"):
        setup(other, tmp_path / "run", resume=True)
    # A plain restart of the same folder is still refused: it has checkpoints.
    run = re.escape(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=rf"^{run} already holds checkpoints; pass --resume to "
                                          r"continue that run or choose another --out$"):
        setup(config, tmp_path / "run")


def test_resuming_with_a_changed_config_names_the_resumable_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, "train.steps=4")
    state = setup(config, tmp_path / "run")
    train_step(state)
    folder = save_resumable(state)
    cleanup(state)
    with pytest.raises(ckpt.CheckpointError,
                       match=rf"^{re.escape(str(folder))} was written with a different "):
        setup(_config(tiny_model_dir, "train.steps=4", "seed=2"), tmp_path / "run", resume=True)


def test_launch_checks_name_the_setting_at_fault(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^train\.batch_size=9 must be divisible by processes "
                                          r"\(1\) × train\.gradient_accumulation \(2\)$"):
        setup(_config(tiny_model_dir, "train.batch_size=9", "train.gradient_accumulation=2"),
              tmp_path / "odd")
    from itransfer.train import tracking

    if not tracking._importable("wandb"):
        with pytest.raises(ConfigError, match=r"train\.wandb_project='x' needs the wandb package"):
            setup(_config(tiny_model_dir, "train.wandb_project=x"), tmp_path / "wandb")
    with pytest.raises(DataError, match="no seen \\(training\\) tasks in this selection") as error:
        setup(_config(tiny_model_dir, "data.selection.seen_categories=[]"), tmp_path / "none")
    assert str(open_benchmark(_config(tiny_model_dir).data, 0).tasks_dir) in str(error.value)
