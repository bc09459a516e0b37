"""Every experiment of the paper runs end to end at tiny scale, ending in its report."""

from __future__ import annotations

import base64
import re
from itertools import product
from pathlib import Path

import pytest

from itransfer.analysis.paper import PAPER_FINDINGS
from itransfer.cli.run import quickstart_config
from itransfer.eval.results import ResultsTable
from itransfer.experiment import load_experiment
from itransfer.pipeline import plan_evaluations, run_experiment
from itransfer.schema import MANIFEST_VERSION, SECTION_TYPES, read_manifest

PAPER_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(data)
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def test_all_five_sections_have_a_config() -> None:
    names = {path.stem for path in PAPER_CONFIGS}
    assert names == {"sec3_1_transfer", "sec3_2_data_limits", "sec4_sampling",
                     "sec5_1_trajectory", "sec5_2_mixing"}
    for path in PAPER_CONFIGS:  # full scale names the paper's model
        assert load_experiment(path).base.model.name_or_path == "google/t5-large-lm-adapt"


def test_quickstart_covers_every_section() -> None:
    experiment = load_experiment(quickstart_config())
    assert list(experiment.spec.sections) == list(SECTION_TYPES)
    plans = plan_evaluations(experiment)
    assert plans[("pretrained", "final")].shots == {0, 5, 10, 20, 40}
    assert plans[("it-proportional", "trajectory")].icl


def test_few_shot_experiments_run_three_seeds_at_full_scale_and_one_when_tiny() -> None:
    tuned = []
    for path in PAPER_CONFIGS:
        for scale, seeds in ((None, [0, 1, 2]), ("tiny", [0])):
            experiment = load_experiment(path, scale=scale)
            if not any(plan.shots for plan in plan_evaluations(experiment).values()):
                continue  # no LoRA cells, nothing to draw
            tuned.append(path.stem)
            configs = [experiment.base, *experiment.variants.values()]
            assert all(config.eval.seeds == seeds for config in configs), (path.stem, scale)
    assert sorted(set(tuned)) == ["sec3_1_transfer", "sec3_2_data_limits", "sec5_1_trajectory",
                                  "sec5_2_mixing"]


@pytest.mark.slow
@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[path.stem for path in PAPER_CONFIGS])
def test_paper_experiment_at_tiny_scale(config: Path, tmp_path: Path) -> None:
    experiment = load_experiment(config, scale="tiny")
    run_dir = tmp_path / "run"
    summary = run_experiment(experiment, run_dir)

    # The manifest validates against the schema and lists this experiment's sections.
    manifest = read_manifest(run_dir)
    assert manifest.version == MANIFEST_VERSION and manifest.experiment == experiment.name
    assert manifest.sections == experiment.spec.sections and manifest.sections
    assert {label for section in manifest.sections.values()
            for label in section.model_labels()} <= set(manifest.models)

    # The results table holds every measurement the sections' plans asked for.
    frame = ResultsTable(run_dir).read()
    for (label, when), plan in plan_evaluations(experiment).items():
        if when == "trajectory":
            steps = manifest.models[label].trajectory_steps
            assert len(steps) > 1, f"{label}: a trajectory needs checkpoints"
        else:
            steps = (manifest.final_step(label),)
        for step in steps:
            rows = frame[(frame["model"] == label) & (frame["checkpoint_step"] == step)]
            where = f"{label}@{step}"
            assert not plan.icl or (rows["method"] == "icl").any(), f"{where}: no ICL rows"
            assert not plan.seen or (rows["method"] == "seen").any(), f"{where}: no seen rows"
            tuned = rows[(rows["method"] == "finetune") & (rows["split"] == "test")
                         & (rows["metric"] == "loss")]
            measured = set(zip(tuned["shots"], tuned["context"], strict=True))
            missing = set(product(plan.shots, plan.contexts)) - measured
            assert not missing, f"{where}: no LoRA rows for (k, context) {sorted(missing)}"

    # The report holds each section's heading, findings and figures, and no other section's.
    assert summary.report is not None
    html = summary.report.read_text(encoding="utf-8")
    markdown = (run_dir / "report.md").read_text(encoding="utf-8")
    assert experiment.spec.title in html
    assert "| § | Claim | Paper | This run | Verdict |" in markdown
    for key, section_cls in SECTION_TYPES.items():
        ran = key in manifest.sections
        assert (f"<h2>{section_cls.title}</h2>" in html) == ran
        for finding in (finding for finding in PAPER_FINDINGS if finding.section == key):
            assert (f"| {finding.paper_section} | {finding.claim} |" in markdown) == ran
        # A figure may have nothing to draw at tiny scale (sec5_2 splits its phases at a
        # step the tiny run never reaches), but a section that ran shows one at least.
        drawn = [name for name in section_cls.figures
                 if f"<figcaption>{name}</figcaption>" in html]
        assert bool(drawn) == (ran and bool(section_cls.figures)), key
    images = embedded_pngs(html)
    assert len(images) == html.count("<figcaption>") >= 1
    assert all(image.startswith(PNG_MAGIC) and len(image) > 1000 for image in images)
