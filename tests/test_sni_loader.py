"""Parsing SNI task files, and the clear one-line errors for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, write_task
from itransfer.data.index import build_index
from itransfer.data.sni import parse_task, resolve_tasks_dir, task_unique_id
from itransfer.errors import DataError


def test_real_task_is_parsed_into_typed_fields(sni_slice: Path) -> None:
    task = parse_task(sni_slice / "tasks" / "task040_qasc_question_generation.json")
    assert task.name == "task040_qasc_question_generation"
    assert task.metadata.number == 40
    assert task.metadata.unique_id == "task_040_qasc"
    assert task.categories == ("Question Generation",)
    assert task.metadata.sources == ("qasc",)
    assert task.metadata.domains == ("Natural Science",)
    assert task.metadata.instance_license == ("CC BY 4.0",)
    assert task.definition.startswith("Turn the given fact into a question")
    assert task.positive_examples[0].input == "Fact: pesticides can harm animals."
    assert task.positive_examples[0].output == "What can harm animals?"
    assert len(task.instances) == task.metadata.num_instances > 100
    first = task.instances[0]
    assert first.id.startswith("task040-") and first.outputs and first.input.startswith("Fact:")


def test_definition_as_string_or_list_and_old_files_without_optional_fields(tmp_path: Path) -> None:
    as_string = parse_task(write_task(tmp_path, "task001_a", Definition="Do it."))
    as_list = parse_task(write_task(tmp_path, "task002_b", Definition=["Do it."]))
    assert as_string.definition == as_list.definition == "Do it."

    path = write_task(tmp_path, "task003_old")
    data = json.loads(path.read_text())
    for optional in ("Instance License", "Domains", "Instruction_language", "Negative Examples"):
        del data[optional]
    for instance in data["Instances"]:
        del instance["id"]
        instance["output"] = instance["output"][0]  # a bare string output
    path.write_text(json.dumps(data))
    old = parse_task(path)
    assert old.metadata.instance_license == () and old.metadata.domains == ()
    assert old.metadata.instruction_languages == ("English",)
    assert old.instances[5].id == "task003_old-5"
    assert old.instances[5].outputs == ("answer 5",)


def test_sources_and_categories_are_normalised(tmp_path: Path) -> None:
    task = parse_task(
        write_task(
            tmp_path,
            "task004_c",
            Source=["wsc; enhanced_wsc"],
            Categories=["Text Generation -> Command Execution", "Text Generation -> Other"],
        )
    )
    assert task.metadata.sources == ("wsc", "enhanced_wsc")
    assert task.categories == ("Text Generation",)


def test_unique_id_follows_figure_5() -> None:
    assert task_unique_id("task040_qasc_question_generation") == "task_040_qasc"
    assert task_unique_id("task1146_country_capital") == "task_1146_country"
    assert task_unique_id("custom-task") == "custom-task"


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "task010_broken.json"
    path.write_text('{\n  "Definition": ["x"],\n  "Instances": [\n    {"input": "a",, }\n  ]\n}\n')
    with pytest.raises(DataError) as info:
        parse_task(path)
    assert str(path) in str(info.value) and info.value.line == 4
    assert "malformed JSON" in str(info.value)


@pytest.mark.parametrize("field", ["Definition", "Categories", "Input_language", "Instances"])
def test_missing_required_field_names_file_and_field(tmp_path: Path, field: str) -> None:
    path = write_task(tmp_path, "task011_missing")
    data = json.loads(path.read_text())
    del data[field]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"missing required field '{field}'") as info:
        parse_task(path)
    assert str(path) in str(info.value)


def test_instance_missing_output_names_the_instance(tmp_path: Path) -> None:
    path = write_task(tmp_path, "task012_noout", Instances=[{"id": "x", "input": "a"}])
    with pytest.raises(DataError, match=r"'Instances'\[0\] is missing field 'output'"):
        parse_task(path)


def test_empty_instances_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'Instances' is empty"):
        parse_task(write_task(tmp_path, "task013_empty", Instances=[]))


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "task014_latin1.json"
    path.write_bytes(b'{\n "Definition": ["caf\xe9"]\n}')
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        parse_task(path)
    assert info.value.line == 2 and str(path) in str(info.value)


def test_duplicate_task_names_are_an_error(tmp_path: Path) -> None:
    write_task(tmp_path / "tasks", "task020_dup")
    write_task(tmp_path / "tasks", "TASK020_DUP")
    with pytest.raises(DataError, match="duplicate task name"):
        build_index(tmp_path)


def test_repo_root_or_tasks_folder_are_accepted(tmp_path: Path) -> None:
    write_task(tmp_path / "repo" / "tasks", "task030_x")
    assert resolve_tasks_dir(tmp_path / "repo") == tmp_path / "repo" / "tasks"
    assert resolve_tasks_dir(tmp_path / "repo" / "tasks") == tmp_path / "repo" / "tasks"


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_path_that_is_not_sni_is_an_error(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nowhere"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    with pytest.raises(DataError, match="SNI repository") as info:
        resolve_tasks_dir(target)
    assert str(target) in str(info.value)


def _run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "itransfer", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"ITRANSFER_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        timeout=120,
    )


def test_cli_bad_input_is_one_line_without_traceback_and_writes_nothing(
    tmp_path: Path, isolated_cache: Path
) -> None:
    folder = tmp_path / "tasks"
    write_task(folder, "task001_good")
    (folder / "task002_bad.json").write_text('{"Definition": [}')
    result = _run_cli("data", "summary", "--sni-dir", str(folder), "--json", cache=isolated_cache)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "task002_bad.json:1" in lines[0] and "malformed JSON" in lines[0]
    assert "Traceback" not in result.stderr
    assert not list(isolated_cache.rglob("*.json")), "no partial index may be written"

    debug = _run_cli(
        "--debug", "data", "summary", "--sni-dir", str(folder), cache=isolated_cache
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr
