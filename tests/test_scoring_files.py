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


# Exact messages and the article flag (mutation testing, issue 27): an error that names the
# wrong file or line, or a scorer that keeps "the"/"a", would pass the looser tests above.

def _error(call: Any) -> DataError:
    with pytest.raises(DataError) as error:
        call()
    return error.value


def test_articles_are_dropped_by_default_for_exact_match(tmp_path: Path) -> None:
    from itransfer.eval.metrics import SniScorer, default_scorer

    assert SniScorer().score("the Blue Whale", ["a blue whale"]).exact_match == 1.0
    assert default_scorer().score("blue whale", ["the blue whale"]).exact_match == 1.0
    kept = SniScorer(drop_articles=False)
    assert kept.score("blue whale", ["the blue whale"]).exact_match == 0.0
    assert kept.score("the blue whale", ["The blue whale."]).exact_match == 1.0
    references = _write_jsonl(tmp_path / "r.jsonl", [_reference("a", "t", "c", "the cat")])
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prediction": "cat"}])
    assert score_files(predictions, references).overall.exact_match == 100.0
    assert score_files(predictions, references,
                       drop_articles=False).overall.exact_match == 0.0
    with pytest.raises(ValueError, match=r"^an instance needs at least one reference$"):
        SniScorer().score("x", [])


def test_errors_name_the_file_the_line_and_the_problem(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    predictions, references = files
    lines = [json.dumps(r) for r in REFERENCES]
    bad = tmp_path / "bad.jsonl"

    def refs_with(line: str) -> DataError:
        bad.write_text("\n".join([*lines[:2], line]) + "\n", encoding="utf-8")
        return _error(lambda: score_files(predictions, bad))

    assert str(refs_with(lines[0])) == (
        f"{bad}:3: duplicate id 't1-0' (first seen on line 1)")
    assert str(refs_with(json.dumps(_reference("x", "t", "c")))) == (
        f"{bad}:3: field 'references' must be a non-empty list of strings")
    assert str(refs_with(json.dumps(_reference("x", "t", "c", "y") | {"track": "xlingual"}))) == (
        f"{bad}:3: field 'track' is 'xlingual'; only 'default' is supported")
    assert str(refs_with("[1]")) == f"{bad}:3: expected a JSON object, got list"
    assert str(refs_with(json.dumps(_reference("x", "t", "c", "y") | {"task_id": 3}))) == (
        f"{bad}:3: field 'task_id' must be a string, got int")
    bad.write_text("\n", encoding="utf-8")
    assert str(_error(lambda: score_files(predictions, bad))) == (
        f"{bad}: no instances (the file is empty)")
    missing = tmp_path / "absent.jsonl"
    assert str(_error(lambda: score_files(predictions, missing))) == f"{missing}: file not found"
    bad.write_bytes(b"\xff\xfe{}\n")
    error = _error(lambda: score_files(predictions, bad))
    assert error.path == bad and error.message.startswith("cannot read file: ")
    assert "codec can't decode" in error.message

    def predictions_with(*records: Any) -> DataError:
        _write_jsonl(bad, list(records))
        return _error(lambda: score_files(bad, references))

    assert str(predictions_with({"id": "t1-0", "prediction": "a"}, {"prediction": "b"})) == (
        f"{bad}:2: missing field 'id'")
    assert str(predictions_with({"id": "t1-0", "prediction": "a"}, {"id": "t1-0",
                                                                     "prediction": "b"})) == (
        f"{bad}:2: duplicate id 't1-0' (first seen on line 1)")
    assert str(predictions_with({"id": "t1-0", "prediction": "a"},
                                {"id": "t1-1", "prediction": 5})) == (
        f"{bad}:2: field 'prediction' must be a string, got int")


def test_long_id_lists_show_ten_and_count_the_rest(tmp_path: Path) -> None:
    def unknown(n: int) -> str:
        references = _write_jsonl(tmp_path / "r.jsonl", [_reference("a", "t", "c", "x")])
        predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prediction": "x"}] + [
            {"id": f"u{i:02d}", "prediction": "x"} for i in range(n)])
        return str(_error(lambda: score_files(predictions, references)))

    ten = ", ".join(f"'u{i:02d}'" for i in range(10))
    assert unknown(10).endswith(f"predictions for ids not in {tmp_path / 'r.jsonl'}: "
                                f"10 ids: {ten}")
    assert unknown(11).endswith(f"11 ids: {ten}, ... (1 more)")


def test_missing_predictions_warn_with_their_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    references = _write_jsonl(tmp_path / "r.jsonl", [_reference(i, "t", "c", "x") for i in "abc"])
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prediction": "x"}])
    assert str(_error(lambda: score_files(predictions, references))) == (
        f"{predictions}: no prediction for ids in {references}: 2 ids: 'b', 'c' "
        "(pass --allow-missing to score them as empty strings)")
    with caplog.at_level("WARNING"):
        report = score_files(predictions, references, allow_missing=True)
    assert "No prediction for 2 instances; scoring them as ''." in caplog.messages
    assert report.overall.exact_match == pytest.approx(100 / 3)
