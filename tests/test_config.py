"""Typed configs: YAML in, --set overrides, errors that name key, value and file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.errors import ConfigError
from itransfer.runs.provenance import write_run_record
from itransfer.sampling import ReverseAnnealingSampler, build_sampler
from itransfer.sampling.rates import temperature_rates


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers() -> None:
    config = load_config()
    assert len(config.data.selection.seen_categories) == 58
    assert len(config.data.selection.unseen_categories) == 11
    assert len(config.data.selection.evaluation_domains) == 12
    assert config.data.selection.adversarial_sources == [
        "anli", "paws", "hans", "hellaswag", "codah", "adversarial_qa"
    ]
    assert config.data.selection.min_eval_instances == 140
    assert (config.data.splits.unseen_test_size, config.data.splits.few_shot_pool_size) == (100, 40)
    assert config.data.context.name == "exemplars" and config.data.context.num_exemplars == 3


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "seed: 7\ndata:\n  splits:\n    max_train_instances_per_task: 50\n")
    config = load_config(path, ["data.context.name=task_id", "data.splits.unseen_test_size=20"])
    assert config.seed == 7
    assert config.data.splits.max_train_instances_per_task == 50
    assert config.data.context.name == "task_id"
    assert config.data.splits.unseen_test_size == 20


def test_unknown_key_names_key_value_and_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "data:\n  splits:\n    unseen_tset_size: 30\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "data.splits.unseen_tset_size" in message
    assert "unknown key" in message and "30" in message


def test_bad_value_names_key_value_and_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "data:\n  splits:\n    max_train_instances_per_task: -5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "data.splits.max_train_instances_per_task" in message
    assert "-5" in message


def test_unknown_context_and_override_errors() -> None:
    with pytest.raises(ConfigError, match="unknown context 'fewshot'"):
        load_config(None, ["data.context.name=fewshot"])
    with pytest.raises(ConfigError, match=r"data\.nope: unknown key"):
        load_config(None, ["data.nope.x=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["seed"])
    with pytest.raises(ConfigError, match="seed: Input should be a valid integer"):
        load_config(None, ["seed.x=1"])


RA_YAML = "train:\n  sampler: {name: reverse_annealing, %s}\n"


def test_misspelt_sampler_parameter_is_one_line_naming_its_key(tmp_path: Path) -> None:
    path = _yaml(tmp_path, RA_YAML % "max_temprature: 100")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: train.sampler.max_temprature: unknown key (got 100)"


@pytest.mark.parametrize(
    ("parameter", "value", "shown"),
    [
        ("max_temperature", "[1000]", "[1000]"),
        ("max_temperature", "hot", "'hot'"),
        ("max_temperature", "true", "True"),
        ("start_temperature", ".nan", "nan"),
    ],
)
def test_mistyped_sampler_parameter_is_one_line_naming_its_key(
    tmp_path: Path, parameter: str, value: str, shown: str
) -> None:
    path = _yaml(tmp_path, RA_YAML % f"{parameter}: {value}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: train.sampler.{parameter}: must be a number >= 1")
    assert message.endswith(f"(got {shown})")


def test_sampler_parameter_override_reaches_the_sampler(tmp_path: Path) -> None:
    path = _yaml(tmp_path, RA_YAML % "max_temperature: 1000")
    config = load_config(path, ["train.sampler.max_temperature=100"])
    sampler = build_sampler(config.train.sampler, [10, 40, 50], total_steps=10, batch_size=4)
    assert isinstance(sampler, ReverseAnnealingSampler)
    assert (sampler.max_temperature, sampler.temperature(10)) == (100, 100)
    np.testing.assert_array_equal(sampler.weights(10), temperature_rates([10, 40, 50], 100))
    with pytest.raises(ConfigError, match=r"train\.sampler\.max_temperature: must be >= 1"):
        load_config(path, ["train.sampler.max_temperature=0.5"])


def test_sampler_written_with_or_without_its_defaults_is_one_config(tmp_path: Path) -> None:
    # The stage cache keys hash the dumped config: spelling a default out must not retrain.
    implicit = load_config(_yaml(tmp_path, "train: {sampler: {name: reverse_annealing}}\n"))
    explicit = load_config(_yaml(tmp_path, RA_YAML % "max_temperature: 1000"))
    assert implicit.model_dump(mode="json") == explicit.model_dump(mode="json")
    assert implicit.train.sampler.model_dump() == {
        "name": "reverse_annealing", "start_temperature": 1.0, "max_temperature": 1000.0,
        "schedule": "linear",
    }


def test_unknown_or_bare_sampler_lists_the_known_ones() -> None:
    for spec in ("{name: annealing}", "uniform", "{temperature: 2}"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"train.sampler={spec}"])
        message = str(info.value)
        assert "\n" not in message and ": train.sampler: expected a mapping {name:" in message
        assert "proportional, reverse_annealing" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "seed: 1\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{path}:\\d+: invalid YAML"):
        load_config(path)


def test_run_record_has_config_seed_versions_and_git(tmp_path: Path) -> None:
    config = load_config(None, ["seed=11"])
    write_run_record(tmp_path, config, seed=config.seed, command=["itransfer", "x"])
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["seed"] == 11 and record["command"] == ["itransfer", "x"]
    assert record["packages"]["torch"] and record["packages"]["pydantic"]
    assert "commit" in record["git"] and record["itransfer_version"]
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert ExperimentConfig.model_validate(resolved) == config


def test_run_record_names_the_hardware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(None, [])
    write_run_record(tmp_path, config, seed=config.seed)
    cpu_only = json.loads((tmp_path / "run.json").read_text())["hardware"]
    assert cpu_only["gpus"] == [] and cpu_only["cpu_count"] >= 1
    assert cpu_only["torch_threads"] >= 1
    # Stand-ins for a 2-GPU machine: the record lists each device by name.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA H200 #{index}")
    write_run_record(tmp_path, config, seed=config.seed)
    record = json.loads((tmp_path / "run.json").read_text())["hardware"]
    assert record["gpus"] == ["NVIDIA H200 #0", "NVIDIA H200 #1"]


def test_report_header_names_the_machine() -> None:
    from itransfer.analysis.report import _hardware_text

    assert _hardware_text({}) == "hardware not recorded"  # manifests written before the field
    assert _hardware_text({"cpu_count": 2, "gpus": []}) == "CPU (2 cores)"
    two = {"cpu_count": 16, "gpus": ["NVIDIA H200", "NVIDIA H200", "NVIDIA A100"]}
    assert _hardware_text(two) == "2× NVIDIA H200 + 1× NVIDIA A100"
