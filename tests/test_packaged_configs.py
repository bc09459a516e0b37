"""Shipped experiment configs: found as package resources, resolved by name or path, listed
and copied from the command line."""

from __future__ import annotations

import glob
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from itransfer.cli import app, main
from itransfer.config.packaged import (
    copy_config,
    find_config,
    packaged_config_dir,
    packaged_configs,
)
from itransfer.errors import ConfigError
from itransfer.experiments.definition import load_experiment

PAPER_NAMES = {"paper/sec3_1_transfer", "paper/sec3_2_data_limits", "paper/sec4_sampling",
               "paper/sec5_1_no_context", "paper/sec5_1_task_id", "paper/sec5_1_trajectory",
               "paper/sec5_2_mixing"}


def test_configs_are_package_resources() -> None:
    root = resources.files("itransfer") / "configs"
    assert (root / "quickstart.yaml").is_file()
    shipped = {entry.name for entry in (root / "paper").iterdir()}
    assert {f"{name.split('/')[1]}.yaml" for name in PAPER_NAMES} <= shipped
    assert "README.md" in shipped
    assert {config.name for config in packaged_configs()} == PAPER_NAMES | {"quickstart"}


def test_the_repository_keeps_no_second_copy() -> None:
    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert not list(repo_configs.rglob("*.yaml"))
    pointer = (repo_configs / "paper" / "README.md").read_text(encoding="utf-8")
    assert "src/itransfer/configs/paper/" in pointer


def test_pyproject_ships_the_configs_as_package_data() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    package = packaged_config_dir().parent
    # setuptools expands package-data patterns with glob(recursive=True) in the package folder.
    shipped = {path for pattern in patterns["itransfer"]
               for path in glob.glob(pattern, root_dir=package, recursive=True)}
    for config in packaged_configs():
        assert config.path.relative_to(package).as_posix() in shipped, config.name
    assert "configs/paper/README.md" in shipped


@pytest.mark.parametrize("argument", ["paper/sec4_sampling", "paper/sec4_sampling.yaml"])
def test_a_name_resolves_with_or_without_yaml(argument: str) -> None:
    path = find_config(argument)
    assert path == packaged_config_dir() / "paper" / "sec4_sampling.yaml"
    assert load_experiment(path, scale="tiny").name == "sec4_sampling"


def test_an_existing_path_wins_over_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "paper" / "sec4_sampling.yaml"
    own.parent.mkdir()
    own.write_text("name: mine\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert find_config("paper/sec4_sampling.yaml") == Path("paper/sec4_sampling.yaml")
    # Without the suffix no file exists, so the name is the shipped one.
    shipped = packaged_config_dir() / "paper" / "sec4_sampling.yaml"
    assert find_config("paper/sec4_sampling") == shipped


def test_an_unknown_name_is_one_line_listing_the_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="paper/sec4_sampling") as info:
        find_config("paper/sec4_samplin")
    assert "\n" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "paper/sec4_samplin", "--scale", "tiny", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: config 'paper/sec4_samplin': not a file")
    assert all(name in error for name in PAPER_NAMES)
    assert not (tmp_path / "r").exists()


def test_config_option_takes_a_name() -> None:
    # --config reads a single-run config; the quickstart is an experiment file, so the name
    # resolves and validation (not "file not found") is what rejects it.
    result = CliRunner().invoke(app, ["data", "summary", "--config", "quickstart"])
    assert isinstance(result.exception, ConfigError)
    assert str(packaged_config_dir() / "quickstart.yaml") in str(result.exception)
    assert "not found" not in str(result.exception)


def test_configs_list_names_each_config_with_its_title() -> None:
    result = CliRunner().invoke(app, ["configs", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for config in packaged_configs():
        line = next(line for line in lines if line.startswith(config.name + " "))
        assert config.description in line
    assert any("§4 Multi-task generalization vs ICL" in line for line in lines)


def test_configs_copy_writes_the_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    shipped = find_config("paper/sec4_sampling").read_text(encoding="utf-8")
    result = runner.invoke(app, ["configs", "copy", "paper/sec4_sampling", str(tmp_path)])
    assert result.exit_code == 0, result.output
    copied = tmp_path / "sec4_sampling.yaml"
    assert copied.read_text(encoding="utf-8") == shipped

    copied.write_text("# my edits\n", encoding="utf-8")
    refused = runner.invoke(app, ["configs", "copy", "paper/sec4_sampling", str(copied)])
    assert isinstance(refused.exception, ConfigError)
    assert "--force" in str(refused.exception)
    assert copied.read_text(encoding="utf-8") == "# my edits\n"

    forced = runner.invoke(app, ["configs", "copy", "paper/sec4_sampling", str(copied),
                                 "--force"])
    assert forced.exit_code == 0, forced.output
    assert copied.read_text(encoding="utf-8") == shipped


def test_copy_of_an_unknown_name_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quickstart"):
        copy_config("nope", tmp_path)
    assert not list(tmp_path.iterdir())
