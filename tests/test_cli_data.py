"""``itransfer data summary`` and ``itransfer data show`` on real task files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from itransfer.cli import app
from itransfer.config import paper_constants as paper
from itransfer.config.schema import DataConfig
from itransfer.data.benchmark import bundled_sni_dir, open_benchmark

runner = CliRunner()


def test_summary_json_on_the_shared_slice(sni_slice: Path) -> None:
    result = runner.invoke(app, ["data", "summary", "--sni-dir", str(sni_slice), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    for key in ("seen", "unseen", "unseen_synthetic", "heldout_generalization", "excluded"):
        assert key in payload
    assert "task033_winogrande_answer_generation" in payload["unseen"]
    assert "task1447_drug_extraction_ade" in payload["heldout_generalization"]
    assert "task040_qasc_question_generation" in payload["seen"]
    assert not any(name.endswith(".json") for name in payload["seen"])
    assert payload["excluded"]["task352_coda-19_classification"]


def test_summary_table_and_run_record(sni_slice: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "summary", "--sni-dir", str(sni_slice), "--out", str(tmp_path / "out")],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "Question Generation" in result.output and "excluded" in result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["seen"] == 164
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["config"]["data"]["sni_dir"] == str(sni_slice)


def test_bundled_default_needs_no_sni_dir() -> None:
    assert bundled_sni_dir().is_dir()
    result = runner.invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["unseen"]) >= 10 and len(payload["seen"]) >= 40
    assert payload["heldout_generalization"]
    size = sum(f.stat().st_size for f in bundled_sni_dir().parent.rglob("*") if f.is_file())
    assert size < 10.5e6


def test_summary_puts_the_papers_counts_beside_the_bundled_slices() -> None:
    result = runner.invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output  # a slice differing from the paper is no error
    payload = json.loads(result.stdout)
    comparison = payload["paper_comparison"]
    groups = {(row["group"], row["what"]): row for row in comparison["groups"]}
    assert groups["seen", "tasks"] == {"group": "seen", "what": "tasks",
                                       "found": len(payload["seen"]), "paper": 619,
                                       "matches": False}
    assert groups["unseen", "tasks"]["paper"] == 93 and groups["unseen", "tasks"]["found"] == len(
        payload["unseen"])
    # Category counts against the task files' own "Categories", read here without the index.
    categories_of = {
        path.stem: json.loads(path.read_text(encoding="utf-8"))["Categories"]
        for path in bundled_sni_dir().glob("*.json")
    }
    rows = comparison["categories"]
    assert {row["what"] for row in rows if row["paper"] is not None} == set(
        paper.SEEN_CATEGORIES) | set(paper.UNSEEN_CATEGORIES)
    for row in rows:
        found = sum(row["what"] in categories_of[name] for name in payload[row["group"]])
        assert row["found"] == found, row
        assert row["matches"] == (None if row["paper"] is None else found == row["paper"]), row
    assert comparison["matches"] is False and comparison["differences"] == sum(
        row["matches"] is False for row in rows + comparison["groups"])

    table = runner.invoke(app, ["data", "summary"], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "✗ -" in table.output and "paper" in table.output
    assert f"{comparison['differences']} of {comparison['compared']} counts differ" in table.output


def test_show_prints_inputs_and_targets_exactly(sni_slice: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "show", "task040_qasc_question_generation", "--sni-dir", str(sni_slice),
         "--context", "exemplars", "-n", "2"],
        env={"COLUMNS": "60"},
    )
    assert result.exit_code == 0, result.output
    assert (
        "input: Fact: pesticides can harm animals.\noutput: What can harm animals?\n"
        "input: Fact: rain can help form soil.\n" in result.output
    )
    assert result.output.count("\ntarget\n") == 2


def test_show_evaluation_task_defaults_to_test_split(sni_slice: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "show", "task1342_amazon_us_reviews_title", "--sni-dir", str(sni_slice),
         "--context", "task_id", "-n", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "split=test" in result.output and "task_1342_amazon:" in result.output


def test_show_unknown_task_and_bad_split_are_errors(sni_slice: Path) -> None:
    result = runner.invoke(app, ["data", "show", "task999_nope", "--sni-dir", str(sni_slice)])
    assert result.exit_code != 0 and "task999_nope" in str(result.exception)
    result = runner.invoke(
        app, ["data", "show", "task040_qasc_question_generation", "--sni-dir", str(sni_slice),
              "--split", "dev"],
    )
    assert "--split dev" in str(result.exception)


def test_show_few_shot_lists_a_seeds_draw() -> None:
    task = "task1342_amazon_us_reviews_title"
    split = open_benchmark(DataConfig(), 0).split(task)
    shown = {}
    for seed in (0, 1):
        result = runner.invoke(app, ["data", "show", task, "--split", "few_shot", "-n", "5",
                                     "--draw-seed", str(seed)])
        assert result.exit_code == 0, result.output
        shown[seed] = [line.removeprefix("id ") for line in result.output.splitlines()
                       if line.startswith("id ")]
        # -n k shows exactly the k-shot set that seed fine-tunes on, in its order.
        assert shown[seed] == [i.id for i in split.few_shot_subset(5, seed=seed)]
    assert shown[0] != shown[1]
    result = runner.invoke(app, ["data", "show", task, "--split", "test", "--draw-seed", "1"])
    assert result.exit_code != 0 and "--draw-seed" in str(result.exception)
