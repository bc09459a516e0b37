"""Adding a section is one module: a toy section written to a temporary folder is registered
when imported, validated and planned from an experiment YAML, analysed, drawn and judged in the
report; what it names wrongly fails at import."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from itransfer.analysis import registry
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.report import write_report
from itransfer.analysis.run import analyse
from itransfer.analysis.verdicts import registered_findings
from itransfer.config.packaged import packaged_config_dir
from itransfer.eval.results import ResultsTable
from itransfer.experiments.definition import load_experiment
from itransfer.experiments.pipeline import plan_evaluations
from itransfer.runs import eval_plan
from itransfer.runs.eval_plan import EvalPlan, Need
from test_analysis import build_rows, make_run, manifest_dict

# A complete section in one module: YAML keys, analysis, one figure and one finding. The
# placeholders let the failure tests below break one thing at a time.
TOY_MODULE = '''
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from itransfer.analysis import plotting
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.verdicts import REPRODUCES, Finding, FindingResult, BootstrapOptions
from itransfer.config.schema import EvalConfig
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.registry import Section, register_section
from itransfer.runs.eval_plan import EvalPlan, Need

FIGURE_9 = "Figure 9 (left)"


@dataclass(frozen=True)
class ToyAnalysis:
    section: ToySection
    mean_icl: float

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: ToySection, *,
                n_boot: int, seed: int) -> ToyAnalysis:
        icl = frame[(frame["model"] == section.model) & (frame["method"] == "icl")
                    & (frame["metric"] == "loss")]
        return cls(section=section, mean_icl=float(icl["value"].mean()))

    def tables_html(self) -> str:
        return f"<p>toy: mean ICL loss {self.mean_icl:.4f}</p>"


def draw(analysis: RunAnalysis, path: Path) -> Path | None:
    toy = analysis.of(ToyAnalysis)
    if toy is None:
        return None
    figure, (axes,) = plotting.new_figure()
    axes.bar([0], [toy.mean_icl])
    return plotting.save(figure, path)


def judge(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions) -> FindingResult:
    toy = analysis.of(ToyAnalysis)
    return FindingResult(finding, REPRODUCES, toy.mean_icl, None,
                         f"mean ICL loss {toy.mean_icl:.3f}")


CLAIM = Finding(id=FINDING_ID, paper_section="3.3", section="toy", figure=CITED,
                claim="A toy claim", kind="direction", paper_value=None, paper_p=None,
                paper_text="toy text", how_to_compute="the mean", evaluate=judge)


@register_section("toy")
class ToySection(Section):
    title = "Toy: mean ICL loss"
    paper_section = "3.3"
    analysis = ToyAnalysis
    plots = (PaperFigure(DRAWN, "fig9_toy.png", draw),)
    EXTRA
    findings = (CLAIM,)

    model: str

    def model_labels(self) -> list[str]:
        return [self.model]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return [Need(self.model, "final", EvalPlan(icl=True))]
'''


@pytest.fixture()
def import_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Callable[..., ModuleType]:
    """Import a toy section module written to ``tmp_path``, into a copy of the registry."""
    monkeypatch.setattr(registry, "SECTION_TYPES", dict(registry.section_types()))
    monkeypatch.syspath_prepend(str(tmp_path))

    def write_and_import(*, finding_id: str = "3.3-toy", cited: str = "FIGURE_9",
                         drawn: str = "FIGURE_9", extra: str = "") -> ModuleType:
        source = (TOY_MODULE.replace("FINDING_ID", repr(finding_id))
                  .replace("CITED", cited).replace("DRAWN", drawn).replace("EXTRA", extra))
        (tmp_path / "toy_section.py").write_text(source, encoding="utf-8")
        monkeypatch.delitem(sys.modules, "toy_section", raising=False)
        return importlib.import_module("toy_section")

    return write_and_import


def test_a_section_in_one_module_is_registered_planned_analysed_and_reported(
        tmp_path: Path, import_toy: Callable[..., ModuleType]) -> None:
    toy = import_toy()
    # registered in the paper's order (§3.3: after §3.2), with its figure and finding
    assert list(registry.SECTION_TYPES) == ["transfer", "data_limits", "toy", "samplers",
                                          "trajectory", "mixing", "heldout_groups"]
    assert toy.ToySection.figures == ("Figure 9 (left)",)
    ids = [finding.id for finding in registered_findings()]
    before_toy = [finding.id for key in ("transfer", "data_limits")
                  for finding in registry.SECTION_TYPES[key].findings]
    assert ids.index("3.3-toy") == len(before_toy) and ids[:len(before_toy)] == before_toy

    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "variants": {"it-a": {}},
                                    "sections": {"toy": {"model": "it-a"}}}))
    experiment = load_experiment(path)
    assert isinstance(experiment.spec.sections["toy"], toy.ToySection)
    assert plan_evaluations(experiment)[("it-a", "final")] == EvalPlan(icl=True)

    manifest = manifest_dict()
    manifest["sections"]["toy"] = {"model": "it-uniform"}
    run_dir = make_run(tmp_path, build_rows(num_tasks=8), manifest)
    frame = ResultsTable(run_dir).read()
    analysis = analyse(frame, RunManifest.model_validate(manifest), n_boot=10)
    expected = frame[(frame["model"] == "it-uniform") & (frame["method"] == "icl")
                     & (frame["metric"] == "loss")]["value"].mean()
    assert analysis.of(toy.ToyAnalysis).mean_icl == pytest.approx(expected)

    paths = write_report(run_dir, n_boot=10)
    html = paths.html.read_text(encoding="utf-8")
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert paths.figures["Figure 9 (left)"].name == "fig9_toy.png"
    heading = html.index("<h2>Toy: mean ICL loss</h2>")
    assert html.index("<h2>§3.2") < heading < html.index("<h2>§4")
    assert heading < html.index("<figcaption>Figure 9 (left)</figcaption>") < html.index(
        "<h2>§4")
    assert f"toy: mean ICL loss {expected:.4f}" in html
    assert ("<td>3.3</td><td>9 (left)</td><td>A toy claim</td><td>toy text</td>"
            f"<td>mean ICL loss {expected:.3f}</td>") in html
    assert f"| 3.3 | A toy claim | toy text | mean ICL loss {expected:.3f} | — |" in markdown
    assert "- Figure 9 (left): [fig9_toy.png](figures/fig9_toy.png)" in markdown


@pytest.mark.parametrize(("change", "message"), [
    ({"cited": "'Figure 8 (left)'"}, r"cites 'Figure 8 \(left\)', which no section draws"),
    ({"cited": "'Figure 9 (right)'"}, r"cites 'Figure 9 \(right\)', which no section draws"),
    ({"cited": "'Fig. 9 left'"}, r"'Fig. 9 left' is not a figure name"),
    ({"drawn": "'Figure 1 (left)'", "cited": "'Figure 1 (left)'"},
     r"figure\(s\) \['Figure 1 \(left\)'\] drawn twice"),
    ({"finding_id": "3.1-ft-icl-correlation"}, "finding '3.1-ft-icl-correlation' is defined twice"),
    ({"extra": "figures = ('Figure 9 (left)', 'Figure 9 (right)')"},
     r"figures \['Figure 9 \(left\)', 'Figure 9 \(right\)'\] are not drawn by its plots"),
])
def test_a_name_that_matches_nothing_fails_at_import(
        import_toy: Callable[..., ModuleType], change: dict[str, str], message: str) -> None:
    registered = dict(registry.SECTION_TYPES)
    with pytest.raises(ValueError, match=message):
        import_toy(**change)
    assert registered == registry.SECTION_TYPES  # nothing half-registered


def test_a_finding_names_a_panel_its_figure_has() -> None:
    from itransfer.analysis.sections.trajectory import EARLY_PHASE_CORRELATION

    assert EARLY_PHASE_CORRELATION.figure_cell == "4 (centre)"
    with pytest.raises(ValueError, match=r"Figure 4 \(centre, right\) has no panel 'left'"):
        type(EARLY_PHASE_CORRELATION)(**{**vars(EARLY_PHASE_CORRELATION), "panel": "left"})


@pytest.mark.parametrize(("stem", "key"), [("sec3_1_transfer", "transfer"),
                                           ("sec3_2_data_limits", "data_limits"),
                                           ("sec4_sampling", "samplers")])
def test_the_papers_sections_ask_for_final_checkpoints_and_the_zero_shot_difficulty(
    stem: str, key: str,
) -> None:
    """What each section has the pipeline evaluate: its models' final checkpoints; §3.1 and
    §3.2 also the pre-trained model's zero-shot loss, the task difficulty their partial ρ
    controls for; §4 the seen tasks and ICL of every sampler."""
    experiment = load_experiment(packaged_config_dir() / "paper" / f"{stem}.yaml", scale="tiny")
    section = experiment.spec.sections[key]
    needs = section.needs(experiment.base.eval)
    assert {need.when for need in needs} == {"final"}
    if key == "samplers":
        assert [need.model for need in needs] == section.model_labels()
        assert all(need.plan.seen and need.plan.icl for need in needs)
    else:
        assert {need.model for need in needs} == {*section.model_labels(), eval_plan.PRETRAINED}
        assert needs[-1] == Need(eval_plan.PRETRAINED, "final", eval_plan.DIFFICULTY_PLAN)
        assert all(need.plan.icl and need.plan.shots for need in needs[:-1])
