"""The section registry, evaluation plans and the run manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from itransfer.analysis import registry
from itransfer.analysis.manifest import MANIFEST_VERSION, RunManifest, read_manifest
from itransfer.analysis.registry import SECTION_TYPES, Section
from itransfer.analysis.report import write_report
from itransfer.analysis.run import analysis_class
from itransfer.analysis.sections import PAPER_FINDINGS
from itransfer.analysis.sections.data_limits import DataLimitsSection
from itransfer.analysis.sections.mixing import MixingSection
from itransfer.analysis.sections.trajectory import TrajectorySection
from itransfer.analysis.sections.transfer import TransferSection
from itransfer.config.packaged import packaged_config_dir
from itransfer.config.schema import EvalConfig
from itransfer.errors import ConfigError, DataError
from itransfer.eval.results import ResultsTable
from itransfer.experiments.definition import load_experiment
from itransfer.experiments.pipeline import plan_evaluations
from itransfer.runs.eval_plan import PRETRAINED, EvalPlan, Need
from test_analysis import row

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "src" / "itransfer" / "configs" / "quickstart.yaml"


def plan(*, icl: bool = True, seen: bool = False, shots: tuple[int, ...] = (),
         contexts: tuple[str, ...] = ()) -> EvalPlan:
    return EvalPlan(icl=icl, seen=seen, shots=frozenset(shots), contexts=frozenset(contexts))


# --- evaluation plans ----------------------------------------------------------------------


def test_plans_merge_as_a_union_without_changing_either() -> None:
    first = plan(shots=(5,), contexts=("none",))
    second = plan(icl=False, seen=True, shots=(0, 5), contexts=("exemplars",))
    merged = first | second
    assert merged == plan(seen=True, shots=(0, 5), contexts=("none", "exemplars"))
    assert merged == second.merge(first)
    assert first == plan(shots=(5,), contexts=("none",))  # operands are left as they were
    assert EvalPlan() | first == first


def test_quickstart_plan_is_every_sections_needs_merged() -> None:
    plans = plan_evaluations(load_experiment(QUICKSTART))
    every_k, both = (0, 5, 10, 20, 40), ("none", "exemplars")
    assert plans == {
        # transfer (every k and context) and the trajectories' step 0 (5-shot, no context)
        (PRETRAINED, "final"): plan(shots=every_k, contexts=both),
        # transfer, samplers (seen tasks) and data_limits ("all" is this model)
        ("it-proportional", "final"): plan(seen=True, shots=every_k, contexts=both),
        ("it-uniform", "final"): plan(seen=True),
        ("it-limit10", "final"): plan(shots=(5,), contexts=("none",)),
        ("it-proportional", "trajectory"): plan(shots=(5,), contexts=("none",)),
        ("it-mix3", "trajectory"): plan(shots=(5,), contexts=("none",)),
    }


def test_trajectory_sections_need_the_pretrained_model_as_step_zero() -> None:
    needs = MixingSection.model_validate({"with": "a", "without": "b", "shots": 10}).needs(
        EvalConfig())
    expected = plan(shots=(10,), contexts=("none",))
    # k = 0 as well: the pre-trained model's zero-shot loss is the task-difficulty control
    assert needs == [Need("a", "trajectory", expected), Need("b", "trajectory", expected),
                     Need(PRETRAINED, "final", plan(shots=(0, 10), contexts=("none",)))]


def test_correlating_sections_measure_the_difficulty_control() -> None:
    """§3.2 asks for the pre-trained model's k = 0 loss although it trains no pre-trained cell."""
    section = DataLimitsSection.model_validate(
        {"models": {"10": "it-a", "all": "it-b"}, "delta": ["it-a", "it-b"], "shots": 5})
    needs = {need.model: need for need in section.needs(EvalConfig())}
    assert needs[PRETRAINED].plan == EvalPlan(shots=frozenset({0}),
                                              contexts=frozenset({"none"}))
    assert needs["it-a"].plan == plan(shots=(5,), contexts=("none",))


# --- sections in experiment YAML -----------------------------------------------------------


def _experiment(tmp_path: Path, sections: Any) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "variants": {"it-a": {}, "it-b": {}},
                                    "sections": sections}))
    return path


@pytest.mark.parametrize(("sections", "message"), [
    ({"trajectory": {"model": "it-a", "phase_split_step": 0}},
     r"sections\.trajectory\.phase_split_step: Input should be greater than or equal to 1 "
     r"\(got 0\)"),
    ({"transfer": {"pretrained": "pretrained"}},
     r"sections\.transfer\.instruction_tuned: Field required"),
    ({"mixing": {"with": "it-a", "without": "it-b", "shotz": 3}},
     r"sections\.mixing\.shotz: unknown key \(got 3\)"),
    ({"sampler": {"models": {}}}, r"sections\.sampler: unknown section; known: transfer, "),
    ({"samplers": {"models": {"p": "it-typo"}}}, r"sections\.samplers names \['it-typo'\]"),
])
def test_bad_sections_name_file_and_key(tmp_path: Path, sections: dict[str, Any],
                                        message: str) -> None:
    path = _experiment(tmp_path, sections)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(info.value).startswith(str(path))


def test_sections_come_in_registry_order_whatever_the_yaml_order() -> None:
    experiment = load_experiment(packaged_config_dir() / "paper" / "sec5_2_mixing.yaml")
    assert list(experiment.spec.sections) == ["trajectory", "mixing"]  # YAML: mixing first
    trajectory = experiment.spec.sections["trajectory"]
    assert isinstance(trajectory, TrajectorySection) and trajectory.model == "it-mix3"


def test_every_section_points_at_an_analysis_and_its_findings_name_sections() -> None:
    assert list(SECTION_TYPES) == ["transfer", "data_limits", "samplers", "trajectory",
                                   "mixing", "heldout_groups"]
    for key, section_cls in SECTION_TYPES.items():
        assert section_cls.key == key and section_cls.title
        analysis = analysis_class(section_cls.model_construct())
        assert callable(analysis.compute) and callable(analysis.tables_html)
    # The paper reports no number for the held-out groups, so that section has no finding.
    assert {finding.section for finding in PAPER_FINDINGS} == set(SECTION_TYPES) - {
        "heldout_groups"}


def test_manifest_and_sections_import_without_torch() -> None:
    code = ("import sys, itransfer.analysis.manifest, itransfer.analysis.sections; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the manifest --------------------------------------------------------------------------


def old_manifest() -> dict[str, Any]:
    """What the pipeline wrote before the manifest had a version (and still reads)."""
    return {
        "experiment": "quickstart", "title": "Quickstart", "source": "quickstart.yaml",
        "models": {
            "pretrained": {"kind": "pretrained", "name_or_path": "itransfer:tiny-t5"},
            "it-mix3": {"kind": "instruction_tuned", "sampler": "proportional",
                        "sampler_spec": {"name": "proportional"}, "data_limit": None,
                        "mixing_every": 3, "final_step": 240, "trajectory_steps": [80, 160, 240],
                        "stage": "runs/q/stages/train-abc"},
        },
        "sections": {"mixing": {"with": "it-mix3", "without": "it-mix3", "shots": 5},
                     "trajectory": {"model": "it-mix3", "phase_split_step": 80, "shots": 5}},
        "timings": {"train:it-mix3": 12.5}, "store": "runs/q/stages",
        "config": {"seed": 0}, "variants": {"it-mix3": {"seed": 0}},
        "versions": {"torch": "2"}, "git": {"commit": "abc", "dirty": False},
    }


def test_a_manifest_written_before_versions_still_reads(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(old_manifest()))
    manifest = read_manifest(tmp_path)
    assert manifest.version == 1 and list(manifest.sections) == ["trajectory", "mixing"]
    mixing = manifest.section(MixingSection)
    assert mixing is not None and mixing.with_ == "it-mix3"
    assert manifest.section(TransferSection) is None
    assert manifest.trajectory_of("it-mix3") == (0, 80, 160, 240)
    assert manifest.models["it-mix3"].stage == "runs/q/stages/train-abc"
    assert manifest.models["it-mix3"].sampler_config == {"name": "proportional"}  # was _spec


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    written = RunManifest.model_validate({**old_manifest(), "version": MANIFEST_VERSION})
    (tmp_path / "manifest.json").write_text(written.to_json())
    assert read_manifest(tmp_path) == written
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["version"] == MANIFEST_VERSION
    assert raw["sections"]["mixing"] == {"with": "it-mix3", "without": "it-mix3", "shots": 5}


@pytest.mark.parametrize(("change", "message"), [
    ({"version": MANIFEST_VERSION + 1},
     f"manifest format version {MANIFEST_VERSION + 1}; this itransfer reads versions 1 to"),
    ({"models": {"m": {"kind": "finetuned"}}}, "models.m.kind: Input should be"),
    ({"sections": {"trajectory": {"model": "m"}}},
     "sections.trajectory.phase_split_step: Field required"),
])
def test_a_bad_manifest_is_one_line_naming_the_file(tmp_path: Path, change: dict[str, Any],
                                                    message: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**old_manifest(), **change}))
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{path}: malformed manifest") and message in text
    assert "\n" not in text


# --- adding a section is one class and its analysis ----------------------------------------


@dataclass(frozen=True)
class ProbeAnalysis:
    section: ProbeSection
    mean_icl: float

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: ProbeSection, *,
                n_boot: int, seed: int) -> ProbeAnalysis:
        icl = frame[(frame["model"] == section.model) & (frame["method"] == "icl")
                    & (frame["metric"] == "loss")]
        return cls(section=section, mean_icl=section.scale * float(icl["value"].mean()))

    def tables_html(self) -> str:
        return f"<p>probe: mean ICL loss {self.mean_icl:.4f}</p>"


class ProbeSection(Section):
    """A section no paper has: the mean ICL loss of one model."""

    title = "Probe: mean ICL loss"
    analysis = ProbeAnalysis

    model: str
    scale: float = 1.0

    def model_labels(self) -> list[str]:
        return [self.model]

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        return [Need(self.model, "final", EvalPlan(icl=True))]


@pytest.fixture()
def probe_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "SECTION_TYPES", dict(SECTION_TYPES))
    registry.register_section("probe")(ProbeSection)


@pytest.mark.usefixtures("probe_registered")
def test_a_registered_section_is_validated_planned_and_reported(tmp_path: Path) -> None:
    path = _experiment(tmp_path, {"probe": {"model": "it-b", "scale": 2},
                                  "transfer": {"instruction_tuned": "it-a"}})
    experiment = load_experiment(path)
    assert list(experiment.spec.sections) == ["transfer", "probe"]
    assert plan_evaluations(experiment)[("it-b", "final")] == plan()
    with pytest.raises(ConfigError, match=r"sections\.probe\.scale: "):
        load_experiment(_experiment(tmp_path, {"probe": {"model": "it-b", "scale": "big"}}))

    run_dir = tmp_path / "run"
    ResultsTable(run_dir).append([row(model="it-b", checkpoint_step=6, task=f"t{index}",
                                      value=float(index)) for index in range(3)])
    manifest = RunManifest(version=MANIFEST_VERSION, experiment="x",
                           models={"it-b": {"final_step": 6}},
                           sections={"probe": experiment.spec.sections["probe"]})
    (run_dir / "manifest.json").write_text(manifest.to_json())
    html = write_report(run_dir, n_boot=10).html.read_text(encoding="utf-8")
    assert "<h2>Probe: mean ICL loss</h2>" in html
    assert "probe: mean ICL loss 2.0000" in html  # 2 × mean(0, 1, 2)


def test_a_scale_may_set_section_settings_and_they_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    spec = {"name": "x", "variants": {"it-a": {}},
            "sections": {"trajectory": {"model": "it-a", "phase_split_step": 80}},
            "scales": {"long": {"base": {"train": {"steps": 900}},
                                "sections": {"trajectory": {"phase_split_step": 300}}},
                       "broken": {"sections": {"trajectory": {"phase_split_step": 0}}},
                       "typo": {"section": {}}}}
    path.write_text(yaml.safe_dump(spec))
    default, long = load_experiment(path), load_experiment(path, scale="long")
    assert default.spec.sections["trajectory"].phase_split_step == 80
    trajectory = long.spec.sections["trajectory"]
    assert isinstance(trajectory, TrajectorySection) and trajectory.phase_split_step == 300
    assert trajectory.model == "it-a" and long.base.train.steps == 900
    with pytest.raises(ConfigError, match=r"scale broken.*phase_split_step"):
        load_experiment(path, scale="broken")
    with pytest.raises(ConfigError, match="may set base, variants and sections"):
        load_experiment(path, scale="typo")


def test_the_small_quickstart_places_its_phase_split_on_a_checkpoint() -> None:
    small = load_experiment(QUICKSTART, scale="small")
    trajectory = small.spec.sections["trajectory"]
    assert isinstance(trajectory, TrajectorySection)
    every = small.base.train.checkpoint_every
    assert trajectory.phase_split_step % every == 0 and small.base.train.steps % every == 0
    assert small.base.train.steps // every >= 6  # several checkpoints after the split


# --- the held-out groups section -------------------------------------------------------------


def test_heldout_groups_adds_its_groups_to_its_models_evaluations_only() -> None:
    config = packaged_config_dir() / "paper" / "sec3_1_transfer.yaml"
    plans = plan_evaluations(load_experiment(config))
    every_group = frozenset({"unseen", "unseen_synthetic", "heldout_domain",
                             "heldout_adversarial"})
    for label in (PRETRAINED, "it-proportional"):
        assert plans[(label, "final")].task_groups == every_group
        assert plans[(label, "final")].shots == {0, 5, 10, 20, 40}  # transfer's grid stays
    # Other sections ask for no extra group: their models' evaluations stay as they were.
    assert all(not plan.task_groups for plan in plan_evaluations(
        load_experiment(QUICKSTART)).values())


@pytest.mark.parametrize(("spec", "message"), [
    ({"models": {"a": "it-a"}, "groups": ["heldout_generalization"]},
     r"sections\.heldout_groups: .*groups: unknown \['heldout_generalization'\]"),
    ({"models": {"a": "it-a"}, "context": "instructions"},
     r"sections\.heldout_groups: .*unknown context 'instructions'"),
    ({"models": {"a": "it-typo"}}, r"sections\.heldout_groups names \['it-typo'\]"),
])
def test_bad_heldout_groups_name_the_key(tmp_path: Path, spec: dict[str, Any],
                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(_experiment(tmp_path, {"heldout_groups": spec}))
