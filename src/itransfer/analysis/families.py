"""The paper's findings on several model families, side by side (e.g. T5 and a decoder-only LM).

Each family is its own run folder (its own pre-trained model, so its own experiment); this
module evaluates every run's findings exactly as its own report does and lays them out one row
per finding: the paper's number, then each family's number, test and verdict::

    itransfer compare runs/quickstart runs/quickstart-causal --out runs/families.md

A finding a run did not evaluate (its section was not run) shows as "—" for that run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from itransfer.analysis.manifest import read_manifest
from itransfer.analysis.report import (
    RunFindings,
    markdown_cell,
    run_findings,
    test_cell,
    verdict_cell,
)
from itransfer.analysis.verdicts import FindingResult, holm_summary, registered_findings
from itransfer.errors import ConfigError

MISSING = "—"


@dataclass(frozen=True)
class FamilyRun:
    label: str  # the column heading: the family and its model
    run_dir: Path
    analysed: RunFindings

    def result(self, finding_id: str) -> FindingResult | None:
        return next((r for r in self.analysed.findings if r.finding.id == finding_id), None)


def family_label(run_dir: Path) -> str:
    """``<architecture>: <model>`` from the run's manifest (its resolved config)."""
    model = read_manifest(run_dir).config.get("model", {})
    name = str(model.get("name_or_path") or "?")
    architecture = model.get("architecture")
    if architecture in (None, "auto"):
        architecture = _architecture_of(name)
    return f"{architecture}: {name}"


def _architecture_of(name: str) -> str:
    lowered = name.lower()
    return "seq2seq" if "t5" in lowered else "causal" if "llama" in lowered else "auto"


def compare_families(run_dirs: Sequence[Path], labels: Sequence[str] | None = None, *,
                     n_boot: int = 2000, seed: int = 0) -> list[FamilyRun]:
    if len(run_dirs) < 2:
        raise ConfigError("compare needs at least two run folders")
    if labels is not None and len(labels) != len(run_dirs):
        raise ConfigError(f"{len(labels)} labels for {len(run_dirs)} run folders")
    runs = []
    for index, run_dir in enumerate(run_dirs):
        label = labels[index] if labels is not None else family_label(run_dir)
        runs.append(FamilyRun(label, Path(run_dir),
                              run_findings(Path(run_dir), n_boot=n_boot, seed=seed)))
    return runs


def render_families_markdown(runs: Sequence[FamilyRun]) -> str:
    header = ["§", "Claim", "Paper", *(run.label for run in runs)]
    lines = ["# The paper's findings across model families", "",
             "Each column is one run, analysed exactly as its own report "
             "(verdict, then the number and the test it rests on).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for finding in registered_findings():
        results = [run.result(finding.id) for run in runs]
        if all(result is None for result in results):
            continue
        cells = [finding.paper_section, finding.claim, finding.paper_text]
        for run, result in zip(runs, results, strict=True):
            cells.append(MISSING if result is None else _family_cell(run, result))
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
    lines.append("")
    for run in runs:
        scale = run.analysed.scale
        lines.append(f"- **{run.label}** (`{run.run_dir}`): {holm_summary(run.analysed.findings)}"
                     + (" Pipeline check: its models barely leave the uniform guess."
                        if scale.pipeline_check else ""))
    return "\n".join(lines) + "\n"


def _family_cell(run: FamilyRun, result: FindingResult) -> str:
    test = test_cell(result)
    return f"{verdict_cell(result, run.analysed.scale)}: {result.run_text}" + (
        f" ({test})" if test else "")


def verdicts_by_family(runs: Sequence[FamilyRun]) -> Mapping[str, dict[str, str]]:
    """finding id → {family label: verdict}, for the findings any run evaluated."""
    table: dict[str, dict[str, str]] = {}
    for run in runs:
        for result in run.analysed.findings:
            table.setdefault(result.finding.id, {})[run.label] = result.verdict
    return table
