"""The tables under the report's figures, read back from their HTML as a reader sees them:
each heading, <details> summary, header row and body row, with its label and its numbers
(four decimals) checked against the planted miniature (issue 27's mutants of the sections'
``tables_html``, ``_budget_note``, ``_seed_spread_html`` and ``fits_table``)."""

from __future__ import annotations

import dataclasses
import math
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest

from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections.data_limits import DataLimitsAnalysis
from itransfer.analysis.sections.mixing import MixingAnalysis
from itransfer.analysis.sections.samplers import SamplersAnalysis
from itransfer.analysis.sections.trajectory import TrajectoryAnalysis
from itransfer.analysis.sections.transfer import TransferAnalysis
from test_analysis import SHOTS, TRAJECTORY, build_rows, manifest_dict, seen_rows

NUM_TASKS = 6
STEPS = (0, *TRAJECTORY)  # step 0 of a trajectory is the pre-trained model
SEED_STD = 0.1 / math.sqrt(2)  # unseen_rows' two seeds sit at ±0.05 around each task's value
# Seen-task losses (train, test) planted per reverse-annealing run, its T_max and schedule,
# and how much its validation loss sits above its test loss (ra10 ranks below ra1000).
ANNEALED = {"ra1000": (1.3, 1.7, 1000, "inverse_linear", 0.0),
            "ra10": (0.9, 1.4, 10, "linear", 1.0)}
SEEN = {"proportional": (1.0, 1.5), "uniform": (0.8, 1.9),
        **{name: plant[:2] for name, plant in ANNEALED.items()}}


class Page(HTMLParser):
    """The blocks of a section's tables in order: ("h3" | "p" | "summary", text) or
    ("table", {"head": rows, "body": rows}), a row being its cells' texts; a body cell spanning
    several rows (a MultiIndex label) is repeated in each, so every row names its full index."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.blocks: list[tuple[str, Any]] = []
        self._open: str | None = None
        self._carry: dict[int, list[Any]] = {}  # column → [text, rows still to fill]
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h3", "p", "summary") and self._open is None:
            self._open = tag
            self.blocks.append((tag, ""))
        elif tag == "table":
            self.blocks.append(("table", {"head": [], "body": []}))
            self._part = "head"
        elif tag == "tbody":
            self._part = "body"
        elif tag == "tr":
            self._row: list[str] = []
            self.blocks[-1][1][self._part].append(self._row)
        elif tag in ("td", "th"):
            while len(self._row) in self._carry:
                carried = self._carry[len(self._row)]
                self._row.append(carried[0])
                carried[1] -= 1
                if carried[1] == 0:
                    del self._carry[len(self._row) - 1]
            span = int(dict(attrs).get("rowspan") or 1)
            if span > 1:
                self._carry[len(self._row)] = ["", span - 1]
            self._row.append("")
            self._cell = span

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None
        elif tag in ("td", "th") and self._cell > 1:
            self._carry[len(self._row) - 1][0] = self._row[-1]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            kind, text = self.blocks[-1]
            self.blocks[-1] = (kind, text + data)
        elif self.blocks and self.blocks[-1][0] == "table" and data.strip():
            self._row[-1] += data.strip()


def body(table: dict[str, list[list[str]]], index: int) -> list[tuple[tuple[str, ...], list[str]]]:
    """Each body row as (its ``index`` label cells, its other cells), in the table's order."""
    return [(tuple(row[:index]), row[index:]) for row in table["body"]]


def fmt(value: float) -> str:
    return f"{value:.4f}"


def per_task(frame: pd.DataFrame, model: str, step: int, method: str, *, shots: int = 5,
             context: str = "none") -> pd.Series:
    """The planted per-task test loss (seeds averaged): ICL, or k-shot fine-tuning."""
    rows = frame[(frame["model"] == model) & (frame["checkpoint_step"] == step)
                 & (frame["method"] == method) & (frame["metric"] == "loss")
                 & (frame["split"] == "test")]
    if method == "finetune":
        rows = rows[(rows["shots"] == shots) & (rows["context"] == context)]
    return rows.groupby("task")["value"].mean()


def along(frame: pd.DataFrame, model: str, method: str) -> list[str]:
    """The mean over tasks of a trajectory at each step (the pre-trained model at step 0)."""
    return [fmt(per_task(frame, model if step else "pretrained", step, method).mean())
            for step in STEPS]


def delta_rows(frame: pd.DataFrame, before: tuple[str, int], after: tuple[str, int]
               ) -> list[tuple[tuple[str, ...], list[str]]]:
    """Per task: ICL and 5-shot FT loss before and after, and both changes (after − before)."""
    icl = [per_task(frame, *point, "icl") for point in (before, after)]
    ft = [per_task(frame, *point, "finetune") for point in (before, after)]
    columns = [*icl, *ft, icl[1] - icl[0], ft[1] - ft[0]]
    return [((task,), [fmt(column[task]) for column in columns]) for task in sorted(icl[0].index)]


@pytest.fixture(scope="module")
def run() -> tuple[pd.DataFrame, RunAnalysis]:
    """Every section of the miniature (six tasks, two seeds), data limits with two budgets, and
    §4 with two reverse-annealing runs of which Figure 3 keeps the better-validated one."""
    rows = build_rows(num_tasks=NUM_TASKS)
    manifest = manifest_dict()
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    for name, (train, test, t_max, schedule, above) in ANNEALED.items():
        seen = seen_rows(f"it-{name}", 300, sizes, train_loss=train, test_loss=test)
        rows += seen + [{**record, "split": "validation", "value": record["value"] + above}
                        for record in seen if record["split"] == "test"]
        manifest["models"][f"it-{name}"] = {
            **manifest["models"]["it-uniform"], "sampler": "reverse_annealing",
            "sampler_config": {"name": "reverse_annealing", "max_temperature": t_max,
                               "schedule": schedule}}
        manifest["sections"]["samplers"]["models"][name] = f"it-{name}"
    manifest["sections"]["samplers"]["keep_reverse_annealing"] = 1
    manifest["models"]["it-limit10"].update(budget="steps", total_steps=300)
    manifest["models"]["it-limit100"].update(budget="epochs", total_steps=30)
    frame = pd.DataFrame(rows)
    return frame, analyse(frame, RunManifest.model_validate(manifest), n_boot=10)


def of(run: tuple[pd.DataFrame, RunAnalysis], kind: type) -> Any:
    found = run[1].of(kind)
    assert found is not None
    return found


# --- §3.1 ------------------------------------------------------------------------------------


def test_transfer_table_reads_each_models_mean_fine_tuning_loss_by_context_and_k(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§3.1's first table: one row per model and fine-tuning context (both named), one column
    per k, each cell the planted mean over tasks of that model's k-shot test loss."""
    frame = run[0]
    html = of(run, TransferAnalysis).tables_html()
    assert html.startswith("<h3>Mean fine-tuning test loss by k</h3><table")
    blocks = Page(html).blocks
    assert blocks[0] == ("h3", "Mean fine-tuning test loss by k")
    curves = blocks[1][1]
    assert curves["head"] == [["", "shots", *map(str, SHOTS)],
                              ["label", "context", *[""] * len(SHOTS)]]
    models = {"instruction-tuned": ("it-proportional", 300), "pre-trained": ("pretrained", 0)}
    assert body(curves, 2) == [
        ((label, context), [fmt(per_task(frame, *models[label], "finetune", shots=shots,
                                         context=context).mean()) for shots in SHOTS])
        for label in models for context in ("exemplars", "none")]


def test_transfer_per_task_values_and_seed_spread_sit_under_their_summaries(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§3.1's folded tables: the per-task 5-shot FT and ICL losses of the instruction-tuned
    model, one row per task, then its seed spread: a line naming k, the context, the model and
    the planted spread (two seeds ±0.05: std 0.0707 per task), and per task mean, std, seeds."""
    frame = run[0]
    blocks = Page(of(run, TransferAnalysis).tables_html()).blocks
    assert [kind for kind, _ in blocks] == ["h3", "table", "summary", "table", "summary", "table"]
    assert blocks[2] == ("summary", f"Per-task values ({NUM_TASKS} tasks)")
    finetune = per_task(frame, "it-proportional", 300, "finetune")
    icl = per_task(frame, "it-proportional", 300, "icl")
    assert blocks[3][1]["head"] == [["", "finetune", "icl"], ["task", "", ""]]
    assert body(blocks[3][1], 1) == [((task,), [fmt(finetune[task]), fmt(icl[task])])
                                     for task in sorted(finetune.index)]
    assert blocks[4] == ("summary", (
        "Seed spread of the 5-shot fine-tuning loss (context none) of it-proportional (the "
        f"values above average the seeds): 2 seeds per task, {NUM_TASKS} tasks: median per-task"
        f" std across seeds {SEED_STD:.3f} (std of the task means {finetune.std():.3f})"))
    assert blocks[5][1]["head"] == [["", "mean", "std", "n_seeds"], ["task", "", "", ""]]
    assert body(blocks[5][1], 1) == [((task,), [fmt(finetune[task]), fmt(SEED_STD), "2"])
                                     for task in sorted(finetune.index)]


def test_transfer_seed_spread_is_left_out_without_a_second_seed(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """With one seed per task (or no spread rows at all) §3.1 shows no seed-spread line: the
    tables end with the per-task values, nothing after them."""
    transfer = of(run, TransferAnalysis)
    full = transfer.tables_html()
    without = full[:full.index("<details><summary>Seed spread")]
    one_seed = transfer.seed_spread.assign(std=np.nan, n_seeds=1)
    assert dataclasses.replace(transfer, seed_spread=one_seed).tables_html() == without
    assert dataclasses.replace(transfer, seed_spread=pd.DataFrame()).tables_html() == without


# --- §5.1 and §5.2 ---------------------------------------------------------------------------


def test_trajectory_tables_read_the_planted_curves_and_each_phases_changes(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§5.1: the mean FT and ICL loss per step (a row per method, step 0 the pre-trained
    model), then each phase's per-task changes under its correlation (steps 0 → 100 and
    100 → 300), then the seed spread per step."""
    frame = run[0]
    trajectory = of(run, TrajectoryAnalysis)
    html = trajectory.tables_html()
    assert html.startswith("<h3>Mean loss by step</h3><table")
    blocks = Page(html).blocks
    assert [kind for kind, _ in blocks] == ["h3", "table", *["summary", "table"] * 3]
    assert blocks[1][1]["head"] == [["step", *map(str, STEPS)], ["method", *[""] * len(STEPS)]]
    assert body(blocks[1][1], 1) == [(("finetune",), along(frame, "it-proportional", "finetune")),
                                     (("icl",), along(frame, "it-proportional", "icl"))]
    phases = trajectory.phases
    head = [["", "icl_before", "icl_after", "finetune_before", "finetune_after", "icl_delta",
             "finetune_delta"], ["task", *[""] * 6]]
    for at, phase, before, after in ((2, "Early", ("pretrained", 0), ("it-proportional", 100)),
                                     (4, "Late", ("it-proportional", 100),
                                      ("it-proportional", 300))):
        described = (phases.early if phase == "Early" else phases.late).describe()
        assert described.startswith("ρ=")
        assert blocks[at] == ("summary", f"{phase} phase per task: {described}")
        assert blocks[at + 1][1]["head"] == head
        assert body(blocks[at + 1][1], 1) == delta_rows(frame, before, after)
    assert blocks[6][1].startswith(
        "Seed spread of the 5-shot fine-tuning loss per step (the values above average the "
        f"seeds): 2 seeds per task; median per-task std across seeds {SEED_STD:.3f} over 4 "
        "points")
    assert blocks[7][1]["head"][0][:2] == ["label", "model"]
    assert [row[0] for row in blocks[7][1]["body"]] == [f"step {step}" for step in STEPS]


def test_mixing_table_reads_both_curves_by_method_and_step(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§5.2: where its curves are drawn, then the mean loss per step in one row per method and
    model (with mixing: it-mix3; without: it-proportional; step 0 the pre-trained model), then
    the seed spread of both trajectories' tuned steps."""
    frame = run[0]
    html = of(run, MixingAnalysis).tables_html()
    assert html.startswith("<p>Drawn in Figure 4 (left) above.</p><h3>Mean loss by step</h3>"
                           "<table")
    blocks = Page(html).blocks
    assert [kind for kind, _ in blocks] == ["p", "h3", "table", "summary", "table"]
    assert blocks[2][1]["head"] == [["", "step", *map(str, STEPS)],
                                    ["method", "label", *[""] * len(STEPS)]]
    models = {"with mixing": "it-mix3", "without mixing": "it-proportional"}
    assert body(blocks[2][1], 2) == [((method, label), along(frame, model, method))
                                     for method in ("finetune", "icl")
                                     for label, model in models.items()]
    assert blocks[3][1].startswith(
        "Seed spread of the 5-shot fine-tuning loss with and without mixing (the values above "
        f"average the seeds): 2 seeds per task; median per-task std across seeds {SEED_STD:.3f}"
        f" over {2 * len(TRAJECTORY)} points")
    assert [row[0] for row in blocks[4][1]["body"]] == [
        f"{label}, step {step}" for label in models for step in TRAJECTORY]


# --- §3.2 ------------------------------------------------------------------------------------

STEPS_NOTE = "<b>steps</b>: as many steps as the same run without the data limit"
EPOCHS_NOTE = "<b>epochs</b>: train.epochs passes over the model's own (limited) training data"
NOT_RECORDED = "<p>Step budget: not recorded (a manifest written before version 3).</p>"


def budget_note(meanings: str) -> str:
    return f"<p>Step budget (column <code>budget</code>): {meanings}</p>"


def test_data_limits_tables_read_each_limits_losses_budget_and_per_task_changes(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§3.2: under its heading the budget line (two budgets: both meanings, in the table's
    order, and that they differ), one row per limit (smallest first) with its planted mean ICL
    and 5-shot FT loss, task counts, budget and steps; then the per-task changes of the
    section's pair (it-limit10 − it-limit100) and the seed spread per limit."""
    frame = run[0]
    html = of(run, DataLimitsAnalysis).tables_html()
    assert html.startswith("<h3>Mean loss by data limit</h3>" + budget_note(
        f"{STEPS_NOTE}; {EPOCHS_NOTE}. The models differ in budget.") + "<table")
    blocks = Page(html).blocks
    assert [kind for kind, _ in blocks] == ["h3", "p", "table", *["summary", "table"] * 2]
    summary = blocks[2][1]
    assert summary["head"] == [["limit", "model", "icl_loss", "finetune_loss", "n_icl_tasks",
                                "n_finetune_tasks", "budget", "total_steps"]]
    assert summary["body"] == [
        [limit, model, fmt(per_task(frame, model, 300, "icl").mean()),
         fmt(per_task(frame, model, 300, "finetune").mean()), str(NUM_TASKS), str(NUM_TASKS),
         budget, steps]
        for limit, model, budget, steps in (("10", "it-limit10", "steps", "300"),
                                            ("100", "it-limit100", "epochs", "30"))]
    assert blocks[3] == ("summary", f"Per-task changes, it-limit10 − it-limit100 ({NUM_TASKS} "
                                    "tasks)")
    assert blocks[4][1]["head"][1][0] == "task"
    assert body(blocks[4][1], 1) == delta_rows(frame, ("it-limit100", 300), ("it-limit10", 300))
    assert blocks[5][1].startswith(
        "Seed spread of the 5-shot fine-tuning loss per data limit (the values above average "
        f"the seeds): 2 seeds per task; median per-task std across seeds {SEED_STD:.3f} over 2 "
        "points")
    assert [row[0] for row in blocks[6][1]["body"]] == ["limit 10", "limit 100"]


@pytest.mark.parametrize(("budgets", "note"), [
    (["steps", "steps"], budget_note(f"{STEPS_NOTE}.")),
    (["epochs", "steps"], budget_note(f"{EPOCHS_NOTE}; {STEPS_NOTE}. The models differ in "
                                      "budget.")),
    ([None, "fixed"], budget_note("<b>fixed</b>: train.steps, set explicitly.")),
    ([None, None], NOT_RECORDED),
    (["weekly", None], NOT_RECORDED),
])
def test_data_limits_budget_line_names_each_recorded_budget_once(
    run: tuple[pd.DataFrame, RunAnalysis], budgets: list[str | None], note: str,
) -> None:
    """The line above §3.2's table: each budget the models were trained under, once and in
    their order, with its meaning; "differ" only when there are two; "not recorded" when no
    model has a known budget (none, or one this version does not know)."""
    limits = of(run, DataLimitsAnalysis)
    html = dataclasses.replace(limits, summary=limits.summary.assign(budget=budgets)
                               ).tables_html()
    assert html.startswith("<h3>Mean loss by data limit</h3>" + note + "<table")


# --- §4 --------------------------------------------------------------------------------------

FIT_COLUMNS = ["sampler", "sampler_kind", "schedule", "T_max", "in_figure_3", "n_tasks",
               "train_diff", "train_p", "test_diff", "test_p", "gap_diff", "fit"]


def test_fits_table_reads_each_samplers_planted_small_task_differences(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§4's fits table: one row per sampler other than proportional, in the section's order,
    with its kind, its sweep schedule and T_max (reverse annealing only), whether Figure 3
    compares it, and on the five small tasks its planted train, test and gap differences from
    proportional, their one-sided Wilcoxon p (five tasks all one way: 1/32 for, 1 against)
    and the word for its fit."""
    samplers = of(run, SamplersAnalysis)
    fits = samplers.fits_table()
    assert list(fits.columns) == FIT_COLUMNS
    assert list(fits["sampler"]) == ["uniform", "ra1000", "ra10"]
    expected = {"uniform": ("uniform", None, None, True, "overfits"),
                "ra1000": ("reverse_annealing", "inverse_linear", 1000, True, "underfits"),
                "ra10": ("reverse_annealing", "linear", 10, False, "neither")}
    train0, test0 = SEEN["proportional"]
    for record in fits.to_dict("records"):
        name = record["sampler"]
        kind, schedule, t_max, compared, fit = expected[name]
        assert (record["sampler_kind"], record["in_figure_3"], record["fit"]) == (
            kind, compared, fit), name
        assert record["schedule"] == schedule or (schedule is None and pd.isna(
            record["schedule"])), name
        assert record["T_max"] == t_max or (t_max is None and pd.isna(record["T_max"])), name
        train, test = SEEN[name]
        assert record["n_tasks"] == 5
        assert [record[column] for column in ("train_diff", "test_diff", "gap_diff")] == (
            pytest.approx([train - train0, test - test0, (test - train) - (test0 - train0)]))
        assert [record["train_p"], record["test_p"]] == pytest.approx(
            [1 / 32 if train > train0 else 1.0, 1 / 32 if test > test0 else 1.0]), name


def test_fits_table_without_other_samplers_keeps_its_columns(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """A run with no sampler to set against proportional still gives the fits table its
    columns (an empty table with a header, not a frame without columns)."""
    samplers = of(run, SamplersAnalysis)
    fits = dataclasses.replace(samplers, fits={}).fits_table()
    assert fits.empty and list(fits.columns) == FIT_COLUMNS


def test_samplers_tables_read_the_comparison_sweep_others_and_size_bins_in_order(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """§4's tables as a reader meets them: what the comparison is, the samplers Figure 3
    compares, the reverse-annealing sweep ranked on validation loss with the kept run named
    (T_max, schedule, loss), the sampler left out under "Other samplers", and the seen losses
    by task size with the size bins from smallest to largest (not in text order)."""
    samplers = of(run, SamplersAnalysis)
    frame = run[0]
    blocks = Page(samplers.tables_html()).blocks
    assert blocks[0] == ("p", (
        "Compared as in Figure 3: proportional, uniform and the best 1 reverse-annealing runs "
        "by mean seen-task validation loss (§4). Seen losses are averaged two ways: over tasks "
        "(each task once) and pooled (_pooled: over examples, each task weighted by its "
        "split's size). Proportional sampling minimises the pooled training loss and uniform "
        "sampling the per-task mean, so the two can rank the samplers differently; the "
        "finding says which one its verdict rests on."))
    assert [text for kind, text in blocks if kind == "h3"] == [
        "Reverse-annealing sweep, ranked on seen validation loss",
        "Other samplers (not in the paper's comparison)", "Seen-task loss by training-set size",
        "Fit of the small tasks against proportional"]
    tables = [block for kind, block in blocks if kind == "table"]
    assert [row[0] for row in tables[0]["body"]] == ["proportional", "uniform", "ra1000"]

    def validation(name: str) -> str:
        rows = frame[(frame["model"] == f"it-{name}") & (frame["split"] == "validation")]
        return fmt(rows.groupby("task")["value"].mean().mean())

    assert ("p", f"Kept: ra1000 (T_max=1000, inverse_linear schedule, validation loss "
                 f"{validation('ra1000')}).") in blocks
    assert tables[1]["body"] == [["ra1000", "1000", "inverse_linear", validation("ra1000"), "1",
                                  "True"],
                                 ["ra10", "10", "linear", validation("ra10"), "2", "False"]]
    assert [row[0] for row in tables[2]["body"]] == ["ra10"]
    bins = tables[3]["head"][0][2:]
    assert bins == sorted(bins, key=lambda label: int(label.split("–")[0])) and len(bins) == 5
    binned = samplers.binned.set_index(["split", "label", "bin"])["mean"]
    assert [(tuple(row[:2]), row[2:]) for row in tables[3]["body"]] == [
        ((split, label), [fmt(binned[(split, label, size)]) for size in bins])
        for split in ("test", "train") for label in ("proportional", "ra1000", "uniform")]


def test_samplers_tables_say_what_could_not_be_chosen_as_the_paper_does(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    """The comparison's notes (e.g. a sweep smaller than the paper's) close the comparison, in
    one italic sentence; with no sweep, no size bins and no other sampler those parts are left
    out, and with no kept run the sweep says why."""
    samplers = of(run, SamplersAnalysis)
    comparison = dataclasses.replace(samplers.comparison, notes=("no uniform model in this run",
                                                                 "a second note"))
    text = dataclasses.replace(samplers, comparison=comparison).tables_html()
    assert "<p><em>no uniform model in this run; a second note.</em></p>" in text
    sweep = samplers.comparison.sweep.assign(kept=False)
    bare = dataclasses.replace(
        samplers, comparison=dataclasses.replace(samplers.comparison, sweep=sweep),
        binned=samplers.binned.iloc[0:0],
        summary=samplers.summary[samplers.summary["in_figure_3"]])
    blocks = Page(bare.tables_html()).blocks
    assert ("p", "Kept: none (no validation loss).") in blocks
    assert [text for kind, text in blocks if kind == "h3"] == [
        "Reverse-annealing sweep, ranked on seen validation loss",
        "Fit of the small tasks against proportional"]


def test_fits_section_is_left_out_without_proportional_to_measure_against(
    run: tuple[pd.DataFrame, RunAnalysis],
) -> None:
    samplers = of(run, SamplersAnalysis)
    assert samplers.fits_html().startswith("<h3>Fit of the small tasks against proportional</h3>")
    assert dataclasses.replace(samplers, reference=None).fits_html() == ""
