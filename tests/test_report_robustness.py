"""The report's robustness to tasks not being independent, and the fine-tuning seeds it states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.report import (
    NOT_SURVIVING,
    render_html,
    render_markdown,
    robustness_cell,
    verdict_cell,
)
from itransfer.analysis.run import analyse
from itransfer.analysis.sections import PAPER_FINDINGS
from itransfer.analysis.seeds import SeedCount, finetune_seed_count
from itransfer.analysis.verdicts import (
    REPRODUCES,
    UNDEFINED,
    FindingResult,
    evaluate_findings,
    robustness_summary,
)
from test_analysis import build_rows, manifest_dict, unseen_rows

# The sections with k-shot fine-tuning numbers (§4 compares samplers on ICL and seen losses).
FINETUNING_SECTIONS = ("transfer", "data_limits", "trajectory", "mixing", "heldout_groups")


def clustered_transfer_rows(categories: list[str], rng: np.random.Generator
                            ) -> list[dict[str, Any]]:
    """§3.1's two models on 30 tasks whose difficulty is their category's (three levels), plus
    per-task noise: FT and ICL loss correlate across categories, not within them."""
    tasks = [f"task{index:03d}_unseen" for index in range(len(categories))]
    levels = {name: 1.0 + 1.5 * index for index, name in enumerate(sorted(set(categories)))}
    difficulty = np.array([levels[name] for name in categories]) + rng.normal(0, 0.05, 30)

    def noise() -> np.ndarray:
        return rng.normal(0.0, 0.3, len(tasks))

    rows = [*unseen_rows("pretrained", 0, tasks, difficulty + 2.0 + noise(),
                         difficulty + noise(), rng),
            *unseen_rows("it-proportional", 300, tasks, difficulty + 1.0 + noise(),
                         difficulty + 0.5 + noise(), rng)]
    category_of = dict(zip(tasks, categories, strict=True))
    return [{**record, "category": category_of[record["task"]]} for record in rows]


def ft_icl_result(rows: list[dict[str, Any]]) -> FindingResult:
    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    results = evaluate_findings(analyse(pd.DataFrame(rows), manifest, n_boot=400), n_boot=400)
    return next(result for result in results if result.finding.id == "3.1-ft-icl-correlation")


def test_a_correlation_made_by_three_categories_does_not_survive() -> None:
    rng = np.random.default_rng(0)
    categories = [name for name in ("A", "B", "C") for _ in range(10)]
    result = ft_icl_result(clustered_transfer_rows(categories, rng))
    assert result.verdict == REPRODUCES and result.correlation is not None
    assert result.correlation.p_value < 1e-4  # over tasks, it looks certain
    assert result.robustness is not None and result.robustness.survives is False
    assert verdict_cell(result) == f"✓ reproduces ({NOT_SURVIVING})"
    assert robustness_cell(result).startswith("fails: ρ=")
    assert "(30 tasks in 3 categories)" in robustness_cell(result)
    # the difficulty-controlled rho beside it, the same number the finding shows
    partial = re.search(r"partial ρ=([-+0-9.]+), category bootstrap", robustness_cell(result))
    assert partial is not None and f"partial ρ={float(partial.group(1)):.3f}" in result.run_text
    assert robustness_summary([result]).endswith(
        "0 of the 1 ✓ verdicts it could recheck survive it; not: 3.1-ft-icl-correlation.")


def test_the_same_values_with_categories_unrelated_to_them_survive() -> None:
    rng = np.random.default_rng(0)
    categories = [name for name in ("A", "B", "C") for _ in range(10)]
    rows = clustered_transfer_rows(categories, rng)
    shuffled = dict(zip(sorted({record["task"] for record in rows}),
                        rng.permutation(categories), strict=True))
    result = ft_icl_result([{**record, "category": shuffled[record["task"]]}
                            for record in rows])
    assert result.verdict == REPRODUCES
    assert result.robustness is not None and result.robustness.survives is True
    assert verdict_cell(result) == "✓ reproduces"
    assert robustness_cell(result).startswith("holds: ρ=")
    assert "1 of the 1 ✓ verdicts it could recheck survive it." in robustness_summary([result])


def frame_with_seeds(seeds: int) -> pd.DataFrame:
    """The synthetic miniature (seeds 0 and 1 at ±0.05 around each value) with ``seeds`` of
    them: seed 2 sits on the value, so three seeds spread with std 0.05 exactly."""
    rows = build_rows(num_tasks=8)
    for index, record in enumerate(rows):  # eight tasks in four categories
        rows[index] = {**record, "category": f"cat{int(record['task'][4:7]) % 4}"}
    if seeds == 1:
        return pd.DataFrame.from_records(rows).query("seed == 0")
    third = [{**record, "seed": 2, "value": record["value"] + 0.05} for record in rows
             if record["method"] == "finetune" and record["seed"] == 0]
    return pd.DataFrame.from_records(rows + third)


def report_texts(frame: pd.DataFrame
                 ) -> tuple[str, str, dict[str, str], list[FindingResult]]:
    """The HTML and Markdown report of ``frame`` (no figures), each section's tables and the
    findings."""
    manifest = RunManifest.model_validate(manifest_dict())
    analysis = analyse(frame, manifest, n_boot=50)
    findings = evaluate_findings(analysis, n_boot=50)
    sections = {key: section.tables_html() for key, section in analysis.sections.items()}
    return (render_html(analysis, findings, {}),
            render_markdown(analysis, findings, {}, Path(".")), sections, findings)


def test_one_seed_is_said_and_no_spread_is_shown() -> None:
    html, markdown, sections, _ = report_texts(frame_with_seeds(1))
    assert "1 fine-tuning seed behind every k-shot fine-tuning number" in markdown
    assert "1 fine-tuning seed behind every" in html and "no spread across seeds" in html
    assert not any("Seed spread" in text for text in sections.values())


def test_three_seeds_are_said_and_every_section_shows_their_spread_and_robustness() -> None:
    """Three seeds: the header says so and each fine-tuning section shows their spread. Four
    categories: each finding with a verdict is rechecked, and the column says how."""
    html, markdown, sections, findings = report_texts(frame_with_seeds(3))
    assert "3 fine-tuning seeds behind every k-shot fine-tuning number" in markdown
    assert "3 fine-tuning seeds" in html
    for key in FINETUNING_SECTIONS:
        text = sections[key]
        assert "Seed spread of the 5-shot fine-tuning loss" in text, key
        assert "3 seeds per task" in text, key
        assert "median per-task std across seeds 0.050" in text, key  # planted: std 0.05
    assert "<th>Category bootstrap</th>" in html and "| Category bootstrap |" in markdown
    assert "Category bootstrap (categories, then tasks within them, resampled)" in markdown
    assert {result.finding.id for result in findings} == {f.id for f in PAPER_FINDINGS}
    assert not [finding.id for finding in PAPER_FINDINGS if finding.robustness is None]
    for result in findings:
        if result.verdict == UNDEFINED:  # e.g. no reverse-annealing model: nothing to recheck
            assert result.robustness is None, result.finding.id
            continue
        assert result.robustness is not None, result.finding.id
        assert "category bootstrap 95% CI" in result.robustness.text, result.finding.id
        assert "in 4 categories" in result.robustness.text, result.finding.id


@pytest.mark.parametrize("categories", [1, 0])
def test_without_two_categories_the_column_says_why(categories: int) -> None:
    frame = frame_with_seeds(1)
    frame = (frame.assign(category="only") if categories else frame.drop(columns="category"))
    result = ft_icl_result(frame.to_dict("records"))
    assert result.robustness is not None and result.robustness.survives is None
    reason = "1 category" if categories else "no task categories recorded"
    assert reason in robustness_cell(result) and verdict_cell(result) == "✓ reproduces"
    assert "no ✓ verdict could be rechecked" in robustness_summary([result])


def test_an_undefined_verdict_is_not_rechecked() -> None:
    """Two tasks: nothing to resample, and the column says nothing rather than fail."""
    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    frame = frame_with_seeds(1)
    frame = frame[frame["task"].isin(["task000_unseen", "task001_unseen"])]
    results = evaluate_findings(analyse(frame, manifest, n_boot=20), n_boot=20)
    undefined = [result for result in results if result.verdict == "undefined"]
    assert undefined and all(result.robustness is None for result in undefined)
    assert all(robustness_cell(result) == "—" for result in undefined)
    assert robustness_summary(undefined) == "Category bootstrap: no ✓ verdict to recheck."


def test_the_header_says_one_seed_count_or_a_range() -> None:
    assert SeedCount(3, 3, 60).describe() == (
        "3 fine-tuning seeds behind every k-shot fine-tuning number (k-shot draw, LoRA "
        "initialisation, dropout), averaged per task; each section shows their spread")
    assert SeedCount(1, 3, 60).describe().startswith("1–3 fine-tuning seeds behind every")
    assert SeedCount(1, 1, 60).describe().startswith("1 fine-tuning seed behind every")


def test_seeds_are_counted_on_k_shot_fine_tuning_test_losses_only() -> None:
    """Two seeds per fine-tuned cell; more rows of other kinds must not count: ICL, 0-shot,
    ROUGE-L, train split."""
    rows = []
    common = {"model": "m", "checkpoint_step": 10, "task": "t", "context": "none"}
    for seed in (0, 1):
        for shots in (5, 10):
            rows.append({**common, "method": "finetune", "shots": shots, "split": "test",
                         "metric": "loss", "seed": seed, "value": 1.0})
    for seed in range(2, 6):
        rows += [{**common, "method": "icl", "shots": 5, "split": "test", "metric": "loss"},
                 {**common, "method": "finetune", "shots": 0, "split": "test",
                  "metric": "loss"},
                 {**common, "method": "finetune", "shots": 5, "split": "test",
                  "metric": "rougeL"},
                 {**common, "method": "finetune", "shots": 5, "split": "train",
                  "metric": "loss"}]
        for extra in rows[-4:]:
            extra |= {"seed": seed, "value": 2.0}
    assert finetune_seed_count(pd.DataFrame(rows)) == SeedCount(2, 2, 2)


def record_bootstrap_settings(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                              calls: list[tuple[Any, Any]] | None = None
                              ) -> list[tuple[Any, Any]]:
    """Replace ``module.name`` (a bootstrap) by one that records each call's ``n_boot`` and
    ``seed`` in ``calls``, then runs it; returns ``calls``."""
    calls = [] if calls is None else calls
    original = getattr(module, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs.get("n_boot"), kwargs.get("seed")))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def test_every_recheck_runs_with_the_reports_bootstrap_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every category-block bootstrap behind the robustness column draws the report's number of
    resamples from the report's seed, so that the same seed gives the same column (a check
    left at the defaults, or unseeded, would not)."""
    import inspect
    import sys

    calls: list[tuple[Any, Any]] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("itransfer.analysis") and inspect.isfunction(
                getattr(module, "block_bootstrap", None)):
            record_bootstrap_settings(monkeypatch, module, "block_bootstrap", calls)
    manifest = RunManifest.model_validate(manifest_dict())
    analysis = analyse(frame_with_seeds(3), manifest, n_boot=50)

    def column(seed: int) -> list[str | None]:
        findings = evaluate_findings(analysis, n_boot=37, seed=seed)
        return [None if result.robustness is None else result.robustness.text
                for result in findings]

    first = column(11)
    assert calls and set(calls) == {(37, 11)}
    assert column(11) == first
    calls.clear()
    assert column(12) != first
    assert set(calls) == {(37, 12)}


# Each finding's rechecks in the order the column shows them (the report's labels): what is
# rechecked, at which steps, and which rho is a note beside the verdict.
ROBUSTNESS_LABELS = {
    "3.1-it-harms-transfer": ["IT none vs PT none (loss): IT − PT",
                              "IT exemplars vs PT none (loss): IT − PT"],
    "3.1-it-harms-transfer-rouge": ["IT none vs PT none (ROUGE-L recall): IT − PT",
                                    "IT exemplars vs PT none (ROUGE-L recall): IT − PT"],
    "3.1-it-harms-transfer-within-context": [
        "IT exemplars vs PT exemplars (loss): IT − PT",
        "IT exemplars vs PT exemplars (ROUGE-L recall): IT − PT"],
    "3.1-it-improves-icl": ["ICL IT − PT"],
    "3.1-ft-icl-correlation": ["ρ", "partial ρ"],
    "3.2-less-data-helps": ["ICL smallest − largest limit", "FT smallest − largest limit"],
    "3.2-delta-correlation": ["ρ", "partial ρ"],
    "4-uniform-overfits-small": ["uniform − proportional, train loss on the small tasks",
                                 "uniform − proportional, test loss on the small tasks"],
    "5.1-early-phase-correlation": ["ρ_early (inside ±0.4)", "partial ρ_early"],
    "5.1-late-phase-correlation": ["ρ_late", "ρ_late − ρ_early", "partial ρ_late"],
    "5.1-icl-improves-throughout": ["0→100", "100→200", "200→300"],
    "5.1-forgetting-then-recovery": ["0→100", "100→300"],
    "5.2-mixing-reduces-forgetting": ["step 100: with − without", "step 200: with − without",
                                      "step 300: with − without"],
    "5.2-mixing-improves-icl": ["step 300: with − without"],
}


def test_each_findings_rechecks_are_labelled_as_the_column_reads_them() -> None:
    _, _, _, findings = report_texts(frame_with_seeds(3))
    labels = {}
    for result in findings:
        if result.robustness is None or result.finding.id.startswith("4-proportional"):
            continue  # 4-proportional-best's checks name rankings, tested in test_analysis
        parts = result.robustness.text.split("; ")
        labels[result.finding.id] = [re.split(r"=[+-]|: category bootstrap", part)[0]
                                     for part in parts]
    assert labels == ROBUSTNESS_LABELS
    # planted: mixing lowers the loss by 0.2 on every task, less data lowers both losses, IT
    # raises the fine-tuning loss and lowers the ICL loss on every task: each recheck's CI is
    # on its claim's side, so these survive (a recheck testing the other side would not)
    holding = {"5.2-mixing-reduces-forgetting", "5.2-mixing-improves-icl",
               "3.2-less-data-helps", "3.1-it-harms-transfer", "3.1-it-improves-icl"}
    for result in findings:
        if result.finding.id in holding:
            assert result.robustness is not None, result.finding.id
            assert result.robustness.survives is True, result.finding.id
