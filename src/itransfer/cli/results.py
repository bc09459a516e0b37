"""``itransfer results``: look at a run's results table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

results_app = typer.Typer(help="Inspect results tables.")


@results_app.command("show")
def show(
    run_dir: Path = typer.Argument(..., help="A run folder holding results/ (Parquet)."),
    metric: list[str] | None = typer.Option(
        None, "--metric", help="Metrics to show (default: loss and rougeL)."
    ),
) -> None:
    """Mean of each metric over tasks, by model, checkpoint, task group, method, context and
    shots."""
    from itransfer.errors import DataError
    from itransfer.eval.results import ResultsTable

    frame = ResultsTable(run_dir).read()
    if frame.empty:
        raise DataError(run_dir, "no results found (expected results/part-*.parquet)")
    metrics = metric or ["loss", "rougeL"]
    frame = frame[frame["metric"].isin(metrics) & (frame["split"] == "test")]
    # Groups are kept apart (a held-out group's mean is not an unseen one's); rows written
    # before the column existed show "—" rather than vanishing from the group-by.
    frame = frame.assign(task_group=frame["task_group"].fillna("—"))
    keys = ["model", "checkpoint_step", "task_group", "method", "context", "shots"]
    summary = (
        frame.groupby([*keys, "metric"])["value"].agg(["mean", "count"]).reset_index()
        .pivot_table(index=keys, columns="metric", values=["mean", "count"])
    )
    table = Table(title=f"Results in {run_dir} (mean over tasks, test split)")
    for key in keys:
        table.add_column(key)
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_column("tasks", justify="right")
    for index, row in summary.iterrows():
        values = [f"{row[('mean', name)]:.3f}" if ("mean", name) in row else "" for name in metrics]
        count = int(max(row[("count", name)] for name in metrics if ("count", name) in row))
        table.add_row(*(str(part) for part in index), *values, str(count))
    Console().print(table)


@results_app.command("compare")
def compare(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Two or more run folders, e.g. one per model family."
    ),
    label: list[str] | None = typer.Option(
        None, "--label", help="A column heading per run, in order (default: family: model)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the Markdown table here (default: print it)."
    ),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples per finding."),
) -> None:
    """The paper's findings on several runs side by side: the paper's number, then each run's
    verdict, number and test (e.g. T5 and a decoder-only LM on the same experiment)."""
    from itransfer.analysis.families import compare_families, render_families_markdown
    from itransfer.runtime.atomic_files import atomic_write_text

    runs = compare_families(run_dirs, label or None, n_boot=n_boot)
    text = render_families_markdown(runs)
    if out is None:
        typer.echo(text)  # as written: a terminal must not re-wrap a Markdown table
        return
    atomic_write_text(out, text)
    Console(stderr=True).print(f"wrote {out}")


@results_app.command("monitor")
def monitor(
    run_dir: Path = typer.Argument(..., help="A training run folder (holds train_log.jsonl)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the figure (default: RUN_DIR/monitor.png)."
    ),
    phase_split: int | None = typer.Option(
        None, "--phase-split", help="Also run §5.1's two-phase analysis on the probe rows, "
        "split at this step (a probe step): per-task Δ transfer vs Δ ICL, early and late."
    ),
) -> None:
    """The transfer monitor's probes of a training run (train.monitor): transfer and ICL loss,
    their change since step 0 and their Spearman correlation, as a table and a figure."""
    from itransfer.analysis.monitor import (
        FIGURE_FILE,
        monitor_phases,
        monitor_rows_of,
        plot_monitor,
        table_rows,
    )

    rows = monitor_rows_of(run_dir)
    table = Table(title=f"Transfer monitor of {run_dir} (probe tasks, mean over tasks)")
    # Δ: the change since step 0; ρ: Spearman's, transfer vs ICL across the probe tasks.
    headings = ("step", "transfer", "Δ", "ICL", "Δ", "ρ", "k", "tasks", "sec", "")
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "" else "right")
    for row in table_rows(rows):
        table.add_row(
            str(row["step"]), _number(row["finetune_loss"]),
            _number(row["finetune_loss_change"], signed=True), _number(row["icl_loss"]),
            _number(row["icl_loss_change"], signed=True), _number(row["spearman"]),
            str(row["k"]), str(row["tasks"]), _number(row["seconds"], digits=1),
            "forgetting" if row["forgetting"] else "",
        )
    Console().print(table)
    if phase_split is not None:
        phases = monitor_phases(rows, phase_split)
        Console().print(f"§5.1 on the probe tasks, Δ transfer vs Δ ICL per task: early "
                        f"(0 → {phases.split_step}) {phases.early.describe()}; late "
                        f"({phases.split_step} → {phases.final_step}) {phases.late.describe()}")
    figure = plot_monitor(rows, out or Path(run_dir) / FIGURE_FILE)
    Console(stderr=True).print(f"wrote {figure}")


def _number(value: float | None, *, signed: bool = False, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
