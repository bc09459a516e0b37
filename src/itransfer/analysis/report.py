"""One run's report: the paper's findings beside this run's, its figures, tables and provenance.

    from itransfer.analysis.report import write_report
    paths = write_report(Path("runs/quickstart"))   # → report.html, report.md, figures/*.png

``report.html`` is self-contained (figures embedded as base64 PNG) so it can be mailed or
archived alone; ``report.md`` is the short summary. Both are written atomically. The report
reads only ``manifest.json`` and the results table, never checkpoints.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from itransfer.analysis.html import details, table
from itransfer.analysis.manifest import RunManifest, read_manifest
from itransfer.analysis.monitor import (
    MonitorComparison,
    compare_with_grid,
    monitored_models,
    plot_monitor,
)
from itransfer.analysis.plotting import draw_all
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.scale import NEAR_UNIFORM_SHARE, ScaleAssessment, assess_scale, best_rouge
from itransfer.analysis.verdicts import (
    ALPHA,
    FAILS,
    NOT_SIGNIFICANT,
    PARTLY,
    REPRODUCES,
    UNDEFINED,
    WEAK_RHO,
    FindingResult,
    evaluate_findings,
    holm_summary,
    robustness_summary,
)
from itransfer.eval.results import ResultsTable
from itransfer.runtime.atomic_files import atomic_write_text

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
# A symbol beside each verdict so the table reads without colour.
VERDICT_MARKS = {REPRODUCES: "✓", NOT_SIGNIFICANT: "≈", PARTLY: "◐", FAILS: "✗", UNDEFINED: "?"}


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    figures: dict[str, Path]


@dataclass(frozen=True)
class RunFindings:
    """A run folder's analysis, its findings and how far its scale lets them speak."""

    analysis: RunAnalysis
    findings: list[FindingResult]
    scale: ScaleAssessment
    frame: pd.DataFrame


def run_findings(run_dir: Path, *, n_boot: int = 2000, seed: int = 0) -> RunFindings:
    """Analyse a run folder (manifest + results table) and evaluate the paper's findings."""
    manifest = read_manifest(run_dir)
    frame = ResultsTable(run_dir).read()
    analysis = analyse(frame, manifest, n_boot=n_boot, seed=seed)
    findings = evaluate_findings(analysis, n_boot=n_boot, seed=seed)
    return RunFindings(analysis, findings, assess_scale(frame, analysis, findings), frame)


def write_report(run_dir: Path, *, n_boot: int = 2000, seed: int = 0) -> ReportPaths:
    """Analyse a run folder (manifest + results table) and write its HTML and Markdown report."""
    run_dir = Path(run_dir)
    analysed = run_findings(run_dir, n_boot=n_boot, seed=seed)
    analysis, findings, scale = analysed.analysis, analysed.findings, analysed.scale
    figures = draw_all(analysis, run_dir / FIGURES_DIR)
    monitors = _monitor_comparisons(run_dir, analysed, figures)
    html_path, markdown_path = run_dir / REPORT_HTML, run_dir / REPORT_MD
    atomic_write_text(html_path, render_html(analysis, findings, figures, scale, monitors))
    atomic_write_text(markdown_path,
                      render_markdown(analysis, findings, figures, run_dir, scale, monitors))
    return ReportPaths(html=html_path, markdown=markdown_path, figures=figures)


def _monitor_comparisons(run_dir: Path, analysed: RunFindings, figures: dict[str, Path]
                         ) -> list[MonitorComparison]:
    """The transfer monitor of every model trained with it, beside the grid; its figure joins
    ``figures`` as "Monitor (<model>)"."""
    manifest = analysed.analysis.manifest
    comparisons = []
    for label, rows in monitored_models(run_dir, manifest).items():
        comparisons.append(compare_with_grid(analysed.frame, manifest, label, rows))
        figures[f"Monitor ({label})"] = plot_monitor(
            rows, run_dir / FIGURES_DIR / f"monitor-{label}.png")
    return comparisons


def _monitor_html(monitors: list[MonitorComparison], figures: Mapping[str, Path]) -> list[str]:
    if not monitors:
        return []
    parts = ["<h2>Transfer monitor (beyond the paper)</h2>",
             "<p>Probe tasks are never evaluation tasks, so the monitor and the grid measure "
             "different tasks, and k may differ: compare directions and ranks over "
             "steps, not values.</p>"]
    for compared in monitors:
        name = f"Monitor ({compared.model})"
        if name in figures:
            parts.append(_image(name, figures[name]))
        parts += [f"<p>{html.escape(compared.sentence())}</p>",
                  table(compared.table.set_index("step"), index=True)]
    return parts


# --- formatting helpers ------------------------------------------------------------------


def _paper_cell(result: FindingResult) -> str:
    return result.finding.paper_text


def verdict_cell(result: FindingResult, scale: ScaleAssessment | None = None) -> str:
    verdict = f"{VERDICT_MARKS.get(result.verdict, '')} {result.verdict}".strip()
    if not survives_blocks(result):
        verdict += f" ({NOT_SURVIVING})"
    return f"{verdict} (pipeline check)" if scale is not None and scale.pipeline_check else verdict


NOT_SURVIVING = "does not survive the category bootstrap"


def survives_blocks(result: FindingResult) -> bool:
    """False only for a ✓ whose tests fail under the category-block bootstrap: the verdict
    then rests on the tasks being independent draws."""
    robustness = result.robustness
    return not (result.verdict == REPRODUCES and robustness is not None
                and robustness.survives is False)


def robustness_cell(result: FindingResult) -> str:
    """The findings table's robustness column: the tests under the category bootstrap."""
    robustness = result.robustness
    if robustness is None:
        return "—"
    mark = {True: "holds: ", False: "fails: ", None: ""}[robustness.survives]
    return mark + robustness.text


def seeds_text(analysis: RunAnalysis) -> str:
    """The header line on fine-tuning seeds: how many stand behind every fine-tuning number."""
    return f"Fine-tuning seeds: {analysis.finetune_seeds.describe()}."


def _parameters_text(count: int | None) -> str:
    if count is None:
        return "unknown"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.1f}{unit} ({count:,})"
    return f"{count:,}"


def _scale_summary(scale: ScaleAssessment) -> str:
    """One sentence: the model's size and how far the run's losses are from a uniform guess."""
    parts = [f"model: {_parameters_text(scale.num_parameters)} parameters"]
    if scale.uniform_loss is not None:
        parts.append(f"uniform-guess loss ln {scale.vocab_size} = {scale.uniform_loss:.2f}")
    losses = scale.models[["icl_loss", "finetune_loss_k>0"]].min(axis=1).dropna()
    if not losses.empty:
        parts.append(f"best mean unseen loss {losses.min():.2f}")
    parts += best_rouge(scale.models)
    return "; ".join(parts)


def _pipeline_check_text(scale: ScaleAssessment) -> str:
    return ("Every verdict below is a pipeline check, not a finding: "
            + "; ".join(scale.pipeline_check_reasons) + ".")


def _image(name: str, path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                   for key, value in pairs)
    return f'<table class="data">{rows}</table>'


# --- HTML ----------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #111; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
table.data th, table.data td { border: 1px solid #999; padding: 3px 7px; text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; font-style: italic; }
.verdict { font-weight: bold; white-space: nowrap; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


def render_html(analysis: RunAnalysis, findings: list[FindingResult],
                figures: Mapping[str, Path], scale: ScaleAssessment | None = None,
                monitors: list[MonitorComparison] | None = None) -> str:
    manifest = analysis.manifest
    title = manifest.title or manifest.experiment or "itransfer run"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _key_values([
            ("experiment", manifest.experiment),
            ("generated", datetime.now(timezone.utc).isoformat(timespec="seconds")),
            ("results rows", analysis.num_rows),
            ("git commit", _git_text(manifest.git)),
            ("hardware", _hardware_text(manifest.hardware)),
            ("fine-tuning seeds", analysis.finetune_seeds.describe()),
        ]),
        *([_scale_html(scale)] if scale is not None else []),
        "<h2>Findings: the paper vs this run</h2>",
        _findings_html(findings, scale),
    ]
    for key, section_analysis in analysis.sections.items():
        section = manifest.sections[key]
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        # A figure its section has nothing to draw for in this run is left out; a name that
        # matches no drawing cannot occur (register_section refuses it).
        parts.extend(_image(name, figures[name]) for name in section.figures if name in figures)
        parts.append(section_analysis.tables_html())
    parts.extend(_monitor_html(monitors or [], figures))
    parts.extend(_provenance_html(manifest))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _scale_html(scale: ScaleAssessment) -> str:
    parts = ["<h2>Scale and power</h2>", f"<p>{html.escape(_scale_summary(scale))}.</p>"]
    if scale.pipeline_check:
        parts.append(f"<p><b>{html.escape(_pipeline_check_text(scale))}</b></p>")
    parts.append(details(
        f"Mean unseen-task loss and ROUGE-L per model ({len(scale.models)} models)",
        "<p>ROUGE-L recall is the paper's metric (§2: \"'Rouge-L r'\"); the F-measure beside "
        "it is what Wang et al.'s SNI scorer reports. A model whose mean loss reaches "
        f"{NEAR_UNIFORM_SHARE:.0%} of the uniform-guess loss has learned next to nothing."
        "</p>" + table(scale.models)))
    if not scale.power.empty:
        parts.append(
            "<p>Tasks behind each correlation, the smallest |ρ| they make significant "
            "(p &lt; 0.05, two-sided) and the |ρ| they detect with 80% power:</p>"
            + table(scale.power))
    return "".join(parts)


def test_cell(result: FindingResult) -> str:
    """The test behind a verdict, with its Holm-adjusted p-value."""
    if not result.test:
        return "—"
    holm_text = "" if result.holm_p is None else f" · Holm-adjusted p={result.holm_p:.2g}"
    return result.test + holm_text


def _findings_html(findings: list[FindingResult], scale: ScaleAssessment | None = None) -> str:
    if not findings:
        return "<p>This run has no section of the paper to compare.</p>"
    header = ("<tr><th>§</th><th>Figure</th><th>Claim</th><th>Paper</th><th>This run</th>"
              "<th>Test</th><th>Category bootstrap</th><th>Verdict</th></tr>")
    rows = []
    for result in findings:
        finding = result.finding
        cells = [finding.paper_section, finding.figure_cell, finding.claim, _paper_cell(result),
                 result.run_text, test_cell(result), robustness_cell(result)]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
                    + f'<td class="verdict">{html.escape(verdict_cell(result, scale))}'
                    + "</td></tr>")
    legend = (f"<p>✓ reproduces: the claimed direction holds everywhere and its test, "
              f"one-sided in the claimed direction, passes at α = {ALPHA} (every test, for a "
              "claim made of several) · ≈ the direction holds, a test does not pass · ◐ partly: "
              "the direction holds in more than half of the claim's parts and no part is "
              "significant the other way · ✗ does not reproduce (always when a part is "
              "significant the other way) · ? undefined (too few tasks or points). A paired "
              "test's direction is its tasks' signed ranks, not its mean. A correlation is "
              f"weak when its 95% CI lies inside (−{WEAK_RHO}, {WEAK_RHO}). "
              f"{html.escape(holm_summary(findings))}</p><p>{html.escape(BLOCK_LEGEND)} "
              f"{html.escape(robustness_summary(findings))}</p>")
    how = "".join(f"<li><b>{html.escape(r.finding.id)}</b>: "
                  f"{html.escape(r.finding.how_to_compute)}</li>" for r in findings)
    return (f'<table class="data">{header}{"".join(rows)}</table>{legend}'
            + details("How each number is computed", f"<ul>{how}</ul>"))


BLOCK_LEGEND = ("Category bootstrap: tasks of one category share source datasets, so each test "
                "is rerun resampling categories with replacement, then tasks within each drawn "
                "category (a correlation's CI, a paired mean difference's CI, a ranking's "
                "share first); a ✓ whose tests fail there is marked \"" + NOT_SURVIVING
                + "\".")


def _hardware_text(record: Mapping[str, Any]) -> str:
    """``1× NVIDIA H200`` or ``CPU (2 cores)``: which machine made these numbers."""
    if not record:
        return "hardware not recorded"
    gpus = list(record.get("gpus") or ())
    if gpus:
        return " + ".join(f"{gpus.count(name)}× {name}" for name in dict.fromkeys(gpus))
    return f"CPU ({record.get('cpu_count')} cores)"


def _git_text(git: Mapping[str, Any]) -> str:
    commit = git.get("commit")
    if not commit:
        return "unknown"
    return f"{commit}{' (uncommitted changes)' if git.get('dirty') else ''}"


def _provenance_html(manifest: RunManifest) -> list[str]:
    models = pd.DataFrame.from_records([
        {"label": label, "kind": info.kind, "sampler": info.sampler,
         "data_limit": info.data_limit, "mixing_every": info.mixing_every,
         "budget": info.budget, "total_steps": info.total_steps, "final_step": info.final_step,
         "trajectory_steps": ", ".join(str(step) for step in info.trajectory_steps)}
        for label, info in manifest.models.items()
    ])
    if not models.empty:  # whole step counts (not 30.0000), and "—" where none is recorded
        models["total_steps"] = pd.Series([info.total_steps for info in manifest.models.values()],
                                          index=models.index, dtype=object)
    timings = sorted(manifest.timings.items())
    return [
        "<h2>Provenance</h2>",
        "<h3>Models</h3>", table(models),
        "<h3>Stage timings (seconds)</h3>",
        _key_values((name, f"{seconds:.1f}") for name, seconds in timings) if timings
        else "<p><em>none recorded</em></p>",
        "<h3>Versions</h3>", _key_values(sorted(manifest.versions.items())),
        "<h3>Git</h3>", _key_values(sorted(manifest.git.items())),
        "<h3>Resolved configuration</h3>",
        details("config", f"<pre>{html.escape(json.dumps(manifest.config, indent=1))}</pre>"),
    ]


# --- Markdown ------------------------------------------------------------------------------


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(analysis: RunAnalysis, findings: list[FindingResult],
                    figures: Mapping[str, Path], run_dir: Path,
                    scale: ScaleAssessment | None = None,
                    monitors: list[MonitorComparison] | None = None) -> str:
    manifest = analysis.manifest
    lines = [f"# {manifest.title or manifest.experiment or 'itransfer run'}", "",
             f"Experiment `{manifest.experiment}` · {analysis.num_rows} result rows · "
             f"git {_git_text(manifest.git)} · {_hardware_text(manifest.hardware)} · "
             f"full report: [{REPORT_HTML}]({REPORT_HTML})", "", seeds_text(analysis), ""]
    if scale is not None:
        lines += [f"Scale: {_scale_summary(scale)}.", ""]
        if scale.pipeline_check:
            lines += [f"**{_pipeline_check_text(scale)}**", ""]
    if findings:
        lines += ["| § | Claim | Paper | This run | Test | Category bootstrap | Verdict |",
                  "|---|---|---|---|---|---|---|"]
        lines += [
            "| " + " | ".join(markdown_cell(cell) for cell in (
                result.finding.paper_section, result.finding.claim, _paper_cell(result),
                result.run_text, test_cell(result), robustness_cell(result),
                verdict_cell(result, scale))) + " |"
            for result in findings
        ]
        counts = pd.Series([result.verdict for result in findings]).value_counts()
        lines += ["", "Verdicts: " + ", ".join(f"{count} {verdict}"
                                               for verdict, count in counts.items()) + ". "
                  + holm_summary(findings) + " " + robustness_summary(findings), ""]
    else:
        lines += ["This run has no section of the paper to compare.", ""]
    if monitors:
        lines += ["## Transfer monitor (beyond the paper)", ""]
        lines += [f"- {compared.sentence()}" for compared in monitors] + [""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"- {name}: [{path.name}]({path.relative_to(run_dir).as_posix()})"
                  for name, path in figures.items()]
        lines.append("")
    return "\n".join(lines)
