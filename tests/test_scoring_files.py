"""Reading SNI prediction/reference JSONL files, their errors, and the ``score`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from itransfer.cli.score import score
from itransfer.errors import DataError
from itransfer.eval.scoring_files import score_files


def _reference(instance_id: str, task: str, category: str, *refs: str) -> dict[str, Any]:
    return {"id": instance_id, "task_id": task, "task_category": category, "references": list(refs)}


REFERENCES = [
    _reference("t1-0", "task001_qa", "Question Answering", "Paris", "paris, france"),
    _reference("t1-1", "task001_qa", "Question Answering", "the blue whale"),
    _reference("t2-0", "task002_sentiment", "Sentiment Analysis", "positive"),
]
PREDICTIONS = [
    {"id": "t1-0", "prediction": "Paris."},  # EM 1, F 1, R 1
    {"id": "t1-1", "prediction": "blue whales"},  # EM 0; stems: LCS 2 of 2 vs 3: F 0.8, R 2/3
    {"id": "t2-0", "prediction": "negative"},  # all 0
]


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    predictions = _write_jsonl(tmp_path / "predictions.jsonl", PREDICTIONS)
    references = _write_jsonl(tmp_path / "references.jsonl", REFERENCES)
    return predictions, references


def test_scores_overall_per_task_and_per_category(files: tuple[Path, Path]) -> None:
    report = score_files(*files)

    assert report.overall.n == 3
    assert report.overall.exact_match == pytest.approx(100 / 3)
    assert report.overall.rougeL == pytest.approx(100 * (1 + 0.8) / 3)
    assert report.overall.rougeL_recall == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert report.per_task["task001_qa"].exact_match == pytest.approx(50.0)
    assert report.per_task["task001_qa"].rougeL == pytest.approx(90.0)
    assert report.per_task["task002_sentiment"].rougeL == pytest.approx(0.0)
    assert report.per_category["Question Answering"].n == 2
    assert report.per_category["Sentiment Analysis"].exact_match == pytest.approx(0.0)


def test_blank_lines_are_skipped(files: tuple[Path, Path]) -> None:
    predictions, references = files
    predictions.write_text("\n" + predictions.read_text() + "\n  \n", encoding="utf-8")
    assert score_files(predictions, references).overall.n == 3


def test_malformed_line_names_file_and_line(files: tuple[Path, Path]) -> None:
    predictions, references = files
    lines = predictions.read_text().splitlines()
    lines[1] = '{"id": "t1-1", "prediction": '
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(DataError, match="malformed JSON") as caught:
        score_files(predictions, references)
    assert caught.value.path == predictions
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{predictions}:2: ")


def test_non_object_line_is_an_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    predictions = _write_jsonl(tmp_path / "list.jsonl", [["t1-0", "Paris"]])
    with pytest.raises(DataError, match="JSON object") as caught:
        score_files(predictions, files[1])
    assert caught.value.line == 1


def test_missing_field_is_named(tmp_path: Path, files: tuple[Path, Path]) -> None:
    broken = [dict(record) for record in REFERENCES]
    del broken[2]["task_category"]
    references = _write_jsonl(tmp_path / "refs.jsonl", broken)

    with pytest.raises(DataError, match="missing field 'task_category'") as caught:
        score_files(files[0], references)
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("references", "Paris", "'references' must be a list"),
        ("references", [], "non-empty list of strings"),
        ("references", ["Paris", 3], "non-empty list of strings"),
        ("id", 7, "'id' must be a string"),
        ("task_id", None, "'task_id' must be a string"),
    ],
)
def test_wrong_reference_types_are_errors(
    tmp_path: Path, files: tuple[Path, Path], field: str, value: Any, expected: str
) -> None:
    broken = [dict(record) for record in REFERENCES]
    broken[0][field] = value
    references = _write_jsonl(tmp_path / "refs.jsonl", broken)

    with pytest.raises(DataError, match=expected) as caught:
        score_files(files[0], references)
    assert caught.value.line == 1


def test_non_string_prediction_is_an_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": "t1-0", "prediction": ["Paris"]}])
    with pytest.raises(DataError, match="'prediction' must be a string"):
        score_files(predictions, files[1], allow_missing=True)


def test_duplicate_id_is_an_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    predictions = _write_jsonl(tmp_path / "p.jsonl", [*PREDICTIONS, PREDICTIONS[0]])
    with pytest.raises(DataError, match=r"duplicate id 't1-0' \(first seen on line 1\)") as caught:
        score_files(predictions, files[1])
    assert caught.value.line == 4


def test_missing_predictions_name_the_ids(tmp_path: Path) -> None:
    references = _write_jsonl(
        tmp_path / "refs.jsonl", [_reference(f"i{k:02d}", "t", "c", "x") for k in range(13)]
    )
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": "i00", "prediction": "x"}])

    with pytest.raises(DataError, match="no prediction") as caught:
        score_files(predictions, references)
    message = str(caught.value)
    assert "12 ids" in message
    assert "'i01'" in message and "'i10'" in message
    assert "'i11'" not in message  # beyond the first 10 shown
    assert "(2 more)" in message
    assert "--allow-missing" in message


def test_allow_missing_scores_empty_predictions(files: tuple[Path, Path]) -> None:
    predictions, references = files
    _write_jsonl(predictions, PREDICTIONS[:1])

    report = score_files(predictions, references, allow_missing=True)

    # Only "Paris." scores; the two missing instances count as "" (0 on every metric).
    assert report.overall.n == 3
    assert report.overall.exact_match == pytest.approx(100 / 3)
    assert report.overall.rougeL == pytest.approx(100 / 3)
    assert report.per_task["task001_qa"].exact_match == pytest.approx(50.0)
    assert report.per_task["task002_sentiment"].n == 1


def test_allow_missing_uses_exactly_the_empty_string(tmp_path: Path) -> None:
    # Only "" normalises to "" (punctuation and whitespace too, e.g. " ."), so a stand-in
    # prediction of "" is the one that exactly matches this reference.
    references = _write_jsonl(tmp_path / "refs.jsonl", [_reference("e0", "t", "c", " .")])
    predictions = _write_jsonl(tmp_path / "p.jsonl", [])
    report = score_files(predictions, references, allow_missing=True)
    assert report.overall.exact_match == pytest.approx(100.0)


def test_unknown_prediction_id_is_an_error_even_with_allow_missing(
    files: tuple[Path, Path],
) -> None:
    predictions, references = files
    _write_jsonl(predictions, [*PREDICTIONS, {"id": "stray-9", "prediction": "x"}])

    with pytest.raises(DataError, match=r"not in .*1 ids: 'stray-9'"):
        score_files(predictions, references, allow_missing=True)


def test_missing_file_is_a_data_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match="file not found"):
        score_files(tmp_path / "nope.jsonl", files[1])


def test_empty_references_file_is_an_error(tmp_path: Path, files: tuple[Path, Path]) -> None:
    references = tmp_path / "empty.jsonl"
    references.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no instances"):
        score_files(files[0], references)


def test_xlingual_track_is_rejected(tmp_path: Path, files: tuple[Path, Path]) -> None:
    references = _write_jsonl(
        tmp_path / "refs.jsonl", [{**REFERENCES[0], "track": "xlingual"}, *REFERENCES[1:]]
    )
    with pytest.raises(DataError, match="'track'"):
        score_files(files[0], references)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("score")(score)
    return app


def test_cli_json_prints_one_object(files: tuple[Path, Path]) -> None:
    predictions, references = files
    args = ["--predictions", str(predictions), "--references", str(references), "--json"]
    result = CliRunner().invoke(_cli(), args)

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"overall", "per_task", "per_category"}
    assert payload["overall"]["exact_match"] == pytest.approx(100 / 3)
    assert payload["overall"]["rougeL_recall"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert payload["per_task"]["task001_qa"]["rougeL"] == pytest.approx(90.0)
    assert payload["per_category"]["Sentiment Analysis"]["n"] == 1


def test_cli_json_stays_parseable_with_allow_missing(files: tuple[Path, Path]) -> None:
    predictions, references = files
    _write_jsonl(predictions, PREDICTIONS[:1])
    args = ["--predictions", str(predictions), "--references", str(references)]
    result = CliRunner().invoke(_cli(), [*args, "--json", "--allow-missing"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["overall"]["n"] == 3


def test_cli_table_lists_overall_categories_and_tasks(files: tuple[Path, Path]) -> None:
    predictions, references = files
    args = ["--predictions", str(predictions), "--references", str(references)]
    result = CliRunner().invoke(_cli(), args, terminal_width=200)

    assert result.exit_code == 0, result.output
    for expected in ("overall", "Question Answering", "task002_sentiment", "33.33", "90.00"):
        assert expected in result.stdout


def test_cli_lets_input_errors_propagate(tmp_path: Path, files: tuple[Path, Path]) -> None:
    args = ["--predictions", str(tmp_path / "nope.jsonl"), "--references", str(files[1])]
    result = CliRunner().invoke(_cli(), args)
    assert isinstance(result.exception, DataError)
