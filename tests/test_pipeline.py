"""Experiments as cached, resumable stages; the errors a wrong experiment gets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from itransfer.analysis.manifest import MANIFEST_VERSION, read_manifest
from itransfer.errors import ConfigError, DataError
from itransfer.eval.results import ResultsTable
from itransfer.experiments.definition import load_experiment
from itransfer.experiments.pipeline import _write_manifest, run_experiment
from itransfer.models.loading import load_model_and_tokenizer
from itransfer.runs.checkpoints import Trajectory
from two_processes import launch_two

TINY = {
    "model": {"max_source_length": 64, "max_target_length": 12},
    "data": {"splits": {"unseen_test_size": 4}},
    "train": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "checkpoint_every": 3,
              "log_every": 3, "tensorboard": False},
    "eval": {"max_tasks": 2, "shots": [0, 5], "transfer_contexts": ["none"],
             "max_new_tokens": 4, "batch_size": 8, "seen_max_instances": 2,
             "engine": "peft", "lora": {"epochs": 1, "batch_size": 8}},
}


def _experiment_file(tmp_path: Path, model_dir: Path, **changes) -> Path:
    spec = {
        "name": "pipeline-test",
        "base": {**TINY, "model": {**TINY["model"], "name_or_path": str(model_dir)}},
        "variants": {"it-a": {}, "it-b": {"train": {"sampler": {"name": "uniform"}}}},
        "sections": {
            "transfer": {"instruction_tuned": "it-a"},
            "samplers": {"models": {"proportional": "it-a", "uniform": "it-b"}},
            "trajectory": {"model": "it-a", "phase_split_step": 3},
        },
        **changes,
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_stages_run_once_then_are_reused(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    with caplog.at_level(logging.INFO, logger="itransfer"):
        first = run_experiment(experiment, tmp_path / "run", write_report=False)
    assert first.cached_stages == []
    # Every stage cuts the same long inputs to 64 tokens: one warning line for the run, each
    # stage's own count at info level.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    stage_lines = [r.getMessage() for r in caplog.records
                   if r.levelno == logging.INFO and "inputs cut to 64 tokens" in r.getMessage()]
    assert len(stage_lines) >= 6
    assert warnings == [f"{len(stage_lines)} stages cut inputs to 64 tokens (at most "
                        f"{max(int(line.split(': ')[1].split()[0]) for line in stage_lines)} "
                        "inputs in one stage); --verbose lists them"]
    assert {"train:it-a", "train:it-b", "eval:pretrained@0", "eval:it-a@3", "eval:it-a@6",
            "eval:it-b@6"} <= set(first.timings)
    frame = ResultsTable(tmp_path / "run").read()
    assert set(frame["model"]) == {"pretrained", "it-a", "it-b"}
    assert set(frame[frame["model"] == "it-a"]["checkpoint_step"]) == {3, 6}
    assert set(frame["method"]) == {"icl", "finetune", "seen"}
    raw = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert raw["models"]["it-a"]["trajectory_steps"] == [3, 6]
    assert raw["sections"]["trajectory"]["phase_split_step"] == 3
    manifest = read_manifest(tmp_path / "run")  # what the analysis reads: the same model
    assert manifest.version == MANIFEST_VERSION and manifest.experiment == "pipeline-test"
    assert manifest.sections == experiment.spec.sections
    assert list(manifest.sections) == ["transfer", "samplers", "trajectory"]
    assert manifest.final_step("it-a") == 6 and manifest.trajectory_of("it-a") == (0, 3, 6)
    assert manifest.models["it-b"].sampler == "uniform"
    assert manifest.models["pretrained"].kind == "pretrained"
    tiny = load_model_and_tokenizer(tiny_model_dir).model  # the report's scale facts
    assert manifest.models["pretrained"].num_parameters == tiny.num_parameters()
    assert manifest.models["pretrained"].vocab_size == tiny.config.vocab_size

    second = run_experiment(experiment, tmp_path / "run", write_report=False)
    assert second.timings == {} and len(second.cached_stages) == len(first.timings)
    assert read_manifest(tmp_path / "run").timings == manifest.timings  # kept, not emptied
    again = ResultsTable(tmp_path / "run").read()
    assert len(again) == len(frame)

    # Logging and speed settings change no result: with W&B on (which would fail here, without
    # wandb installed, if anything trained) and other evaluation batches, every stage is reused.
    base = yaml.safe_load((tmp_path / "experiment.yaml").read_text())["base"]
    base["train"] |= {"log_every": 2, "wandb_project": "not-used"}
    base["eval"] |= {"batch_size": 3, "max_batch_tokens": 999, "max_examples_per_pass": 5,
                     "max_tokens_per_pass": 777, "cells_per_group": 2}
    knobs = load_experiment(_experiment_file(tmp_path, tiny_model_dir, base=base))
    third = run_experiment(knobs, tmp_path / "run", write_report=False)
    assert third.timings == {} and len(third.cached_stages) == len(first.timings)


def test_the_manifest_states_the_annealing_schedule(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The §4 report reads sampler_config["schedule"]: present even where the YAML left it out.
    variants = {
        "it-ra": {"train": {"sampler": {"name": "reverse_annealing", "max_temperature": 100}}},
        "it-ra-log": {"train": {"sampler": {"name": "reverse_annealing",
                                            "schedule": "log_linear"}}},
        "it-b": {"train": {"sampler": {"name": "uniform"}}},
    }
    experiment = load_experiment(_experiment_file(
        tmp_path, tiny_model_dir, variants=variants,
        sections={"samplers": {"models": {"ra": "it-ra", "ra-log": "it-ra-log", "u": "it-b"}}},
    ))
    stage = tmp_path / "store" / "train" / "key"
    fake_trajectory = Trajectory(stage, {6: stage / "checkpoints" / "step-6"})
    _write_manifest(tmp_path / "run", experiment, dict.fromkeys(variants, fake_trajectory),
                    {}, tmp_path / "store")
    models = read_manifest(tmp_path / "run").models
    assert models["it-ra"].sampler_config == {"name": "reverse_annealing", "start_temperature": 1.0,
                                            "max_temperature": 100.0, "schedule": "linear"}
    assert models["it-ra-log"].sampler_config["schedule"] == "log_linear"
    assert models["it-b"].sampler_config == {"name": "uniform"}


def test_a_second_experiment_reuses_a_shared_store(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    run_experiment(experiment, tmp_path / "one", store=store, write_report=False)
    other = _experiment_file(
        tmp_path, tiny_model_dir, name="other",
        sections={"transfer": {"instruction_tuned": "it-a"}},
    )
    summary = run_experiment(load_experiment(other), tmp_path / "two", store=store,
                             write_report=False)
    assert "train:it-a" in summary.cached_stages and "eval:pretrained@0" in summary.cached_stages


def test_force_sets_the_old_stage_aside(tiny_model_dir: Path, tmp_path: Path) -> None:
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    run_experiment(experiment, tmp_path / "run", write_report=False)
    summary = run_experiment(experiment, tmp_path / "run", force=("train:it-b",),
                             write_report=False)
    assert "train:it-b" in summary.timings and "train:it-a" in summary.cached_stages
    assert len(list((tmp_path / "run" / "stages" / ".replaced").iterdir())) == 1


def test_section_naming_a_missing_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _experiment_file(tmp_path, tiny_model_dir,
                            sections={"transfer": {"instruction_tuned": "it-typo"}})
    with pytest.raises(ConfigError, match="it-typo"):
        load_experiment(path)


def test_models_with_different_tokenizers(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = _experiment_file(
        tmp_path, tiny_model_dir,
        variants={"it-a": {}, "it-b": {"model": {"name_or_path": "itransfer:tiny-t5"}}},
    )
    with pytest.raises(ConfigError, match="different tokenizers"):
        run_experiment(load_experiment(path), tmp_path / "run", write_report=False)


def test_out_dir_of_another_experiment(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({"experiment": "someone-else"}))
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    with pytest.raises(ConfigError, match="someone-else"):
        run_experiment(experiment, out, write_report=False)
    assert json.loads(manifest.read_text()) == {"experiment": "someone-else"}


def test_out_dir_with_a_manifest_of_a_newer_format(tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(
        {"version": MANIFEST_VERSION + 1, "experiment": "pipeline-test"}))
    experiment = load_experiment(_experiment_file(tmp_path, tiny_model_dir))
    with pytest.raises(DataError, match=f"manifest format version {MANIFEST_VERSION + 1}"):
        run_experiment(experiment, out, write_report=False)
    assert not (out / "stages").exists()


def test_unknown_scale(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no scale 'huge'"):
        load_experiment(_experiment_file(tmp_path, tiny_model_dir), scale="huge")


@pytest.mark.slow
def test_two_processes_run_one_experiment(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`accelerate launch -m itransfer run`: the processes share the stages (one set of
    markers, one results table, one report), and a second launch reuses every stage."""
    config = _experiment_file(tmp_path, tiny_model_dir)
    single = run_experiment(load_experiment(config), tmp_path / "one", write_report=False)
    launch_two("-m", "itransfer", "run", config, "--out", tmp_path / "two")
    two = tmp_path / "two"
    assert (two / "report.html").is_file()
    markers = sorted(path.parent.name.split("-")[0] for path in two.glob("stages/*/stage.json"))
    assert markers == sorted(name.split(":")[0] for name in single.timings)

    key = ["model", "checkpoint_step", "task", "method", "split", "context", "shots", "metric"]
    one_rows = ResultsTable(tmp_path / "one").read().sort_values(key).reset_index(drop=True)
    two_rows = ResultsTable(two).read().sort_values(key).reset_index(drop=True)
    assert one_rows[key].equals(two_rows[key])
    # The pre-trained model is the same in both, and each LoRA cell seeds its own dropout, so
    # its measurements agree whichever process ran them. (The tuned models are not the same:
    # two processes draw other dropout masks than one.)
    pretrained = (one_rows["model"] == "pretrained").to_numpy()
    gap = (one_rows["value"] - two_rows["value"]).abs()
    assert set(one_rows[pretrained]["method"]) == {"icl", "finetune"}
    assert gap[pretrained].max() < 1e-5
    states = list(two.glob("stages/train-*/checkpoints/step-*/trainer_state.json"))
    assert states and all(json.loads(path.read_text())["world_size"] == 2 for path in states)

    again = launch_two("-m", "itransfer", "run", config, "--out", two)
    assert again.stderr.count("done earlier (reused)") == len(single.timings)
    assert "done in" not in again.stderr.replace("report: done in", "")
