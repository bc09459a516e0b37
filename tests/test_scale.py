"""The report's scale-and-power header: critical and detectable rho, and pipeline checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from itransfer.analysis.report import write_report
from itransfer.analysis.scale import critical_rho, detectable_rho
from test_analysis import build_rows, make_run, manifest_dict


@pytest.mark.parametrize("n", [5, 15, 93])
def test_critical_rho_is_where_spearmans_p_crosses_alpha(n: int) -> None:
    rho = critical_rho(n)
    t = rho * np.sqrt((n - 2) / (1 - rho**2))
    assert 2 * stats.t.sf(t, n - 2) == pytest.approx(0.05, rel=1e-9)
    assert critical_rho(n, alpha=0.01) > rho


def test_detectable_rho_has_about_80_percent_power() -> None:
    """Simulated Spearman tests at the detectable rho reject about 80% of the time."""
    n, trials = 30, 1500
    rho = detectable_rho(n)
    pearson = 2 * np.sin(np.pi * rho / 6)  # the bivariate normal whose Spearman rho is rho
    rng = np.random.default_rng(0)
    samples = rng.multivariate_normal([0, 0], [[1, pearson], [pearson, 1]], size=(trials, n))
    rejected = np.mean([stats.spearmanr(sample[:, 0], sample[:, 1]).pvalue < 0.05
                        for sample in samples])
    assert 0.75 <= rejected <= 0.86
    assert np.isnan(detectable_rho(3)) and np.isnan(critical_rho(2))


def _report(tmp_path: Path, vocab_size: int) -> tuple[str, str]:
    manifest = manifest_dict()
    manifest["models"]["pretrained"].update(num_parameters=2_230_016, vocab_size=vocab_size)
    run_dir = make_run(tmp_path, build_rows(num_tasks=12), manifest)
    paths = write_report(run_dir, n_boot=20)
    return paths.html.read_text(encoding="utf-8"), paths.markdown.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def realistic_vocabulary_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One report (V = 32,000) that the header tests below read, written once."""
    return _report(tmp_path_factory.mktemp("report"), vocab_size=32_000)


def test_the_header_states_scale_and_power(
        realistic_vocabulary_report: tuple[str, str]) -> None:
    html_text, markdown = realistic_vocabulary_report
    assert "2.2M (2,230,016) parameters" in html_text
    assert f"ln 32000 = {np.log(32000):.2f}" in html_text and "Scale:" in markdown
    assert f"{critical_rho(12):.4g}"[:5] in html_text  # the 12 tasks' critical |ρ|
    assert "pipeline check" not in html_text


def test_a_model_near_the_uniform_guess_turns_verdicts_into_pipeline_checks(
        tmp_path: Path) -> None:
    # The synthetic mean losses are all above 1.5 nats: with V = 4 (ln V = 1.39) no model
    # predicts better than a uniform guess.
    html_text, markdown = _report(tmp_path, vocab_size=4)
    assert "Every verdict below is a pipeline check, not a finding" in html_text
    assert "of the uniform-guess loss ln 4" in html_text
    assert html_text.count("(pipeline check)") >= 10
    assert "(pipeline check)" in markdown


def test_unknown_scale_facts_are_said_not_guessed(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, build_rows(num_tasks=5), manifest_dict())
    text = write_report(run_dir, n_boot=10).html.read_text(encoding="utf-8")
    assert "model: unknown parameters" in text and json.dumps("uniform-guess") not in text


def test_the_header_gives_rouge_l_recall_first_and_f_beside(
        realistic_vocabulary_report: tuple[str, str]) -> None:
    """§2 scores with "'Rouge-L r'": the header's best mean ROUGE-L is the recall, with the F
    that Wang et al.'s scorer reports beside it (the fixture's recall is its F + 5)."""
    html_text, markdown = realistic_vocabulary_report
    found = re.search(r"best mean ROUGE-L recall (\d+\.\d), F (\d+\.\d)", markdown)
    assert found is not None and found.group(0) in html_text
    assert float(found.group(1)) - float(found.group(2)) == pytest.approx(5.0, abs=0.11)
    assert "the F-measure beside it is what Wang et al.'s SNI scorer reports" in html_text
