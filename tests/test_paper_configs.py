"""Every experiment of the paper runs end to end at tiny scale, ending in its report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from itransfer.cli.run import quickstart_config
from itransfer.experiment import load_experiment
from itransfer.pipeline import plan_evaluations, run_experiment
from itransfer.schema import SECTION_TYPES

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


@pytest.mark.slow
@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=[path.stem for path in PAPER_CONFIGS])
def test_paper_experiment_at_tiny_scale(config: Path, tmp_path: Path) -> None:
    experiment = load_experiment(config, scale="tiny")
    summary = run_experiment(experiment, tmp_path / "run")
    assert summary.report is not None
    html = summary.report.read_text(encoding="utf-8")
    images = embedded_pngs(html)
    assert len(images) >= 1
    assert all(image.startswith(PNG_MAGIC) and len(image) > 1000 for image in images)
    assert experiment.spec.title in html
    markdown = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "| § | Claim | Paper | This run | Verdict |" in markdown
