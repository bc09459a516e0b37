"""Every experiment of the paper runs end to end at tiny scale, ending in its report."""

from __future__ import annotations

import base64
import os
import re
from itertools import product
from pathlib import Path

import pytest

from itransfer.analysis.manifest import MANIFEST_VERSION, read_manifest
from itransfer.analysis.registry import SECTION_TYPES
from itransfer.analysis.sections import PAPER_FINDINGS
from itransfer.cli.run import quickstart_config, quickstart_overrides
from itransfer.config.packaged import packaged_config_dir
from itransfer.eval.results import ResultsTable
from itransfer.experiments.definition import load_experiment
from itransfer.experiments.pipeline import plan_evaluations, run_experiment
from itransfer.train.recipe import instruction_tuning_steps

CONFIG_DIR = packaged_config_dir() / "paper"
PAPER_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(data)
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def test_every_section_has_a_config() -> None:
    names = {path.stem for path in PAPER_CONFIGS}
    assert names == {"sec3_1_transfer", "sec3_2_data_limits", "sec4_sampling",
                     "sec5_1_trajectory", "sec5_1_no_context", "sec5_1_task_id",
                     "sec5_2_mixing"}
    for path in PAPER_CONFIGS:  # full scale names the paper's model
        assert load_experiment(path).base.model.name_or_path == "google/t5-large-lm-adapt"
    ran = {key for path in PAPER_CONFIGS for key in load_experiment(path).spec.sections}
    assert ran == set(SECTION_TYPES)
    listed = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert all(f"`{path.name}`" in listed for path in PAPER_CONFIGS)


def test_the_extra_trajectories_differ_from_5_1_only_in_the_training_context() -> None:
    reference = load_experiment(CONFIG_DIR / "sec5_1_trajectory.yaml", scale="tiny")
    for stem, context in (("sec5_1_no_context", "none"), ("sec5_1_task_id", "task_id")):
        experiment = load_experiment(CONFIG_DIR / f"{stem}.yaml", scale="tiny")
        (label, config), = experiment.variants.items()
        assert config.data.context.name == context
        assert experiment.spec.sections["trajectory"].model == label
        expected = reference.base.model_copy(deep=True)
        expected.data.context.name = context
        assert config == expected


def test_quickstart_covers_every_section_of_the_paper() -> None:
    experiment = load_experiment(quickstart_config())
    # heldout_groups tables groups the paper names but reports no number for; on the
    # quickstart's full transfer grid its 11 bundled held-out tasks would add most of half
    # again to the two models' evaluations, so the quickstart leaves it to sec3_1.
    assert list(experiment.spec.sections) == [key for key in SECTION_TYPES
                                              if key != "heldout_groups"]
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
    assert sorted(set(tuned)) == ["sec3_1_transfer", "sec3_2_data_limits", "sec5_1_no_context",
                                  "sec5_1_task_id", "sec5_1_trajectory", "sec5_2_mixing"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[path.stem for path in PAPER_CONFIGS])
def test_paper_experiment_at_tiny_scale(config: Path, family: str, tmp_path: Path) -> None:
    # causal: the bundled decoder-only default (itransfer:tiny-llama), no other override.
    experiment = load_experiment(config, scale="tiny",
                                 overrides=quickstart_overrides(family, None))
    assert experiment.base.model.name_or_path == (
        "itransfer:tiny-llama" if family == "causal" else "itransfer:tiny-t5")
    run_dir = tmp_path / "run"
    summary = run_experiment(experiment, run_dir)

    # The manifest validates against the schema and lists this experiment's sections.
    manifest = read_manifest(run_dir)
    assert manifest.version == MANIFEST_VERSION and manifest.experiment == experiment.name
    assert manifest.sections == experiment.spec.sections and manifest.sections
    assert {label for section in manifest.sections.values()
            for label in section.model_labels()} <= set(manifest.models)

    # The results table holds every measurement the sections' plans asked for, each row
    # with its task's group.
    frame = ResultsTable(run_dir).read()
    assert frame["task_group"].notna().all()
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
            # Each extra group a section asked for was evaluated (bundled: no synthetic task).
            groups = set(rows.loc[rows["method"] == "icl", "task_group"])
            assert plan.task_groups - {"unseen_synthetic"} <= groups, where

    # The report holds each section's heading, findings and figures, and no other section's.
    assert summary.report is not None
    html = summary.report.read_text(encoding="utf-8")
    markdown = (run_dir / "report.md").read_text(encoding="utf-8")
    assert experiment.spec.title in html
    assert "| § | Claim | Paper | This run | Test | Category bootstrap | Verdict |" in markdown
    # The header says which machine made the numbers (a GPU's differ from a CPU's).
    assert manifest.hardware["cpu_count"] == os.cpu_count()
    expected = (f"1× {manifest.hardware['gpus'][0]}" if manifest.hardware["gpus"]
                else f"CPU ({os.cpu_count()} cores)")
    assert f" · {expected} · full report" in markdown.splitlines()[2]
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


@pytest.mark.slow
def test_data_limits_at_tiny_scale_under_each_step_budget(tmp_path: Path) -> None:
    config, store = CONFIG_DIR / "sec3_2_data_limits.yaml", tmp_path / "stages"
    # The base has no data limit: its step count is the unlimited run's.
    unlimited = instruction_tuning_steps(load_experiment(config, scale="tiny").base)
    totals: dict[str, dict[str, int | None]] = {}
    for budget in ("epochs", "steps"):
        experiment = load_experiment(config, scale="tiny", overrides=[f"train.budget={budget}"])
        summary = run_experiment(experiment, tmp_path / budget, store=store)
        manifest = read_manifest(tmp_path / budget)
        models = {label: manifest.models[label] for label in experiment.variants}
        assert {info.budget for info in models.values()} == {budget}
        assert all(info.final_step == info.total_steps for info in models.values())
        totals[budget] = {label: info.total_steps for label, info in models.items()}
        assert summary.report is not None
        html = summary.report.read_text(encoding="utf-8")
        assert f"Step budget (column <code>budget</code>): <b>{budget}</b>" in html
    assert set(totals["steps"].values()) == {unlimited}
    epochs = totals["epochs"]
    assert epochs["it-limit10"] < epochs["it-limit50"] < epochs["it-limit100"] < unlimited
    # Every limit trained apart under each budget: the two never shared a training stage.
    assert len(list(store.glob("train-*"))) == 2 * len(epochs)
