"""Score a predictions file against a references file in SNI's evaluation format.

Both files are JSON Lines, as read by the official SNI evaluation script:

- references: ``{"id", "task_id", "task_category", "references": [str, ...]}`` per line
  (an optional ``"track"`` must be ``"default"``);
- predictions: ``{"id", "prediction": str}`` per line.

Unlike the official script, which silently keeps the last of duplicate ids and ignores unknown
ones, any such mismatch is an error here, so a truncated or mixed-up file cannot pass unnoticed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itransfer.errors import DataError
from itransfer.eval.metrics import ScoredInstance, ScoreReport, aggregate, default_scorer

logger = logging.getLogger(__name__)

_MAX_IDS_SHOWN = 10


@dataclass(frozen=True)
class ReferenceInstance:
    """One evaluation instance: the gold outputs and the labels results are grouped by."""

    instance_id: str
    task_id: str
    task_category: str
    references: tuple[str, ...]


def score_files(
    predictions: Path,
    references: Path,
    *,
    allow_missing: bool = False,
    drop_articles: bool = True,
) -> ScoreReport:
    """Score ``predictions`` against ``references``; see the module docstring for the format.

    With ``allow_missing`` an instance without a prediction is scored as the empty string (as
    the official script does); otherwise it is an error.
    """
    instances = read_references(references)
    predicted = read_predictions(predictions)
    reference_ids = {instance.instance_id for instance in instances}

    unknown = [pid for pid in predicted if pid not in reference_ids]
    if unknown:
        raise DataError(
            predictions, f"predictions for ids not in {references}: {_describe_ids(unknown)}"
        )
    missing = [i.instance_id for i in instances if i.instance_id not in predicted]
    if missing and not allow_missing:
        raise DataError(
            predictions,
            f"no prediction for ids in {references}: {_describe_ids(missing)} "
            "(pass --allow-missing to score them as empty strings)",
        )
    if missing:
        logger.warning("No prediction for %d instances; scoring them as ''.", len(missing))

    scorer = default_scorer(drop_articles=drop_articles)
    scored = [
        ScoredInstance(
            instance_id=instance.instance_id,
            task_id=instance.task_id,
            task_category=instance.task_category,
            score=scorer.score(predicted.get(instance.instance_id, ""), instance.references),
        )
        for instance in instances
    ]
    return aggregate(scored)


def read_references(path: Path) -> list[ReferenceInstance]:
    """Parse a references JSONL file, in file order."""
    instances: list[ReferenceInstance] = []
    first_line_of: dict[str, int] = {}
    for line_number, record in _read_jsonl(path):
        instance_id = _field(record, "id", str, path, line_number)
        _check_unique(instance_id, first_line_of, path, line_number)
        references = _field(record, "references", list, path, line_number)
        if not references or not all(isinstance(r, str) for r in references):
            raise DataError(
                path, "field 'references' must be a non-empty list of strings", line=line_number
            )
        track = record.get("track", "default")
        if track != "default":
            # The xlingual track tokenizes with GPT-2's BPE, which this package does not load.
            raise DataError(
                path, f"field 'track' is {track!r}; only 'default' is supported", line=line_number
            )
        instances.append(
            ReferenceInstance(
                instance_id=instance_id,
                task_id=_field(record, "task_id", str, path, line_number),
                task_category=_field(record, "task_category", str, path, line_number),
                references=tuple(references),
            )
        )
    if not instances:
        raise DataError(path, "no instances (the file is empty)")
    return instances


def read_predictions(path: Path) -> dict[str, str]:
    """Parse a predictions JSONL file into ``{id: prediction}``."""
    predictions: dict[str, str] = {}
    first_line_of: dict[str, int] = {}
    for line_number, record in _read_jsonl(path):
        instance_id = _field(record, "id", str, path, line_number)
        _check_unique(instance_id, first_line_of, path, line_number)
        predictions[instance_id] = _field(record, "prediction", str, path, line_number)
    return predictions


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line; line numbers start at 1."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read file: {error}") from error
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(path, f"malformed JSON: {error.msg}", line=line_number) from None
        if not isinstance(record, dict):
            raise DataError(
                path, f"expected a JSON object, got {type(record).__name__}", line=line_number
            )
        yield line_number, record


def _field(record: dict[str, Any], name: str, kind: type, path: Path, line: int) -> Any:
    if name not in record:
        raise DataError(path, f"missing field {name!r}", line=line)
    value = record[name]
    if not isinstance(value, kind):
        raise DataError(
            path,
            f"field {name!r} must be {_JSON_TYPE_NAMES[kind]}, got {type(value).__name__}",
            line=line,
        )
    return value


_JSON_TYPE_NAMES: dict[type, str] = {str: "a string", list: "a list"}


def _check_unique(instance_id: str, first_line_of: dict[str, int], path: Path, line: int) -> None:
    if instance_id in first_line_of:
        raise DataError(
            path,
            f"duplicate id {instance_id!r} (first seen on line {first_line_of[instance_id]})",
            line=line,
        )
    first_line_of[instance_id] = line


def _describe_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_IDS_SHOWN])
    hidden = len(ids) - _MAX_IDS_SHOWN
    suffix = f", ... ({hidden} more)" if hidden > 0 else ""
    return f"{len(ids)} ids: {shown}{suffix}"
