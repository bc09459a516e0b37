"""The findings of several runs (model families) side by side, each as its own report has it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from itransfer.analysis.families import compare_families, render_families_markdown
from itransfer.analysis.report import run_findings
from itransfer.cli import app, main
from test_analysis import build_rows, make_run, manifest_dict


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    t5 = make_run(tmp_path / "t5", build_rows(num_tasks=12), manifest_dict())
    causal_manifest = manifest_dict(sections={"transfer"})
    causal_manifest["config"]["model"] = {"name_or_path": "itransfer:tiny-llama",
                                          "architecture": "causal"}
    causal = make_run(tmp_path / "causal", build_rows(num_tasks=12, seed=1), causal_manifest)
    t5_manifest = json.loads((t5 / "manifest.json").read_text())
    t5_manifest["config"]["model"] = {"name_or_path": "itransfer:tiny-t5", "architecture": "auto"}
    (t5 / "manifest.json").write_text(json.dumps(t5_manifest))
    return t5, causal


def test_each_family_column_holds_its_own_reports_verdicts(tmp_path: Path) -> None:
    t5, causal = _runs(tmp_path)
    runs = compare_families([t5, causal], n_boot=50)
    assert [run.label for run in runs] == ["seq2seq: itransfer:tiny-t5",
                                           "causal: itransfer:tiny-llama"]
    text = render_families_markdown(runs)
    header = next(line for line in text.splitlines() if line.startswith("| §"))
    assert header.endswith("| seq2seq: itransfer:tiny-t5 | causal: itransfer:tiny-llama |")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line != header]
    own = {"t5": run_findings(t5, n_boot=50), "causal": run_findings(causal, n_boot=50)}
    assert len(rows) == len(own["t5"].findings)  # every finding either run evaluated
    causal_ids = {result.finding.id for result in own["causal"].findings}
    assert causal_ids and causal_ids < {result.finding.id for result in own["t5"].findings}
    for result in own["t5"].findings:
        row = next(line for line in rows if result.finding.claim in line)
        t5_cell, causal_cell = row.split(" | ")[-2], row.split(" | ")[-1].rstrip(" |")
        assert result.run_text.split(";")[0] in t5_cell
        assert result.finding.paper_text in row
        if result.finding.id in causal_ids:
            other = next(r for r in own["causal"].findings if r.finding.id == result.finding.id)
            assert other.run_text.split(";")[0] in causal_cell
        else:
            assert causal_cell == "—"


def test_results_compare_command_writes_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t5, causal = _runs(tmp_path)
    out = tmp_path / "families.md"
    result = CliRunner().invoke(app, ["results", "compare", str(t5), str(causal), "--label",
                                      "T5", "--label", "Llama", "--n-boot", "20", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "| T5 | Llama |" in out.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["results", "compare", str(t5)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: compare needs at least two run folders"
