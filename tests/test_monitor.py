"""The transfer monitor (train.monitor): it measures, it changes nothing, and it never probes a
task the evaluation uses."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from itransfer.analysis.manifest import read_manifest
from itransfer.config.schema import ExperimentConfig, MonitorConfig, load_config
from itransfer.data.benchmark import open_benchmark
from itransfer.errors import ConfigError, DataError
from itransfer.eval.monitor import PROBE_FILE, choose_probe_tasks, evaluated_tasks, monitor_for
from itransfer.runs import identity
from itransfer.runs.monitor_log import read_monitor_rows
from itransfer.train import monitoring
from itransfer.train.loop import TrainResult, instruction_tune
from itransfer.train.monitoring import ForgettingWatch
from test_tracking import _FakeRun
from tiny_configs import tiny_train_config
from two_processes import launch_two

PROBE = ("train.monitor={every_steps: 2, tasks: 2, test_items: 3, shots: [2], "
         "lora_epochs: 2}")
README = Path(__file__).resolve().parents[1] / "README.md"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "results-monitor_overhead-cpu.json"
BENCH_T5_LARGE = BENCH.with_name("results-monitor_overhead-t5-large-shape-cpu.json")


def _train(config: ExperimentConfig, out: Path, **kwargs: Any) -> TrainResult:
    return instruction_tune(config, out, monitor=monitor_for(config), **kwargs)


def _losses(result: TrainResult) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in result.log if "loss" in row]


def _weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return load_file(result.final_checkpoint / "model.safetensors")


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same 4 steps without the monitor, and with it (W&B on, a stand-in module)."""
    root = tmp_path_factory.mktemp("monitor")
    wandb_runs: list[_FakeRun] = []
    import sys
    import types

    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: wandb_runs.append(_FakeRun(**kwargs)) or wandb_runs[-1]  # type: ignore[attr-defined]
    module.Histogram = lambda values: ("histogram", len(values))  # type: ignore[attr-defined]
    off = _train(tiny_train_config(tiny_model_dir, "train.steps=4"), root / "off")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "wandb", module)
        on = _train(tiny_train_config(tiny_model_dir, "train.steps=4", PROBE,
                                      "train.wandb_project=t"), root / "on")
    return {"off": off, "on": on, "wandb": wandb_runs[0], "root": root}


def test_the_monitor_changes_no_loss_and_no_weight(runs: dict[str, Any]) -> None:
    off, on = runs["off"], runs["on"]
    assert _losses(on) == _losses(off)  # bit for bit
    before, after = _weights(off), _weights(on)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_probe_draws_from_no_training_rng_and_keeps_the_mode() -> None:
    """The LoRA engine's dropout is keyed, but whatever a probe draws from torch, Python's
    random or numpy's global state (a future probe, a model's own dropout) is given back."""
    model = torch.nn.Linear(2, 2).train()

    def draws() -> tuple[float, float, float]:
        return torch.rand(1).item(), random.random(), float(np.random.rand())

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = draws()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    with monitoring.isolated(model):
        assert not model.training
        draws()
    assert model.training and draws() == expected


def test_each_probe_is_one_row_in_the_log_and_in_the_sinks(runs: dict[str, Any]) -> None:
    run_dir = runs["root"] / "on"
    rows = read_monitor_rows(run_dir)
    assert [row["step"] for row in rows] == [0, 2, 4]  # step 0, then every 2 steps
    for row in rows:
        probe = row["monitor"]
        assert probe["k"] == 2 and probe["tasks"] == 2 and probe["test_items"] == 6
        assert probe["finetune_loss"] > 0 and probe["icl_loss"] > 0 and probe["seconds"] > 0
        assert probe["spearman"] is None or -1 <= probe["spearman"] <= 1
        assert set(probe["per_task"]) == set(json.loads(
            (run_dir / PROBE_FILE).read_text())["tasks"])
    logged = {step: data for step, data in runs["wandb"].logged if "monitor/icl_loss" in data}
    assert sorted(logged) == [0, 2, 4]
    assert logged[2]["monitor/finetune_loss"] == rows[1]["monitor"]["finetune_loss"]
    # Readers of training rows keep working: the rows with a loss are the training steps.
    assert [row["step"] for row in runs["on"].log if "loss" in row] == [1, 2, 3, 4]


def test_a_resumed_run_neither_repeats_nor_loses_probe_rows(
    tiny_model_dir: Path, tmp_path: Path, runs: dict[str, Any]
) -> None:
    config = tiny_train_config(tiny_model_dir, "train.steps=4", PROBE)
    _train(config, tmp_path / "run", stop_after=2)
    assert [row["step"] for row in read_monitor_rows(tmp_path / "run")] == [0, 2]
    resumed = _train(config, tmp_path / "run", resume=True)
    rows = read_monitor_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == [0, 2, 4]
    whole = read_monitor_rows(runs["root"] / "on")
    assert [row["monitor"]["finetune_loss"] for row in rows] == pytest.approx(
        [row["monitor"]["finetune_loss"] for row in whole], abs=1e-6)
    assert _losses(resumed) == _losses(runs["off"])


def test_turning_the_monitor_on_keeps_the_run_identity(tiny_model_dir: Path) -> None:
    off = tiny_train_config(tiny_model_dir, "train.steps=4")
    on = tiny_train_config(tiny_model_dir, "train.steps=4", PROBE)
    assert identity.training_key(on) == identity.training_key(off)
    assert identity.resume_differences(off.model_dump(mode="json"), on) == []


# --- the probe tasks -------------------------------------------------------------------------


def _config(*overrides: str) -> ExperimentConfig:
    return load_config(None, ["train.monitor={}", *overrides])


@pytest.mark.parametrize("groups", ["[unseen]", "[heldout_domain]", "[heldout_generalization]"])
def test_probe_tasks_are_neither_seen_nor_evaluated(groups: str) -> None:
    config = _config(f"eval.task_groups={groups}")
    benchmark = open_benchmark(config.data, config.seed)
    choice = choose_probe_tasks(config, benchmark)
    probes = set(choice.tasks)
    assert len(probes) == min(MonitorConfig().tasks, len(choice.tasks)) >= 2
    assert not probes & set(benchmark.selection.seen)
    assert not probes & evaluated_tasks(config, benchmark.selection)
    assert choose_probe_tasks(config, benchmark) == choice  # drawn from the seed alone


def test_the_seed_draws_the_probe_tasks() -> None:
    draws = {choose_probe_tasks(config, open_benchmark(config.data, config.seed)).tasks
             for config in (_config(f"seed={seed}") for seed in range(4))}
    assert len(draws) > 1


def test_no_spare_tasks_is_one_line_naming_the_setting() -> None:
    config = _config("eval.task_groups=[unseen, heldout_generalization]")
    with pytest.raises(ConfigError, match=r"train\.monitor\.probe_tasks") as caught:
        choose_probe_tasks(config, open_benchmark(config.data, config.seed))
    assert "\n" not in str(caught.value)


def test_named_probe_tasks_must_not_be_seen_or_evaluated() -> None:
    benchmark = open_benchmark(_config().data, 0)
    spare = sorted(benchmark.selection.heldout_domain)[:2]
    named = _config(f"train.monitor.probe_tasks={json.dumps(spare)}")
    assert choose_probe_tasks(named, benchmark).tasks == tuple(spare)
    for bad in (benchmark.selection.seen[0], benchmark.selection.unseen[0]):
        config = _config(f"train.monitor.probe_tasks={json.dumps([spare[0], bad])}")
        with pytest.raises(ConfigError, match=re.escape(bad)):
            choose_probe_tasks(config, benchmark)


# --- forgetting --------------------------------------------------------------------------------


def test_forgetting_is_said_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ForgettingWatch(margin=0.05)
    with caplog.at_level(logging.WARNING, logger=monitoring.__name__):
        states = [watch.observe(step, loss) for step, loss in
                  [(0, 1.0), (10, 1.04), (20, 1.1), (30, 1.2), (40, 1.03), (50, 0.9), (60, 1.3)]]
    assert states == [False, False, True, True, False, False, True]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert "step 20" in lines[0] and "forgetting has started" in lines[0]
    assert "step 40" in lines[1] and "back within" in lines[1]
    assert "step 60" in lines[2]


def test_a_resumed_run_replays_its_probes_without_saying_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ForgettingWatch(margin=0.05)
    with caplog.at_level(logging.WARNING, logger=monitoring.__name__):
        for step, loss in [(0, 1.0), (10, 1.2)]:
            watch.observe(step, loss, quiet=True)
        assert watch.observe(20, 1.3)  # still forgetting: nothing new to say
    assert not caplog.records


# --- where the user looks --------------------------------------------------------------------


def test_results_monitor_prints_the_table_and_draws_the_figure(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    from itransfer.cli import app

    run_dir = runs["root"] / "on"
    result = CliRunner().invoke(app, ["results", "monitor", str(run_dir),
                                      "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if re.match(r"^│\s+\d", line)]
    assert [int(line.split("│")[1]) for line in table] == [0, 2, 4]
    assert "+0.000" in table[0]  # the change since step 0
    assert (tmp_path / "m.png").stat().st_size > 5000


def test_results_monitor_without_rows_says_how_to_get_them(runs: dict[str, Any]) -> None:
    from itransfer.analysis.monitor import monitor_rows_of

    with pytest.raises(DataError, match=r"train\.monitor"):
        monitor_rows_of(runs["root"] / "off")


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Watching transfer while training")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + 1)
    return text[start:end.start() if end else None]


def test_the_readme_states_the_defaults_and_the_measured_cost() -> None:
    section = _readme_section()
    defaults = MonitorConfig()
    for key, value in defaults.model_dump().items():
        assert f"`{key}`" in section, key
        assert f"`{key}: {json.dumps(value)}`" in section, key
    measured = json.loads(BENCH.read_text())
    assert measured["monitor"] == defaults.model_dump(mode="json")
    assert measured["same_losses"] and measured["probe_share"] <= 0.10
    percent = f"{100 * measured['probe_share']:.1f} %"
    assert percent in section
    assert "itransfer results monitor" in section
    # The same defaults at the paper's model's shape, measured in one run there.
    large = json.loads(BENCH_T5_LARGE.read_text())
    assert large["shape"] == "t5-large" and large["monitor"] == defaults.model_dump(mode="json")
    assert large["long_run_share"] <= 0.10 and large["quickstart_share"] <= 0.10
    for share in ("long_run_share", "quickstart_share"):
        assert f"{100 * large[share]:.1f} %" in section, share


@pytest.mark.slow
def test_two_processes_probe_as_one_does(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Under ``accelerate launch`` the main process probes while the other waits at the next
    step: one row per probe in the run's one log, and each row holds the numbers one process
    measures on the same weights (the pre-trained model; the trajectory checkpoints)."""
    script = Path(__file__).with_name("distributed_monitor.py")
    launch_two(script, "train", str(tiny_model_dir), str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the launcher's: the same reduction order
    subprocess.run([sys.executable, str(script), "reprobe", str(tiny_model_dir), str(tmp_path)],
                   check=True, env=env, capture_output=True, timeout=600)
    ranks = [json.loads((tmp_path / f"monitor-rank{r}.json").read_text()) for r in (0, 1)]
    alone = json.loads((tmp_path / "reprobe.json").read_text())
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["rows"] == ranks[1]["rows"]  # both read the one log
    assert [row["step"] for row in ranks[0]["rows"]] == [0, 2, 4] == sorted(map(int, alone))

    def values(measured: dict[str, Any]) -> dict[str, float]:
        return {key: measured[key] for key in ("finetune_loss", "icl_loss", "spearman")}

    for row in ranks[0]["rows"]:
        assert values(row["monitor"]) == pytest.approx(values(alone[str(row["step"])]),
                                                       rel=1e-6, abs=1e-9)


def test_the_report_sets_the_monitor_beside_the_grid(tmp_path: Path) -> None:
    """A model trained with the monitor gets a report section: its figure, and per series how
    often the probe moved the grid's way from step 0 and Spearman's rho across the common steps
    (here: transfer planted to follow the grid, ICL to run against it)."""
    from itransfer.analysis.correlations import trajectory_curves
    from itransfer.analysis.monitor import compare_with_grid, grid_k
    from itransfer.analysis.report import write_report
    from itransfer.runs.monitor_log import LOG_FILE
    from test_analysis import SHOTS, build_rows, make_run, manifest_dict

    rows, manifest = build_rows(num_tasks=12), manifest_dict(sections={"trajectory"})
    stage = tmp_path / "stages" / "train-it"
    manifest["models"]["it-proportional"]["stage"] = str(stage)
    frame = pd.DataFrame.from_records(rows)
    assert grid_k(frame, "it-proportional", 7) == min(SHOTS, key=lambda k: (abs(k - 7), k))
    k = grid_k(frame, "it-proportional", 7)
    curves = trajectory_curves(frame, "it-proportional", (0, 100, 200, 300), shots=k)
    grid = curves.pivot_table(index="step", columns="method", values="mean")
    probes = [{"step": int(step), "monitor": {"k": 7, "tasks": 4,
                                              "finetune_loss": grid.loc[step, "finetune"] + 0.5,
                                              "icl_loss": -grid.loc[step, "icl"]}}
              for step in (0, 100, 200, 300)]
    probes.insert(1, {"step": 50, "monitor": {"k": 7, "finetune_loss": 9.0, "icl_loss": 9.0}})
    stage.mkdir(parents=True)
    (stage / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in probes))
    # A model trained with the monitor that the grid never fine-tuned is shown all the same.
    watched = tmp_path / "stages" / "train-watched"
    manifest["models"]["it-watched"] = {**manifest["models"]["it-proportional"],
                                        "stage": str(watched)}
    watched.mkdir(parents=True)
    (watched / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in probes[::4]))
    run_dir = make_run(tmp_path, rows, manifest)

    compared = compare_with_grid(frame, read_manifest(run_dir), "it-proportional", probes)
    assert compared.grid_k == k and compared.probe_k == 7
    assert list(compared.table["step"]) == [0, 50, 100, 200, 300]  # 50: no grid value
    transfer, icl = compared.agreement["finetune_loss"], compared.agreement["icl_loss"]
    assert (transfer.steps, transfer.changes, transfer.same_direction) == (4, 3, 3)
    assert transfer.spearman == pytest.approx(1.0)
    assert (icl.same_direction, icl.spearman) == (0, pytest.approx(-1.0))

    paths = write_report(run_dir, n_boot=10)
    text = paths.html.read_text(encoding="utf-8")
    assert "Transfer monitor (beyond the paper)" in text
    assert "Monitor (it-proportional)" in text and (
        run_dir / "figures" / "monitor-it-proportional.png").is_file()
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "from step 0 at 3 of 3 checkpoints" in markdown
    assert "from step 0 at 0 of 3 checkpoints" in markdown
    assert "Too few common steps" not in markdown  # 4 common steps
    assert "Monitor (it-watched)" in text
    assert "it-watched: probe k = 7; the grid measured no few-shot transfer" in markdown
    alone = compare_with_grid(frame, read_manifest(run_dir), "it-watched", probes[::4])
    assert alone.grid_k is None and list(alone.table["step"]) == [0, 300]
    two_steps = compare_with_grid(frame, read_manifest(run_dir), "it-proportional",
                                  [probes[0], probes[-1]])
    assert "Too few common steps" in two_steps.sentence()


def _probe_rows_with_phases() -> list[dict[str, Any]]:
    """Six probe tasks at steps 0, 50, 100: early on, the tasks whose ICL loss falls most lose
    the most transfer (ρ = −1); later, both change together (ρ = +1)."""
    tasks = [f"t{index}" for index in range(6)]
    early, late = np.arange(6.0), np.array([3.0, 1.0, 4.0, 0.5, 2.0, 5.0])
    icl = {0: np.full(6, 5.0), 50: 5.0 - early, 100: 5.0 - early + late}
    transfer = {0: np.full(6, 2.0), 50: 2.0 + early, 100: 2.0 + early + 2 * late}
    return [{"step": step, "monitor": {"k": 10, "per_task": {
        task: {"icl_loss": float(icl[step][i]), "finetune_loss_k10": float(transfer[step][i])}
        for i, task in enumerate(tasks)}}} for step in (0, 50, 100)]


def test_the_two_phases_run_on_the_probe_rows(tmp_path: Path) -> None:
    from itransfer.analysis.monitor import monitor_phases
    from itransfer.cli import app
    from itransfer.runs.monitor_log import LOG_FILE

    rows = _probe_rows_with_phases()
    phases = monitor_phases(rows, 50)
    assert (phases.split_step, phases.final_step) == (50, 100)
    assert phases.early.rho == pytest.approx(-1.0) and phases.early.n == 6
    assert phases.late.rho == pytest.approx(1.0)
    with pytest.raises(DataError, match="probes at steps \\[0, 50, 100\\]"):
        monitor_phases(rows, 70)
    (tmp_path / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(app, ["results", "monitor", str(tmp_path),
                                      "--phase-split", "50"])
    assert result.exit_code == 0, result.output
    assert "early (0 → 50) ρ=-1" in result.output and "late (50 → 100) ρ=1" in result.output


def test_the_readme_command_probes_at_the_quickstarts_trajectory_checkpoints() -> None:
    from itransfer.config.packaged import packaged_config
    from itransfer.experiments.definition import load_experiment

    section = _readme_section()
    override = re.search(r"itransfer quickstart --set '([^']+)'", section)
    assert override is not None
    experiment = load_experiment(packaged_config("quickstart"), overrides=[override.group(1)])
    for config in experiment.variants.values():
        if config.train.steps is None:
            continue
        monitor, train = config.train.monitor, config.train
        assert monitor is not None and monitor.every_steps is not None
        checkpoints = set(range(train.checkpoint_every, train.steps + 1, train.checkpoint_every))
        probes = set(range(0, train.steps + 1, monitor.every_steps))
        assert checkpoints and checkpoints <= probes
