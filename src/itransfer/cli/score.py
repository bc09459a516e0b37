"""``itransfer score``: SNI metrics of a predictions file against a references file.

Usage::

    itransfer score --predictions preds.jsonl --references refs.jsonl
    itransfer score --predictions preds.jsonl --references refs.jsonl --json > scores.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from itransfer.eval.metrics import MetricSummary, ScoreReport

PredictionsOption = typer.Option(
    ..., "--predictions", help="JSONL with 'id' and 'prediction' on each line."
)
ReferencesOption = typer.Option(
    ...,
    "--references",
    help="JSONL with 'id', 'task_id', 'task_category' and 'references' on each line.",
)


def score(
    predictions: Path = PredictionsOption,
    references: Path = ReferencesOption,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Score instances without a prediction as ''."
    ),
    keep_articles: bool = typer.Option(
        False,
        "--keep-articles",
        help="Exact match keeps a/an/the, as the official SNI script does (default: dropped).",
    ),
) -> None:
    """Exact match, ROUGE-L and ROUGE-L recall (0–100): overall, per category and per task."""
    from itransfer.eval.scoring_files import score_files  # rouge-score loads only when used

    report = score_files(
        predictions, references, allow_missing=allow_missing, drop_articles=not keep_articles
    )
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    # Built here, not at import, so the console writes to whatever stdout is current.
    Console().print(_report_table(report))


def _report_table(report: ScoreReport) -> Table:
    table = Table(title="SNI scores (0–100)")
    table.add_column("scope")
    table.add_column("name")
    table.add_column("n", justify="right")
    table.add_column("exact match", justify="right")
    table.add_column("ROUGE-L", justify="right")
    table.add_column("ROUGE-L r", justify="right")
    _add_row(table, "overall", "all", report.overall)
    table.add_section()
    for category, summary in report.per_category.items():
        _add_row(table, "category", category, summary)
    table.add_section()
    for task_id, summary in report.per_task.items():
        _add_row(table, "task", task_id, summary)
    return table


def _add_row(table: Table, scope: str, name: str, summary: MetricSummary) -> None:
    # Text, so that brackets in a task or category name are not read as rich markup.
    table.add_row(
        scope,
        Text(name),
        str(summary.n),
        f"{summary.exact_match:.2f}",
        f"{summary.rougeL:.2f}",
        f"{summary.rougeL_recall:.2f}",
    )
