"""``itransfer data``: look at the benchmark as the experiments will see it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from itransfer.cli.common import (
    ConfigOption,
    SetOption,
    SniDirOption,
    file_progress,
    folder_not_file,
    resolve_config,
)
from itransfer.config.schema import EVALUATION_TASK_GROUPS
from itransfer.data.benchmark import SNIBenchmark, open_benchmark
from itransfer.data.contexts import CONTEXTS, EncodedInput, build_context
from itransfer.data.paper_counts import PAPER_NOTES, CountCheck, PaperComparison, compare_with_paper
from itransfer.data.selection import TaskSelection
from itransfer.data.sni import Instance
from itransfer.errors import ConfigError
from itransfer.runs.provenance import write_run_record
from itransfer.runtime.atomic_files import atomic_write_text

data_app = typer.Typer(help="Inspect the SNI tasks, the paper's split and the model inputs.")
console = Console()

GROUP_TITLES = {
    "seen": "seen (training)",
    "unseen": "unseen (NLU)",
    "unseen_synthetic": "unseen (synthetic)",
    "heldout_domain": "held-out domain",
    "heldout_adversarial": "held-out adversarial",
}

SHORT_TITLES = {
    "seen": "seen",
    "unseen": "unseen",
    "unseen_synthetic": "unseen-syn",
    "heldout_domain": "held-dom",
    "heldout_adversarial": "held-adv",
}


@data_app.command("summary")
def summary(
    sni_dir: Path | None = SniDirOption,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-parse every task file."),
    out: Path | None = typer.Option(
        None, "--out", help="Also write summary.json with the run's config and provenance here.",
        callback=folder_not_file,
    ),
) -> None:
    """Per-split task counts and per-category counts of the paper's task selection, each beside
    the paper's number (§2.4, Tables 1–2) with differences flagged ✗."""
    config = resolve_config(config_path, overrides, sni_dir)
    benchmark = open_benchmark(
        config.data,
        config.seed,
        use_cache=not no_cache,
        progress=None if json_output else file_progress("indexing task files"),
    )
    payload = benchmark.selection.to_json()
    payload["tasks_dir"] = str(benchmark.tasks_dir)
    comparison = compare_with_paper(benchmark.selection)
    payload["paper_comparison"] = comparison.to_json()
    if out is not None:
        atomic_write_text(out / "summary.json", json.dumps(payload, indent=2) + "\n")
        write_run_record(out, config, seed=config.seed)
    if json_output:
        typer.echo(json.dumps(payload))
        return
    _print_summary(benchmark.selection, comparison, str(benchmark.tasks_dir))


def _delta(check: CountCheck | None) -> str:
    """✓ when the paper's count matches, ✗ and found − paper when not, blank without one."""
    if check is None or check.delta is None:
        return ""
    return "[green]✓[/green]" if check.matches else f"[red]✗ {check.delta:+d}[/red]"


def _paper(check: CountCheck | None) -> str:
    return "" if check is None or check.paper is None else str(check.paper)


def _print_summary(selection: TaskSelection, comparison: PaperComparison, tasks_dir: str) -> None:
    groups = selection.groups()
    group_checks = {(check.group, check.what): check for check in comparison.groups}
    counts = Table(
        title=f"Task selection of {tasks_dir}",
        caption="paper: §2.4 (blank where the paper gives no count); Δ = found − paper",
    )
    counts.add_column("split")
    for header in ("tasks", "paper", "Δ", "categories", "paper", "Δ"):
        counts.add_column(header, justify="right")
    for group, names in groups.items():
        tasks, categories = group_checks[group, "tasks"], group_checks[group, "categories"]
        counts.add_row(GROUP_TITLES[group], str(len(names)), _paper(tasks), _delta(tasks),
                       str(categories.found), _paper(categories), _delta(categories))
    counts.add_row("excluded", str(len(selection.excluded)), style="dim")
    console.print(counts)

    by_category = Table(
        title="Tasks per category",
        caption="syn = synthetic; held-dom/held-adv = held out for evaluation domains/"
        "adversarial sources; paper = Table 1 (seen) or Table 2 (unseen), Δ against that column",
    )
    by_category.add_column("category", no_wrap=True)
    for group in groups:
        title = SHORT_TITLES[group]
        by_category.add_column(title, justify="right", no_wrap=True, min_width=len(title))
    by_category.add_column("paper", justify="right", no_wrap=True)
    by_category.add_column("Δ", justify="right", no_wrap=True)
    per_group = {group: selection.category_counts(group) for group in groups}
    # The paper's categories are listed even where the selection has none of their tasks.
    listed = {check.what: check for check in comparison.categories if check.paper is not None}
    categories = sorted({c for counts_ in per_group.values() for c in counts_} | set(listed))
    for category in categories:
        check = listed.get(category)
        by_category.add_row(
            category, *(str(per_group[group].get(category, "")) for group in groups),
            _paper(check), _delta(check),
        )
    console.print(by_category)

    if selection.excluded:
        excluded = Table(title="Excluded tasks")
        excluded.add_column("task")
        excluded.add_column("reason")
        for name, reason in sorted(selection.excluded.items()):
            excluded.add_row(name, reason)
        console.print(excluded)
    _print_paper_verdict(comparison)


def _print_paper_verdict(comparison: PaperComparison) -> None:
    differing = len(comparison.differences)
    if differing == 0:
        console.print(f"[green]All {comparison.compared} counts the paper gives match.[/green]")
    else:
        console.print(
            f"[yellow]{differing} of {comparison.compared} counts differ from the paper (✗).[/]"
            " Expected unless the tasks are the full SNI repository (1,616 tasks) and the"
            " selection is the paper's: its numbers come from all of SNI."
        )
    for note in PAPER_NOTES:
        console.print(f"Note: {note}.", style="dim")


@data_app.command("show")
def show(
    task_name: str = typer.Argument(..., help="Task name, e.g. task040_qasc_question_generation."),
    sni_dir: Path | None = SniDirOption,
    context: str | None = typer.Option(
        None, "--context", help=f"Task context: {', '.join(CONTEXTS)} (default: the config's)."
    ),
    num_instances: int = typer.Option(3, "-n", "--num", min=1, help="How many instances."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="train, validation, test or few_shot (default: train for seen tasks, else test).",
    ),
    draw_seed: int | None = typer.Option(
        None,
        "--draw-seed",
        help="With --split few_shot: the pool in this fine-tuning seed's draw order, so -n k "
        "shows the k-shot set that seed trains on (default: seed 0).",
    ),
    max_input_tokens: int | None = typer.Option(
        None, "--max-input-tokens", help="Length budget (whitespace tokens here)."
    ),
    config_path: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
) -> None:
    """Print model inputs and targets exactly as the model will see them."""
    config = resolve_config(config_path, overrides, sni_dir)
    context_name = context or config.data.context.name
    encoder = build_context(context_name, config.data.context.num_exemplars)
    benchmark = open_benchmark(config.data, config.seed)
    group, label, instances = _instances_to_show(benchmark, task_name, split, draw_seed)
    budget = max_input_tokens or config.data.context.max_input_tokens
    console.rule(f"{task_name} · {group} · split={label} · context={context_name}", style="cyan")
    for instance in instances[:num_instances]:
        encoded = encoder.encode(benchmark.task(task_name), instance.input, max_tokens=budget)
        _print_instance(instance, encoded, budget)
        console.rule(style="dim")


def _instances_to_show(
    benchmark: SNIBenchmark, task_name: str, split: str | None, draw_seed: int | None
) -> tuple[str, str, Sequence[Instance]]:
    """(the task's group, the split's label, its instances in order) for ``data show``."""
    group = benchmark.group_of(task_name)
    if group == "excluded":
        reason = benchmark.selection.excluded[task_name]
        raise ConfigError(f"task {task_name} is excluded from the selection: {reason}")
    task_split = benchmark.split(task_name)
    role = split or ("test" if group in EVALUATION_TASK_GROUPS else "train")
    if role not in ("train", "validation", "test", "few_shot"):
        raise ConfigError(f"--split {role}: expected train, validation, test or few_shot")
    if draw_seed is not None and role != "few_shot":
        raise ConfigError(f"--draw-seed applies to --split few_shot, not --split {role}")
    label = role
    if role == "few_shot":
        # Each seed trains on the first k of its own permutation of the pool; show that order.
        seed = 0 if draw_seed is None else draw_seed
        instances = task_split.few_shot_subset(len(task_split.few_shot_pool), seed=seed)
        label = f"few_shot (seed {seed}'s draw order)"
    else:
        instances = getattr(task_split, role)
    if not instances:
        raise ConfigError(f"task {task_name} ({group}) has no '{role}' instances")
    return group, label, instances


def _print_instance(instance: Instance, encoded: EncodedInput, budget: int | None) -> None:
    """One instance as the model sees it: its input text, its references, what was cut."""
    console.print(f"[bold]id[/bold] {instance.id}", highlight=False)
    console.print("[bold]input[/bold]", highlight=False)
    console.print(encoded.text, markup=False, highlight=False, soft_wrap=True)
    console.print("[bold]target[/bold]", highlight=False)
    console.print(instance.outputs[0], markup=False, highlight=False, soft_wrap=True)
    if len(instance.outputs) > 1:
        others = json.dumps(list(instance.outputs[1:]), ensure_ascii=False)
        console.print(f"(other references: {others})", markup=False, style="dim")
    if encoded.was_cut:
        console.print(
            f"(cut to fit {budget} tokens: {encoded.exemplars_dropped} exemplars dropped, "
            f"{encoded.definition_words_cut} instruction words and "
            f"{encoded.input_words_cut} input words cut)",
            style="yellow",
            markup=False,
        )
