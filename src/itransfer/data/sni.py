"""Super-NaturalInstructions task files → typed :class:`Task` objects.

The benchmark (``allenai/natural-instructions``) stores one JSON file per task under ``tasks/``.
Its schema drifted over the years, so the parser is lenient where the benchmark is inconsistent
(``Definition`` is a string in some files and a one-element list in others; old files lack
``Instance License``, ``Domains`` or instance ids) and strict where a missing value would change
results (no instances, no input/output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itransfer.errors import DataError

CATEGORY_SEPARATOR = " -> "
_TASK_NUMBER = re.compile(r"^task(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Demonstration:
    """A demonstration from a task's ``Positive Examples`` or ``Negative Examples``."""

    input: str
    output: str
    explanation: str = ""


@dataclass(frozen=True)
class Instance:
    """One evaluation/training instance: an input and every acceptable output."""

    id: str
    input: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class TaskMetadata:
    """Everything about a task except its instances: what the split selection needs."""

    name: str
    number: int | None
    categories: tuple[str, ...]
    domains: tuple[str, ...]
    sources: tuple[str, ...]
    input_languages: tuple[str, ...]
    output_languages: tuple[str, ...]
    instruction_languages: tuple[str, ...]
    instance_license: tuple[str, ...]
    num_instances: int

    @property
    def unique_id(self) -> str:
        """The short unique task ID of the paper's Figure 5 (``task_040_qasc``)."""
        return task_unique_id(self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "number": self.number,
            "categories": list(self.categories),
            "domains": list(self.domains),
            "sources": list(self.sources),
            "input_languages": list(self.input_languages),
            "output_languages": list(self.output_languages),
            "instruction_languages": list(self.instruction_languages),
            "instance_license": list(self.instance_license),
            "num_instances": self.num_instances,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskMetadata:
        tuple_fields = (
            "categories", "domains", "sources", "input_languages", "output_languages",
            "instruction_languages", "instance_license",
        )
        values = {key: tuple(data[key]) for key in tuple_fields}
        return cls(
            name=data["name"], number=data["number"], num_instances=data["num_instances"], **values
        )


@dataclass(frozen=True)
class Task:
    """A whole SNI task: metadata, instruction, demonstrations and instances."""

    metadata: TaskMetadata
    definition: str
    positive_examples: tuple[Demonstration, ...]
    negative_examples: tuple[Demonstration, ...]
    instances: tuple[Instance, ...] = field(repr=False)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def categories(self) -> tuple[str, ...]:
        return self.metadata.categories


def task_number(name: str) -> int | None:
    """The number in ``task040_qasc_question_generation`` (40), or None for odd names."""
    match = _TASK_NUMBER.match(name)
    return int(match.group(1)) if match else None


def task_unique_id(name: str) -> str:
    """``task040_qasc_question_generation`` → ``task_040_qasc`` (the paper's Figure 5 form).

    The number makes it unique; the first word after it (usually the source dataset) keeps it
    readable. Names that do not follow the ``taskNNN_`` convention are returned unchanged.
    """
    match = re.match(r"^task(\d+)_([^_]+)", name, re.IGNORECASE)
    if not match:
        return name
    return f"task_{match.group(1)}_{match.group(2)}"


def read_task_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror}") from exc


def _read_json(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            path, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})", line=line
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON: {exc.msg} (column {exc.colno})"
        raise DataError(path, message, line=exc.lineno) from exc
    if not isinstance(data, dict):
        found = type(data).__name__
        raise DataError(path, f"expected a JSON object at the top level, found {found}")
    return data


def _string_list(path: Path, data: dict[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    """A field that should be a list of strings; a bare string is accepted as a 1-element list."""
    if key not in data:
        if required:
            raise DataError(path, f"missing required field '{key}'")
        return ()
    value = data[key]
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DataError(path, f"field '{key}' must be a string or a list of strings")
    return tuple(value)


def _definition(path: Path, data: dict[str, Any]) -> str:
    parts = _string_list(path, data, "Definition", required=True)
    if not parts or not "".join(parts).strip():
        raise DataError(path, "field 'Definition' is empty")
    return "\n".join(part.strip() for part in parts)


def _demonstrations(path: Path, data: dict[str, Any], key: str) -> tuple[Demonstration, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise DataError(path, f"field '{key}' must be a list")
    examples = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise DataError(path, f"'{key}'[{index}] must be an object")
        for needed in ("input", "output"):
            if needed not in item:
                raise DataError(path, f"'{key}'[{index}] is missing field '{needed}'")
        output = item["output"]
        # A few old files store example outputs as one-element lists.
        if isinstance(output, list):
            output = output[0] if output else ""
        examples.append(
            Demonstration(
                input=str(item["input"]),
                output=str(output),
                explanation=str(item.get("explanation", "")),
            )
        )
    return tuple(examples)


def _instances(path: Path, data: dict[str, Any], task_name: str) -> tuple[Instance, ...]:
    if "Instances" not in data:
        raise DataError(path, "missing required field 'Instances'")
    raw = data["Instances"]
    if not isinstance(raw, list):
        raise DataError(path, "field 'Instances' must be a list")
    if not raw:
        raise DataError(path, "field 'Instances' is empty: a task needs at least one instance")
    instances = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise DataError(path, f"'Instances'[{index}] must be an object")
        if "input" not in item:
            raise DataError(path, f"'Instances'[{index}] is missing field 'input'")
        if "output" not in item:
            raise DataError(path, f"'Instances'[{index}] is missing field 'output'")
        output = item["output"]
        outputs = (output,) if isinstance(output, str) else output
        if not isinstance(outputs, list | tuple) or not all(isinstance(o, str) for o in outputs):
            raise DataError(
                path, f"'Instances'[{index}].output must be a string or a list of strings"
            )
        if not outputs:
            raise DataError(path, f"'Instances'[{index}].output is an empty list")
        instance_id = item.get("id") or f"{task_name}-{index}"
        instances.append(
            Instance(id=str(instance_id), input=str(item["input"]), outputs=tuple(outputs))
        )
    return tuple(instances)


def categories_of(raw_categories: Sequence[str]) -> tuple[str, ...]:
    """The top-level categories: the part of each entry before ``' -> '``, de-duplicated."""
    seen: dict[str, None] = {}
    for entry in raw_categories:
        seen.setdefault(entry.split(CATEGORY_SEPARATOR)[0].strip(), None)
    return tuple(seen)


def parse_task(path: Path, raw: bytes | None = None) -> Task:
    """Parse one task file; any defect raises :class:`DataError` naming the file and field.

    ``raw`` lets a caller that already read the bytes (to hash them) avoid a second read.
    """
    path = Path(path)
    data = _read_json(path, read_task_bytes(path) if raw is None else raw)
    name = path.stem
    categories = categories_of(_string_list(path, data, "Categories", required=True))
    if not categories:
        raise DataError(path, "field 'Categories' is empty")
    instances = _instances(path, data, name)
    # Old files predate Instruction_language; the instructions are then in English.
    metadata = TaskMetadata(
        name=name,
        number=task_number(name),
        categories=categories,
        domains=_string_list(path, data, "Domains", required=False),
        sources=_split_sources(_string_list(path, data, "Source", required=False)),
        input_languages=_string_list(path, data, "Input_language", required=True),
        output_languages=_string_list(path, data, "Output_language", required=True),
        instruction_languages=_string_list(path, data, "Instruction_language", required=False)
        or ("English",),
        instance_license=_string_list(path, data, "Instance License", required=False),
        num_instances=len(instances),
    )
    return Task(
        metadata=metadata,
        definition=_definition(path, data),
        positive_examples=_demonstrations(path, data, "Positive Examples"),
        negative_examples=_demonstrations(path, data, "Negative Examples"),
        instances=instances,
        path=path,
    )


def _split_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """Sources, with the benchmark's occasional ``"wsc; enhanced_wsc"`` entries split apart."""
    split: dict[str, None] = {}
    for entry in sources:
        for part in entry.replace(",", ";").split(";"):
            if part.strip():
                split.setdefault(part.strip(), None)
    return tuple(split)


def resolve_tasks_dir(path: str | Path) -> Path:
    """Accept either a clone of the SNI repository or its ``tasks/`` folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(path, "no such directory (expected an SNI repository or its tasks/ folder)")
    if not path.is_dir():
        raise DataError(path, "not a directory (expected an SNI repository or its tasks/ folder)")
    if (path / "tasks").is_dir() and any((path / "tasks").glob("*.json")):
        return path / "tasks"
    if any(path.glob("*.json")):
        return path
    raise DataError(
        path,
        "neither an SNI repository (with a tasks/ folder of task JSON files) "
        "nor a tasks/ folder (no *.json files found)",
    )


def list_task_files(tasks_dir: Path) -> list[Path]:
    """Task files in a stable order; duplicate task names are an error naming both files.

    Names are compared case-insensitively: ``task001_x.json`` and ``Task001_X.json`` would be
    the same task on a case-insensitive file system and in every results table.
    """
    files = sorted(p for p in tasks_dir.glob("*.json") if p.is_file())
    by_name: dict[str, Path] = {}
    for file in files:
        key = file.stem.lower()
        if key in by_name:
            raise DataError(file, f"duplicate task name: also defined by {by_name[key].name}")
        by_name[key] = file
    return files


def iter_tasks(tasks_dir: Path, names: Sequence[str] | None = None) -> Iterator[Task]:
    """Parse the tasks of a folder (all of them, or the given names in that order)."""
    if names is None:
        for file in list_task_files(tasks_dir):
            yield parse_task(file)
        return
    for name in names:
        file = tasks_dir / f"{name}.json"
        if not file.is_file():
            raise DataError(file, f"task '{name}' not found in {tasks_dir}")
        yield parse_task(file)
