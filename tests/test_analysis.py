"""Analysis on a synthetic results table with planted relations: correlations, bins, report."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from itransfer.analysis import correlations as corr
from itransfer.analysis import seen_fit
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.registry import SECTION_TYPES
from itransfer.analysis.report import write_report
from itransfer.analysis.run import analyse
from itransfer.analysis.sections import PAPER_FINDINGS
from itransfer.analysis.sections.data_limits import DataLimitsAnalysis, DataLimitsSection
from itransfer.analysis.sections.heldout_groups import HeldoutGroupsAnalysis
from itransfer.analysis.sections.mixing import MixingSection
from itransfer.analysis.sections.trajectory import TrajectoryAnalysis
from itransfer.analysis.sections.transfer import TransferAnalysis, TransferSection
from itransfer.eval.results import ResultsTable

SHOTS = (0, 5, 10, 20, 40)
TRAJECTORY = (100, 200, 300)
SPLIT_STEP = 100


def row(**fields: Any) -> dict[str, Any]:
    base = {"run": "synthetic", "model": "pretrained", "checkpoint_step": 0, "task": "t",
            "category": "Title Generation", "split": "test", "method": "icl",
            "context": "exemplars", "shots": 3, "seed": 0, "metric": "loss", "value": 0.0,
            "n": 10, "config_hash": "h", "cell": "c"}
    return {**base, **fields}


def unseen_rows(model: str, step: int, tasks: list[str], icl: np.ndarray,
                finetune: np.ndarray, rng: np.random.Generator, *, ft_offset: float = 0.0
                ) -> list[dict[str, Any]]:
    """ICL rows and finetune rows at every k and context (two seeds, averaging to ``finetune``)."""
    rows = []
    for task, icl_loss, ft_loss in zip(tasks, icl, finetune, strict=True):
        rows.append(row(model=model, checkpoint_step=step, task=task, value=float(icl_loss)))
        rows.append(row(model=model, checkpoint_step=step, task=task, metric="rougeL",
                        value=float(50 - 10 * icl_loss)))
        rows.append(row(model=model, checkpoint_step=step, task=task, metric="rougeL_recall",
                        value=float(55 - 10 * icl_loss)))
        for shots in SHOTS:
            for context in ("none", "exemplars"):
                # Loss falls with k; the exemplar context helps a little.
                level = ft_loss + ft_offset - 0.01 * shots - (0.1 if context == "exemplars" else 0)
                for seed, jitter in ((0, -0.05), (1, 0.05)):
                    common = {"model": model, "checkpoint_step": step, "task": task,
                              "method": "finetune", "context": context, "shots": shots,
                              "seed": seed}
                    rows.append(row(**common, value=float(level + jitter)))
                    rows.append(row(**common, metric="rougeL", value=float(40 - 10 * level)))
                    rows.append(row(**common, metric="rougeL_recall",
                                    value=float(45 - 10 * level)))
                    rows.append(row(**common, split="train", metric="final_train_loss",
                                    value=float(rng.uniform(0.1, 0.5))))
    return rows


def seen_rows(model: str, step: int, sizes: dict[str, int], train_loss: float,
              test_loss: float) -> list[dict[str, Any]]:
    rows = []
    for task, size in sizes.items():
        common = {"model": model, "checkpoint_step": step, "task": task, "method": "seen",
                  "category": "Question Answering", "shots": 0}
        rows.append(row(**common, split="train", metric="train_size", value=float(size)))
        # Larger tasks are fit a little better, so the size bins differ.
        bonus = 0.1 * np.log10(size)
        rows.append(row(**common, split="train", metric="loss", value=train_loss - bonus))
        rows.append(row(**common, split="test", metric="loss", value=test_loss - bonus))
    return rows


def build_rows(num_tasks: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    """A miniature of the paper in which every finding holds, except a planted negative delta."""
    rng = np.random.default_rng(seed)
    tasks = [f"task{index:03d}_unseen" for index in range(num_tasks)]
    difficulty = rng.uniform(1.0, 4.0, num_tasks)  # shared by FT and ICL → ρ ≈ 1 per model

    def noise() -> np.ndarray:
        return rng.normal(0.0, 0.02, num_tasks)

    rows: list[dict[str, Any]] = []
    # pretrained: good transfer, poor ICL
    rows += unseen_rows("pretrained", 0, tasks, difficulty + 2.0 + noise(),
                        difficulty + noise(), rng)
    # it-proportional trajectory: early phase changes independent, late phase tied together
    early_icl_change, early_ft_change = rng.normal(-1.0, 0.3, num_tasks), rng.normal(
        1.0, 0.3, num_tasks)
    icl, ft = difficulty + 2.0 + early_icl_change, difficulty + early_ft_change
    for step in TRAJECTORY:
        if step > SPLIT_STEP:
            shared = rng.normal(-0.2, 0.2, num_tasks)
            icl, ft = icl + shared + noise(), ft + shared + noise()
        rows += unseen_rows("it-proportional", step, tasks, icl, ft, rng)
        # with mixing: everything 0.2 lower (less forgetting, better ICL)
        rows += unseen_rows("it-mix3", step, tasks, icl - 0.2, ft - 0.2, rng)
    final_icl, final_ft = icl, ft
    rows += unseen_rows("it-uniform", 300, tasks, final_icl + 0.3, final_ft + 0.3, rng)
    # data limits: less data is better on average, but the per-task changes are anti-correlated
    effect = rng.uniform(0.0, 1.0, num_tasks)
    rows += unseen_rows("it-limit100", 300, tasks, final_icl + 0.5, final_ft + 0.5, rng)
    rows += unseen_rows("it-limit10", 300, tasks, final_icl + 0.5 - effect,
                        final_ft + 0.5 - (1.0 - effect) * 0.5, rng)
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    rows += seen_rows("it-proportional", 300, sizes, train_loss=1.0, test_loss=1.5)
    rows += seen_rows("it-uniform", 300, sizes, train_loss=0.8, test_loss=1.9)
    return rows


def manifest_dict(*, sections: set[str] | None = None) -> dict[str, Any]:
    def tuned(**extra: Any) -> dict[str, Any]:
        return {"kind": "instruction_tuned", "sampler": "proportional", "data_limit": None,
                "mixing_every": None, "final_step": 300, "trajectory_steps": list(TRAJECTORY),
                **extra}

    all_sections = {
        "transfer": {"pretrained": "pretrained", "instruction_tuned": "it-proportional",
                     "correlation_shots": 5, "correlation_context": "none"},
        "data_limits": {"models": {"10": "it-limit10", "100": "it-limit100"},
                        "delta": ["it-limit100", "it-limit10"], "shots": 5},
        "samplers": {"models": {"proportional": "it-proportional", "uniform": "it-uniform"}},
        "trajectory": {"model": "it-proportional", "phase_split_step": SPLIT_STEP, "shots": 5},
        "mixing": {"with": "it-mix3", "without": "it-proportional", "shots": 5},
        "heldout_groups": {"models": {"pre-trained": "pretrained",
                                      "instruction-tuned": "it-proportional"}},
    }
    chosen = set(all_sections) if sections is None else sections
    return {
        "experiment": "synthetic", "title": "Synthetic miniature",
        "models": {"pretrained": {"kind": "pretrained"},
                   "it-proportional": tuned(), "it-uniform": tuned(sampler="uniform"),
                   "it-mix3": tuned(mixing_every=3),
                   "it-limit10": tuned(data_limit=10, trajectory_steps=[300]),
                   "it-limit100": tuned(data_limit=100, trajectory_steps=[300])},
        "sections": {name: spec for name, spec in all_sections.items() if name in chosen},
        "timings": {"train:it-proportional": 61.2, "eval:pretrained@0": 3.5},
        "config": {"seed": 0, "train": {"steps": 300}},
        "versions": {"pandas": pd.__version__},
        "git": {"commit": "abc123", "dirty": False},
    }


def make_run(tmp_path: Path, rows: list[dict[str, Any]], manifest: dict[str, Any]) -> Path:
    run_dir = tmp_path / "run"
    ResultsTable(run_dir).append(rows)
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame.from_records(build_rows())


# --- correlations ------------------------------------------------------------------------------


def test_spearman_matches_scipy_and_ci_brackets_estimate() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.8, size=40)
    result = corr.spearman(x, y, n_boot=1000, seed=3)
    expected = stats.spearmanr(x, y)
    assert result.rho == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.n == 40
    assert result.ci_low <= result.rho <= result.ci_high
    assert -1.0 <= result.ci_low < result.ci_high <= 1.0
    assert corr.spearman(x, y, n_boot=1000, seed=3) == result  # seeded → reproducible


def test_spearman_drops_nan_pairs_and_is_undefined_below_three_tasks() -> None:
    result = corr.spearman([1.0, 2.0, np.nan, 4.0, 5.0], [2.0, 1.0, 3.0, np.nan, 6.0])
    assert result.n == 3
    assert result.rho == pytest.approx(stats.spearmanr([1, 2, 5], [2, 1, 6]).statistic)
    few = corr.spearman([1.0, 2.0], [2.0, 1.0])
    assert not few.defined and few.n == 2 and "fewer than 3" in few.describe()
    constant = corr.spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert not constant.defined and "constant" in constant.reason
    flat_y = corr.spearman([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0])  # either side constant
    assert not flat_y.defined and flat_y.n == 4 and flat_y.describe() == (
        "ρ undefined (constant values (n=4))")
    unit_range = corr.spearman([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 0.25, 1.0])  # range exactly 1
    assert unit_range.defined and unit_range.rho == pytest.approx(0.8)
    # NaN, not None: the findings' and scale tables read these as numbers
    for undefined in (few, constant):
        assert all(math.isnan(value) for value in (undefined.p_value, undefined.ci_low,
                                                   undefined.ci_high))


def test_transfer_vs_icl_averages_seeds_and_recovers_planted_correlation(
    frame: pd.DataFrame,
) -> None:
    table = corr.transfer_vs_icl(frame, "it-proportional", shots=5, context="none")
    assert len(table) == 30
    task = table.index[0]
    seeds = frame[(frame["model"] == "it-proportional") & (frame["checkpoint_step"] == 300)
                  & (frame["task"] == task) & (frame["method"] == "finetune")
                  & (frame["shots"] == 5) & (frame["context"] == "none")
                  & (frame["metric"] == "loss") & (frame["split"] == "test")]["value"]
    assert len(seeds) == 2
    assert table.loc[task, "finetune"] == pytest.approx(seeds.mean())
    result = corr.spearman(table["finetune"], table["icl"])
    assert result.rho > 0.95
    assert result.rho == pytest.approx(stats.spearmanr(table["finetune"], table["icl"])[0])
    assert result.ci_low <= result.rho <= result.ci_high


def spread_rows() -> tuple[list[dict[str, Any]], dict[str, tuple[float, float, int]]]:
    """5-shot rows of model "m" at step 10 with a planted (mean, std across seeds, seeds) per
    task, among rows the spread must ignore."""
    planted = {"t0": (2.0, 0.1, 3), "t1": (3.0, 0.3, 3), "t2": (1.0, 0.2, 3), "t3": (4.0, 0.0, 1)}
    rows = []
    common = {"model": "m", "checkpoint_step": 10, "method": "finetune", "context": "none"}
    for task, (mean, std, count) in planted.items():
        # Offsets -1, 0, +1 times std: the sample std (ddof 1) of three seeds is std exactly.
        for seed, offset in list(zip((0, 1, 2), (-1.0, 0.0, 1.0), strict=True))[:count]:
            value = mean + offset * std if count > 1 else mean
            at = {**common, "task": task, "seed": seed, "shots": 5}
            if task == "t1" and seed == 1:  # two rows of one seed (two config hashes) count once
                rows += [row(**at, value=value - 0.5, config_hash="old"),
                         row(**at, value=value + 0.5)]
            else:
                rows.append(row(**at, value=value))
            rows += [row(**{**at, "shots": 10}, value=99.0),  # another k
                     row(**{**at, "context": "exemplars"}, value=99.0),  # another context
                     row(**at, metric="rougeL", value=99.0),
                     row(**at, split="train", metric="final_train_loss", value=99.0),
                     row(**{**at, "checkpoint_step": 5}, value=99.0),  # an earlier step
                     row(**{**at, "model": "other"}, value=99.0)]
    return rows, planted


def test_seed_spread_recovers_planted_mean_std_and_seed_counts() -> None:
    rows, planted = spread_rows()
    spread = corr.seed_spread(pd.DataFrame.from_records(rows), "m", shots=5, context="none")
    assert list(spread.index) == sorted(planted)
    for task, (mean, std, count) in planted.items():
        assert spread.loc[task, "mean"] == pytest.approx(mean)
        assert spread.loc[task, "n_seeds"] == count
        if count > 1:
            assert spread.loc[task, "std"] == pytest.approx(std)
        else:
            assert np.isnan(spread.loc[task, "std"])  # one seed: no spread, not zero
    summary = corr.summarize_spread(spread)
    assert summary.median_std == pytest.approx(0.2)  # of 0.1, 0.3, 0.2; the 1-seed task left out
    assert summary.between_task_std == pytest.approx(np.std([2.0, 3.0, 1.0, 4.0], ddof=1))
    assert (summary.min_seeds, summary.max_seeds, summary.n_tasks) == (1, 3, 4)
    assert summary.describe().startswith("1–3 seeds per task, 4 tasks: median per-task std")
    assert corr.seed_spread(pd.DataFrame.from_records(rows), "m", shots=20).empty


def test_a_spread_with_as_many_seeds_everywhere_says_that_number() -> None:
    """The section's seed line: "3 seeds per task", not a range of one value."""
    rows, _ = spread_rows()
    spread = corr.seed_spread(pd.DataFrame.from_records(rows), "m", shots=5, context="none")
    summary = corr.summarize_spread(spread.drop(index="t3"))  # the one-seed task
    assert summary.describe() == ("3 seeds per task, 3 tasks: median per-task std across seeds "
                                  "0.200 (std of the task means 1.000)")


def test_report_shows_the_seed_spread_only_with_several_seeds(frame: pd.DataFrame) -> None:
    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    transfer = analyse(frame, manifest, n_boot=10).of(TransferAnalysis)
    assert transfer is not None
    # The synthetic runs have two seeds at ±0.05 around each task's value: std 0.1 / √2.
    assert (transfer.seed_spread["n_seeds"] == 2).all() and len(transfer.seed_spread) == 30
    assert transfer.seed_spread["std"].to_numpy() == pytest.approx(0.1 / np.sqrt(2))
    assert np.allclose(transfer.seed_spread["mean"], transfer.scatter["finetune"])
    shown = transfer.tables_html()
    assert "Seed spread of the 5-shot fine-tuning loss" in shown and "0.071" in shown
    assert shown.count("<details>") == 2  # the per-task values, and the spread per task
    one_seed = analyse(frame[frame["seed"] == 0], manifest, n_boot=10).of(TransferAnalysis)
    assert one_seed is not None and "Seed spread" not in one_seed.tables_html()


def test_model_deltas_recover_planted_negative_relation(frame: pd.DataFrame) -> None:
    deltas = corr.model_deltas(frame, "it-limit100", "it-limit10", shots=5)
    assert len(deltas) == 30
    assert (deltas["icl_delta"] == deltas["icl_after"] - deltas["icl_before"]).all()
    result = corr.delta_correlation(deltas)
    expected = stats.spearmanr(deltas["finetune_delta"], deltas["icl_delta"])
    assert result.rho == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.rho < -0.9


def test_phase_correlations_use_pretrained_as_step_zero(frame: pd.DataFrame) -> None:
    phases = corr.phase_correlations(frame, "it-proportional", split_step=SPLIT_STEP,
                                     pretrained="pretrained", shots=5)
    assert phases.final_step == 300
    assert len(phases.early_table) == 30 and len(phases.late_table) == 30
    pretrained_icl = corr.icl_values(corr.model_rows(frame, "pretrained", 0))
    assert np.allclose(phases.early_table["icl_before"], pretrained_icl.loc[
        phases.early_table.index])
    assert phases.late.rho > 0.8
    assert abs(phases.early.rho) < phases.late.rho
    expected = stats.spearmanr(phases.late_table["finetune_delta"],
                               phases.late_table["icl_delta"])
    assert phases.late.p_value == pytest.approx(expected.pvalue)


def test_trajectory_and_transfer_curves(frame: pd.DataFrame) -> None:
    curves = corr.trajectory_curves(frame, "it-proportional", (0, *TRAJECTORY),
                                    pretrained="pretrained", shots=5)
    assert sorted(curves["step"].unique()) == [0, *TRAJECTORY]
    assert set(curves["method"]) == {"icl", "finetune"}
    transfer = corr.transfer_curves(frame, {"PT": "pretrained", "IT": "it-proportional"})
    assert set(transfer["shots"]) == set(SHOTS)
    assert set(transfer["context"]) == {"none", "exemplars"}
    it_none = transfer[(transfer["label"] == "IT") & (transfer["context"] == "none")]
    assert it_none["mean"].is_monotonic_decreasing  # planted: loss falls with k
    assert (it_none["n_tasks"] == 30).all()


def test_size_bins_are_log_spaced_and_cover_every_task(frame: pd.DataFrame) -> None:
    sizes = pd.Series([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30], dtype=float)
    edges = seen_fit.size_bin_edges(sizes, num_bins=3)
    assert edges[0] == 10 and edges[-1] == 5001
    assert np.allclose(edges[1:3], [10 * 500 ** (1 / 3), 10 * 500 ** (2 / 3)], atol=0.5)
    bins = seen_fit.assign_size_bins(sizes, edges)
    assert bins.notna().all()  # the largest task lands in the last bin
    assert bins[sizes == 5000].iloc[0] == bins.cat.categories[-1]
    assert bins[sizes == 10].iloc[0] == bins.cat.categories[0]
    binned = seen_fit.size_binned_seen_losses(frame, {"proportional": "it-proportional"},
                                          num_bins=3)
    train = binned[binned["split"] == "train"]
    assert train["n_tasks"].sum() == 10
    first = train.iloc[0]
    in_first = sizes[(sizes >= first["bin_low"]) & (sizes < first["bin_high"])]
    assert first["mean"] == pytest.approx((1.0 - 0.1 * np.log10(in_first)).mean())
    assert train["mean"].is_monotonic_decreasing  # planted: big tasks fit better


def test_sampler_summary(frame: pd.DataFrame) -> None:
    summary = seen_fit.sampler_summary(
        frame, {"proportional": "it-proportional", "uniform": "it-uniform"}
    ).set_index("sampler")
    assert summary.loc["proportional", "seen_test_loss"] < summary.loc["uniform",
                                                                       "seen_test_loss"]
    assert summary.loc["proportional", "icl_loss"] < summary.loc["uniform", "icl_loss"]
    assert summary.loc["uniform", "seen_train_loss"] < summary.loc["proportional",
                                                                    "seen_train_loss"]
    assert (summary["n_seen_tasks"] == 10).all() and (summary["n_unseen_tasks"] == 30).all()


def test_manifest_accepts_the_with_alias_and_defaults() -> None:
    manifest = RunManifest.model_validate(manifest_dict())
    mixing = manifest.section(MixingSection)
    assert mixing is not None and mixing.with_ == "it-mix3"
    assert manifest.pretrained == "pretrained"
    assert manifest.trajectory_of("it-proportional") == (0, *TRAJECTORY)
    assert manifest.final_step("pretrained") == 0
    assert RunManifest.model_validate(manifest_dict(sections=set())).section(
        TransferSection) is None


# --- the report ----------------------------------------------------------------------------


def embedded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(data) for data in
            re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def findings_rows(text: str) -> dict[str, str]:
    """Claim → verdict from the HTML findings table."""
    found = {}
    for finding in PAPER_FINDINGS:
        claim = re.escape(html.escape(finding.claim))
        match = re.search(claim + r"</td>.*?class=\"verdict\">([^<]*)<", text, flags=re.S)
        if match:
            found[finding.id] = match.group(1)
    return found


def test_write_report_full_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, build_rows(), manifest_dict())
    paths = write_report(run_dir, n_boot=300)
    text = paths.html.read_text(encoding="utf-8")
    images = embedded_pngs(text)
    assert len(images) >= 6
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 1024 for image in images)
    for image in images:  # each decodes to a real picture, not a blank canvas
        pixels = np.asarray(Image.open(io.BytesIO(image)).convert("L"), dtype=float)
        assert min(pixels.shape) >= 200 and pixels.std() > 5 and (pixels < 128).mean() > 0.001
    assert len(paths.figures) == 8 and all(path.is_file() for path in paths.figures.values())
    # each figure sits under the heading of the section that shows it, in the registry's order
    headings = [match.start() for section_cls in SECTION_TYPES.values()
                if (match := re.search(f"<h2>{re.escape(section_cls.title)}</h2>", text))]
    assert len(headings) == len(SECTION_TYPES) and headings == sorted(headings)
    assert set(paths.figures) == {name for section_cls in SECTION_TYPES.values()
                                  for name in section_cls.figures}
    for section_cls in SECTION_TYPES.values():
        for name in section_cls.figures:
            heading = text.index(f"<h2>{section_cls.title}</h2>")
            figure = text.index(f"<figcaption>{name}</figcaption>")
            assert heading < figure < text.index("<h2>", heading + 1)
    # the paper's numbers beside this run's
    assert "0.936" in text and "4.96e-42" in text and "0.705" in text and "0.621" in text
    assert text.count("93 tasks (its p-values imply 91)") == 3  # §3.1, §3.2, §5.1's early phase
    # the legend states the rules the verdicts follow (tests/test_verdicts.py pins them)
    assert "more than half of the claim's parts" in text and "one-sided" in text
    assert "inside (−0.4, 0.4)" in text
    verdicts = findings_rows(text)
    assert set(verdicts) == {finding.id for finding in PAPER_FINDINGS}
    assert verdicts["3.1-ft-icl-correlation"] == "✓ reproduces"  # not "◐ partly reproduces"
    assert verdicts["3.1-it-harms-transfer"] == "✓ reproduces"  # not "◐ partly reproduces"
    assert verdicts["3.1-it-harms-transfer-rouge"] == "✓ reproduces"  # not "◐ partly reproduces"
    assert verdicts["4-proportional-best"] == "✓ reproduces"  # not "◐ partly reproduces"
    assert verdicts["5.2-mixing-reduces-forgetting"] == "✓ reproduces"  # not "◐ partly reproduces"
    assert verdicts["3.2-delta-correlation"] == "✗ does not reproduce"  # planted ρ < 0
    # every correlation has its difficulty-controlled partner (4: §3.1, §3.2, two §5.1 phases)
    assert text.count("partial ρ=") == 4 and text.count("of ρ survives") == 4
    # provenance
    assert "abc123" in text and "train:it-proportional" in text and "61.2" in text
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "0.936" in markdown and "does not reproduce" in markdown
    assert "figures/fig1_ft_vs_icl.png" in markdown


def test_missing_sections_are_omitted(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, build_rows(num_tasks=10),
                       manifest_dict(sections={"transfer", "trajectory"}))
    paths = write_report(run_dir, n_boot=100)
    text = paths.html.read_text(encoding="utf-8")
    verdicts = findings_rows(text)
    assert "3.1-ft-icl-correlation" in verdicts and "5.1-late-phase-correlation" in verdicts
    assert not any(key.startswith(("3.2", "4-", "5.2")) for key in verdicts)
    assert "Figure 2" not in text and "Figure 3" not in text and "§4" not in text
    assert set(paths.figures) == {"Figure 1 (left)", "Figure 1 (right)", "Figure 4 (left)",
                                  "Figure 4 (centre, right)"}


def test_too_few_tasks_reports_undefined(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, build_rows(num_tasks=2), manifest_dict())
    paths = write_report(run_dir, n_boot=100)
    text = paths.html.read_text(encoding="utf-8")
    verdicts = findings_rows(text)
    assert verdicts["3.1-ft-icl-correlation"].endswith("undefined")
    assert verdicts["3.2-delta-correlation"].endswith("undefined")
    assert verdicts["5.1-early-phase-correlation"].endswith("undefined")
    assert "fewer than 3 tasks (n=2)" in text


def test_report_without_results_rows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps(manifest_dict()), encoding="utf-8")
    paths = write_report(run_dir, n_boot=10)
    text = paths.html.read_text(encoding="utf-8")
    assert "undefined" in text and embedded_pngs(text) == []


def _transfer_results(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from itransfer.analysis.verdicts import evaluate_findings

    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    return {result.finding.id: result
            for result in evaluate_findings(analyse(pd.DataFrame(rows), manifest, n_boot=10))}


def _shifted(rows: list[dict[str, Any]], model: str, context: str,
             shift: dict[str, float]) -> list[dict[str, Any]]:
    """Fine-tuning test rows of one model and context moved by ``shift[metric]``."""
    return [{**record, "value": record["value"] + shift.get(record["metric"], 0.0)}
            if (record["model"] == model and record["method"] == "finetune"
                and record["context"] == context and record["split"] == "test") else record
            for record in rows]


def test_it_harms_transfer_is_judged_per_comparison_and_metric() -> None:
    """Plant harm without context only, and the opposite with exemplars: both findings name
    each comparison and fail (half the (comparison, k) parts hold, no majority, and the
    exemplar comparison's test is significant for IT better; this was ◐ under "any part
    holds")."""
    from itransfer.analysis.verdicts import FAILS

    # IT with exemplars adapts better than PT: loss far lower, ROUGE-L far higher
    rows = _shifted(build_rows(num_tasks=12), "it-proportional", "exemplars",
                    {"loss": -10.0, "rougeL": 100.0, "rougeL_recall": 100.0})
    results = _transfer_results(rows)
    for finding_id in ("3.1-it-harms-transfer", "3.1-it-harms-transfer-rouge"):
        result = results[finding_id]
        assert result.verdict == FAILS, (finding_id, result.run_text)
        assert "IT none vs PT none" in result.run_text
        assert "IT exemplars vs PT none" in result.run_text
        exemplars = result.test.split("IT exemplars vs PT none")[1]
        assert "; opposite: p=" in exemplars and "for IT better" in exemplars
        assert "opposite" not in result.test.split("IT exemplars vs PT none")[0]
        assert "IT worse at 4/4 k" in result.run_text and "IT worse at 0/4 k" in result.run_text


def test_it_harms_transfer_sets_it_against_the_pretrained_model_without_context() -> None:
    """§3.1: the paper fine-tunes the pre-trained model without context only, so a bad
    pre-trained exemplars curve must not decide the paper's findings — only our own row."""
    from itransfer.analysis.verdicts import FAILS, REPRODUCES

    rows = _shifted(build_rows(num_tasks=12), "pretrained", "exemplars",
                    {"loss": 10.0, "rougeL": -100.0, "rougeL_recall": -100.0})
    results = _transfer_results(rows)
    for finding_id in ("3.1-it-harms-transfer", "3.1-it-harms-transfer-rouge"):
        assert results[finding_id].verdict == REPRODUCES, results[finding_id].run_text
        assert "PT exemplars" not in results[finding_id].run_text
    ours = results["3.1-it-harms-transfer-within-context"]
    assert ours.finding.ours and ours.verdict == FAILS, ours.run_text
    assert "IT exemplars vs PT exemplars: loss" in ours.run_text
    assert "IT exemplars vs PT exemplars: ROUGE-L recall" in ours.run_text
    # our comparison stays out of the paper's Holm family
    assert ours.run_p is not None and ours.holm_p is None
    assert results["3.1-it-harms-transfer"].holm_p is not None


def test_rouge_finding_reads_the_papers_recall_with_f_beside() -> None:
    """§2: "we use the 'Rouge-L r' metric": the finding follows recall, not the F-measure."""
    from itransfer.analysis.verdicts import FAILS, REPRODUCES

    base = build_rows(num_tasks=12)
    # F says IT is far better everywhere; recall (the paper's metric) still says IT is worse
    f_opposite = _shifted(base, "it-proportional", "none", {"rougeL": 100.0})
    f_opposite = _shifted(f_opposite, "it-proportional", "exemplars", {"rougeL": 100.0})
    result = _transfer_results(f_opposite)["3.1-it-harms-transfer-rouge"]
    assert result.verdict == REPRODUCES, result.run_text
    assert "ROUGE-L recall IT − PT -" in result.run_text and "(F +" in result.run_text
    # and the other way round: recall says IT is better, so the harm does not reproduce
    recall_opposite = _shifted(base, "it-proportional", "none", {"rougeL_recall": 100.0})
    recall_opposite = _shifted(recall_opposite, "it-proportional", "exemplars",
                               {"rougeL_recall": 100.0})
    assert _transfer_results(recall_opposite)["3.1-it-harms-transfer-rouge"].verdict == FAILS


def test_figure_1_left_draws_the_papers_lines_and_labels_ours() -> None:
    from itransfer.analysis.sections.transfer import _figure_1_lines

    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    transfer = analyse(pd.DataFrame(build_rows(num_tasks=6)), manifest, n_boot=10).of(
        TransferAnalysis)
    assert transfer is not None
    legends = [legend for _, _, legend, _ in _figure_1_lines(transfer)]
    assert legends == ["pre-trained, context: none", "instruction-tuned, context: none",
                       "instruction-tuned, context: exemplars",
                       "pre-trained, context: exemplars (ours)"]
    assert not transfer.rouge_curves.empty and not transfer.rouge_f_curves.empty
    recall = transfer.rouge_curves["mean"].to_numpy()
    f_measure = transfer.rouge_f_curves["mean"].to_numpy()
    assert np.allclose(recall - f_measure, 5.0)  # the fixture's recall is F + 5


def test_data_limits_table_states_each_models_step_budget(tmp_path: Path) -> None:
    raw = manifest_dict(sections={"data_limits"})
    raw["models"]["it-limit10"].update(budget="steps", total_steps=300)
    raw["models"]["it-limit100"].update(budget="epochs", total_steps=30)
    manifest = RunManifest.model_validate(raw)
    frame = pd.DataFrame.from_records(build_rows(num_tasks=5))
    limits = DataLimitsAnalysis.compute(frame, manifest, manifest.section(DataLimitsSection),
                                        n_boot=10, seed=0)
    assert limits.summary.set_index("model")[["budget", "total_steps"]].to_dict("index") == {
        "it-limit10": {"budget": "steps", "total_steps": 300},
        "it-limit100": {"budget": "epochs", "total_steps": 30},
    }
    report = write_report(make_run(tmp_path, build_rows(num_tasks=5), raw), n_boot=10)
    html = report.html.read_text(encoding="utf-8")
    assert "<b>steps</b>: as many steps as the same run without the data limit" in html
    assert "<b>epochs</b>: train.epochs passes over" in html and "differ in budget" in html
    # A manifest written before budgets were recorded still reports, and says so.
    old = make_run(tmp_path / "old", build_rows(num_tasks=5),
                   manifest_dict(sections={"data_limits"}))
    assert "Step budget: not recorded" in write_report(old, n_boot=10).html.read_text("utf-8")



# --- evaluation groups -------------------------------------------------------------------------


def heldout_rows(group: str, count: int, offset: float, rng: np.random.Generator
                 ) -> list[dict[str, Any]]:
    """Rows of ``count`` tasks of ``group`` for the two models §3.1 compares (and the
    trajectory's last step), far off the unseen tasks' values so that any leak shows."""
    tasks = [f"task{700 + index}_{group}" for index in range(count)]
    icl = rng.uniform(1.0, 4.0, count) + offset
    rows = [*unseen_rows("pretrained", 0, tasks, icl + 2.0, icl, rng),
            *unseen_rows("it-proportional", 300, tasks, icl, icl + 1.0, rng)]
    return [{**one, "task_group": group} for one in rows]


def test_heldout_groups_leave_every_unseen_section_as_it_was() -> None:
    rng = np.random.default_rng(5)
    unseen = build_rows(num_tasks=12)
    extra = heldout_rows("heldout_domain", 6, 10.0, rng) + heldout_rows(
        "heldout_adversarial", 2, -5.0, rng)
    manifest = RunManifest.model_validate(manifest_dict())
    # Rows written before the column existed read as unseen; new ones say so.
    frames = {"unseen only, no column": pd.DataFrame.from_records(unseen),
              "unseen + held out": pd.DataFrame.from_records(
                  [{**one, "task_group": "unseen"} for one in unseen[: len(unseen) // 2]]
                  + unseen[len(unseen) // 2:] + extra)}
    results = {name: analyse(frame, manifest, n_boot=50) for name, frame in frames.items()}
    before, after = results.values()
    for kind in (TransferAnalysis, TrajectoryAnalysis, DataLimitsAnalysis):
        assert before.of(kind) is not None
    first, second = before.of(TransferAnalysis), after.of(TransferAnalysis)
    assert first.correlation == second.correlation and first.icl_means == second.icl_means
    pd.testing.assert_frame_equal(first.loss_curves, second.loss_curves)
    pd.testing.assert_frame_equal(first.scatter, second.scatter)
    unseen_only, with_heldout = before.of(TrajectoryAnalysis), after.of(TrajectoryAnalysis)
    assert (unseen_only.phases.early, unseen_only.phases.late) == (
        with_heldout.phases.early, with_heldout.phases.late)
    pd.testing.assert_frame_equal(unseen_only.phases.late_table, with_heldout.phases.late_table)
    pd.testing.assert_frame_equal(unseen_only.curves, with_heldout.curves)
    pd.testing.assert_frame_equal(before.of(DataLimitsAnalysis).summary,
                                  after.of(DataLimitsAnalysis).summary)
    # Unfiltered, the held-out rows would have moved §3.1: the check above can fail.
    leaked = TransferAnalysis.compute(frames["unseen + held out"], manifest,
                                      manifest.section(TransferSection), n_boot=50, seed=0)
    assert leaked.icl_means != first.icl_means and len(leaked.scatter) == 12 + 8


def test_heldout_groups_table_per_group_and_model() -> None:
    rng = np.random.default_rng(6)
    extra = heldout_rows("heldout_domain", 4, 10.0, rng)
    frame = pd.DataFrame.from_records(build_rows(num_tasks=5) + extra)
    manifest = RunManifest.model_validate(manifest_dict(sections={"heldout_groups"}))
    result = analyse(frame, manifest, n_boot=10).of(HeldoutGroupsAnalysis)
    summary = result.summary.set_index(["group", "model"])
    assert list(summary.index.get_level_values("group").unique()) == [
        "unseen", "unseen_synthetic", "heldout_domain", "heldout_adversarial"]
    assert summary["n_tasks"].to_dict() == {
        (group, model): count for group, count in (("unseen", 5), ("unseen_synthetic", 0),
                                                   ("heldout_domain", 4),
                                                   ("heldout_adversarial", 0))
        for model in ("pre-trained", "instruction-tuned")}
    domain = pd.DataFrame.from_records(extra)
    tuned = domain[(domain["model"] == "it-proportional") & (domain["method"] == "finetune")
                   & (domain["shots"] == 5) & (domain["context"] == "none")
                   & (domain["metric"] == "loss")]
    expected = tuned.groupby("task")["value"].mean().mean()
    assert summary.loc[("heldout_domain", "instruction-tuned"), "finetune_loss"] == (
        pytest.approx(expected))
    icl = domain[(domain["model"] == "pretrained") & (domain["method"] == "icl")
                 & (domain["metric"] == "rougeL")]
    assert summary.loc[("heldout_domain", "pre-trained"), "icl_rougeL"] == pytest.approx(
        icl["value"].mean())
    # Empty groups say so instead of failing; the unseen row is beside the others.
    assert set(summary.loc[summary["n_tasks"] == 0, "note"]) == {"no tasks"}
    assert set(summary.loc[summary["n_tasks"] > 0, "note"]) == {""}
    html = result.tables_html()
    assert html.count("no tasks") == 4 and "5-shot fine-tuning" in html


def test_section_4_small_task_findings_with_a_reverse_annealing_run() -> None:
    """§4 with a reverse-annealing run (ranked on its seen validation loss) whose train loss is
    0.3 above proportional's on every task: it underfits the five small tasks, with the exact
    Wilcoxon p of five tasks all one way (1/32); uniform is 0.2 lower on train and 0.4 higher
    on test there, so it overfits them."""
    from itransfer.analysis.verdicts import REPRODUCES, evaluate_findings

    rows = build_rows()
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    annealed = seen_rows("it-ra1000", 300, sizes, train_loss=1.3, test_loss=1.7)
    rows += annealed + [{**r, "split": "validation"} for r in annealed if r["split"] == "test"]
    manifest = manifest_dict(sections={"samplers"})
    manifest["models"]["it-ra1000"] = {**manifest["models"]["it-uniform"],
                                       "sampler": "reverse_annealing"}
    manifest["sections"]["samplers"]["models"]["ra1000"] = "it-ra1000"
    analysis = analyse(pd.DataFrame(rows), RunManifest.model_validate(manifest), n_boot=50)
    results = {result.finding.id: result for result in evaluate_findings(analysis, n_boot=50)}
    underfits = results["4-ra-underfits-small"]
    assert underfits.finding.id == "4-ra-underfits-small"
    assert underfits.verdict == REPRODUCES
    assert underfits.run_value == pytest.approx(0.3) and underfits.run_p == pytest.approx(1 / 32)
    assert underfits.run_text == (
        "train loss minus proportional's over the small tasks: ra1000 +0.300 (n=5). Readings "
        "of the schedule: linear underfits in ra1000 of 1; inverse_linear not run; log_linear "
        "not run")
    assert underfits.test == ("ra1000 train: Wilcoxon W=15 of 15 for the claim, one-sided "
                              "p=0.031, n=5")
    overfits = results["4-uniform-overfits-small"]
    assert overfits.verdict == REPRODUCES
    assert overfits.run_value == pytest.approx(0.4) and overfits.run_p == pytest.approx(1 / 32)
    assert overfits.test == (
        "train: Wilcoxon W=0 of 15 for the claim, one-sided p=1, n=5; opposite: p=0.031 for "
        "lower train loss; test: Wilcoxon W=15 of 15 for the claim, one-sided p=0.031, n=5")


def test_data_limits_extremes_are_the_smallest_minus_the_largest_limit_at_the_sections_k(
) -> None:
    """Figure 2's extremes and the section's deltas: per task, the k-shot FT loss of the
    smallest data limit minus that of the largest, at the section's k (10 here, not the usual
    5); one data budget is stated once, not as models that differ."""
    raw = manifest_dict(sections={"data_limits"})
    raw["sections"]["data_limits"]["shots"] = 10
    for label in ("it-limit10", "it-limit100"):
        raw["models"][label].update(budget="steps", total_steps=300)
    manifest = RunManifest.model_validate(raw)
    frame = pd.DataFrame.from_records(build_rows(num_tasks=5))
    # the smallest limit 1.0 worse at k = 10 only: another k gives other deltas
    frame.loc[(frame["model"] == "it-limit10") & (frame["shots"] == 10)
              & (frame["method"] == "finetune"), "value"] += 1.0
    limits = DataLimitsAnalysis.compute(frame, manifest, manifest.section(DataLimitsSection),
                                        n_boot=10, seed=0)
    tuned = frame[(frame["method"] == "finetune") & (frame["split"] == "test")
                  & (frame["metric"] == "loss") & (frame["context"] == "none")]
    mean = tuned.groupby(["model", "shots", "task"])["value"].mean()
    expected = mean.loc[("it-limit10", 10)] - mean.loc[("it-limit100", 10)]
    assert limits.extremes["finetune_delta"].to_dict() == pytest.approx(expected.to_dict())
    assert limits.deltas["finetune_delta"].to_dict() == pytest.approx(expected.to_dict())
    assert "differ in budget" not in limits.tables_html()


def test_every_figure_is_captioned_and_labelled_as_the_paper_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """The figures' titles, axis labels, legends and bar values, read off the drawn figures:
    each names the paper figure it reproduces and what its axes measure."""
    from itransfer.analysis import plotting

    drawn: dict[str, list[str]] = {}

    def keep(figure: Any, path: Path) -> Path:
        texts = [figure._suptitle.get_text()] if figure._suptitle else []
        for axes in figure.axes:
            legend = axes.get_legend()
            texts += [axes.get_title(), axes.get_xlabel(), axes.get_ylabel(),
                      *(text.get_text() for text in axes.texts),
                      *(text.get_text() for text in (legend.get_texts() if legend else []))]
        drawn[path.name] = texts
        return path

    monkeypatch.setattr(plotting, "save", keep)
    analysis = analyse(pd.DataFrame(build_rows()), RunManifest.model_validate(manifest_dict()),
                       n_boot=10)
    plotting.draw_all(analysis, tmp_path)
    transfer = drawn["fig1_transfer_curves.png"]
    assert transfer[0] == "Figure 1 (left): few-shot LoRA transfer to unseen tasks"
    assert [text for text in transfer if text.startswith("mean ")] == [
        "mean test loss (NLL) ↓", "mean ROUGE-L recall (paper's) ↑",
        "mean ROUGE-L F (Wang et al.'s scorer) ↑"]
    assert drawn["fig2_data_limits.png"][:3] == [
        "Figure 2 (left): data per task vs transfer and ICL",
        "training examples per task (data limit)", "mean unseen-task test loss ↓"]
    samplers = drawn["fig3_samplers.png"]
    assert samplers[:3] == ["Figure 3 (left): multi-task fit vs ICL by sampler",
                            "task sampler P(K)", "mean loss ↓"]
    # bar values, two decimals: seen train/test loss and unseen ICL loss of each sampler
    assert samplers[3:] == ["0.78", "0.58", "1.28", "1.68", "3.20", "3.50",
                            "seen tasks: train loss", "seen tasks: test loss",
                            "unseen tasks: ICL loss"]
    assert drawn["fig3_size_bins.png"] == [
        "Figure 3 (centre): train loss by task size", "task training-set size (log-spaced bins)",
        "mean seen-task train loss ↓", "proportional", "uniform",
        "Figure 3 (right): test loss by task size", "task training-set size (log-spaced bins)",
        "mean seen-task test loss ↓", "proportional", "uniform"]
    centre, right = drawn["fig4_phase_scatter.png"][0], drawn["fig4_phase_scatter.png"][3]
    assert centre.startswith("Figure 4 (centre): steps 0 → 100\nρ=")
    assert right.startswith("Figure 4 (right): steps 100 → 300\nρ=")
    assert drawn["fig2_delta_scatter.png"][0].startswith(
        "Figure 2 (right): per-task change, it-limit10 − it-limit100\nρ=")


def test_section_tables_name_their_rows(frame: pd.DataFrame) -> None:
    """The tables under the figures: each row named by model and setting (the index shown),
    and no heading over a table that has no rows."""
    from itransfer.analysis.sections.mixing import MixingAnalysis
    from itransfer.analysis.sections.samplers import SamplersAnalysis

    analysis = analyse(frame, RunManifest.model_validate(manifest_dict()), n_boot=10)
    transfer = analysis.of(TransferAnalysis)
    assert transfer is not None
    assert transfer.tables_html().startswith("<h3>Mean fine-tuning test loss by k</h3>")
    mixing = analysis.of(MixingAnalysis)
    assert mixing is not None
    assert "<th>with mixing</th>" in mixing.tables_html()
    assert "<th>without mixing</th>" in mixing.tables_html()
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None and samplers.others.empty
    assert "Other samplers" not in samplers.tables_html()


# --- behaviours no test checked before (bench/results-mutants-survivors.md) --------------------


def test_mixing_curves_start_at_the_pretrained_model(frame: pd.DataFrame) -> None:
    """§5.2: step 0 of both mixing curves is the pre-trained model (neither tuned model has
    rows at step 0), with its mean ICL and 5-shot fine-tuning loss."""
    from itransfer.analysis.sections.mixing import MixingAnalysis

    mixing = analyse(frame, RunManifest.model_validate(manifest_dict(sections={"mixing"})),
                     n_boot=10).of(MixingAnalysis)
    assert mixing is not None
    pretrained = corr.model_rows(frame, "pretrained", 0)
    expected = {"icl": float(corr.icl_values(pretrained).mean()),
                "finetune": float(corr.finetune_values(pretrained, 5).mean())}
    at_zero = mixing.curves[mixing.curves["step"] == 0].sort_values(["label", "method"])
    assert list(zip(at_zero["label"], at_zero["method"], strict=True)) == [
        ("with mixing", "finetune"), ("with mixing", "icl"),
        ("without mixing", "finetune"), ("without mixing", "icl")]
    assert at_zero["mean"].tolist() == pytest.approx(
        [expected["finetune"], expected["icl"]] * 2)
    assert (at_zero["n_tasks"] == 30).all()


def _samplers_results(rows: list[dict[str, Any]], models: dict[str, str]) -> dict[str, Any]:
    from itransfer.analysis.verdicts import evaluate_findings

    manifest = manifest_dict(sections={"samplers"})
    manifest["sections"]["samplers"]["models"] = models
    analysis = analyse(pd.DataFrame(rows), RunManifest.model_validate(manifest), n_boot=10)
    return {result.finding.id: result for result in evaluate_findings(analysis, n_boot=10)}


def test_proportional_best_says_why_it_is_undefined() -> None:
    """§4's "proportional best" is undefined, and says why, without a proportional model and
    with nothing to compare proportional with."""
    from itransfer.analysis.verdicts import UNDEFINED

    rows = build_rows(num_tasks=6)
    alone = _samplers_results(rows, {"proportional": "it-proportional"})["4-proportional-best"]
    assert alone.verdict == UNDEFINED
    assert alone.run_text == ("needs proportional and at least one of the samplers it is "
                              "compared with")
    missing = _samplers_results(rows, {"uniform": "it-uniform"})["4-proportional-best"]
    assert missing.verdict == UNDEFINED
    assert missing.run_text == "no proportional-sampling model in this run"


def test_figure_3_labels_an_unmeasured_bar_n_a(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Figure 3 (left): a sampler without ICL rows gets a bar labelled "n/a", not a number."""
    from itransfer.analysis import plotting
    from itransfer.analysis.sections.samplers import draw_sampler_summary

    drawn: list[Any] = []
    monkeypatch.setattr(plotting, "save", lambda figure, path: drawn.append(figure) or path)
    rows = [record for record in build_rows(num_tasks=6)
            if not (record["model"] == "it-uniform" and record["method"] == "icl")]
    analysis = analyse(pd.DataFrame(rows),
                       RunManifest.model_validate(manifest_dict(sections={"samplers"})),
                       n_boot=10)
    assert draw_sampler_summary(analysis, tmp_path / "fig3.png") == tmp_path / "fig3.png"
    (axes,) = drawn[0].axes
    labels = [text.get_text() for text in axes.texts]
    # three bars (seen train, seen test, ICL) of proportional and uniform each
    assert len(labels) == 6 and labels[4] not in ("n/a", "N/A")
    assert labels[5] == "n/a"


def test_fits_table_reads_t_max_from_the_manifests_sampler_config() -> None:
    """§4's fits table: a reverse-annealing run's T_max and schedule come from its
    ``sampler_config`` in the manifest."""
    from itransfer.analysis.sections.samplers import SamplersAnalysis

    rows = build_rows(num_tasks=6)
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    annealed = seen_rows("it-ra1000", 300, sizes, train_loss=1.3, test_loss=1.7)
    rows += annealed + [{**r, "split": "validation"} for r in annealed if r["split"] == "test"]
    manifest = manifest_dict(sections={"samplers"})
    manifest["models"]["it-ra1000"] = {
        **manifest["models"]["it-uniform"], "sampler": "reverse_annealing",
        "sampler_config": {"name": "reverse_annealing", "max_temperature": 1000,
                           "schedule": "inverse_linear"}}
    manifest["sections"]["samplers"]["models"]["ra1000"] = "it-ra1000"
    samplers = analyse(pd.DataFrame(rows), RunManifest.model_validate(manifest),
                       n_boot=10).of(SamplersAnalysis)
    assert samplers is not None
    fits = samplers.fits_table().set_index("sampler")
    assert fits.loc["ra1000", "T_max"] == 1000
    assert fits.loc["ra1000", "schedule"] == "inverse_linear"
    assert pd.isna(fits.loc["uniform", "T_max"])


def test_transfer_curves_read_each_models_evaluated_step_not_its_last() -> None:
    """§3.1 with a checkpoint evaluated past the one the section reads (final_step 200, rows
    at 100, 200 and 300): every curve, ROUGE-L included, is the step-200 checkpoint's."""
    from itransfer.analysis.rows import ROUGE_F, ROUGE_RECALL

    rows = build_rows(num_tasks=6)
    manifest = manifest_dict(sections={"transfer"})
    manifest["models"]["it-proportional"]["final_step"] = 200
    frame = pd.DataFrame(rows)
    transfer = analyse(frame, RunManifest.model_validate(manifest), n_boot=10).of(
        TransferAnalysis)
    assert transfer is not None
    tuned = frame[(frame["model"] == "it-proportional") & (frame["method"] == "finetune")
                  & (frame["split"] == "test") & (frame["context"] == "none")
                  & (frame["shots"] == 5)]
    for metric in ("loss", ROUGE_RECALL, ROUGE_F):
        curves = transfer.curves(metric)
        at = curves[(curves["label"] == "instruction-tuned") & (curves["context"] == "none")
                    & (curves["shots"] == 5)]
        means = {step: tuned[(tuned["checkpoint_step"] == step) & (tuned["metric"] == metric)]
                 .groupby("task")["value"].mean().mean() for step in (200, 300)}
        assert means[200] != pytest.approx(means[300])  # the planted steps differ
        assert at["mean"].tolist() == pytest.approx([means[200]]), metric


def test_less_data_compares_the_extreme_limits_that_have_any_result() -> None:
    """A limit measured by ICL only (no fine-tuning run) still counts as the largest limit:
    the finding compares limit 10 with limit 1000 on ICL alone, rather than dropping 1000
    for its missing fine-tuning loss."""
    from itransfer.analysis.verdicts import evaluate_findings

    rows = build_rows(num_tasks=8)
    tasks = sorted({r["task"] for r in rows if r["model"] == "it-limit100"})
    rng = np.random.default_rng(0)
    rows += [r for r in unseen_rows("it-limit1000", 300, tasks, np.full(len(tasks), 9.0),
                                    np.full(len(tasks), 9.0), rng) if r["method"] == "icl"]
    raw = manifest_dict(sections={"data_limits"})
    raw["models"]["it-limit1000"] = {**raw["models"]["it-limit100"], "data_limit": 1000}
    raw["sections"]["data_limits"]["models"]["1000"] = "it-limit1000"
    analysis = analyse(pd.DataFrame(rows), RunManifest.model_validate(raw), n_boot=10)
    result = {r.finding.id: r for r in evaluate_findings(analysis, n_boot=10)}
    less = result["3.2-less-data-helps"]
    assert less.run_text.startswith("limit 10 − limit 1000: ICL loss ")
    assert "FT loss" not in less.run_text


def _less_data_result(rows: list[dict[str, Any]]) -> Any:
    from itransfer.analysis.verdicts import evaluate_findings

    manifest = RunManifest.model_validate(manifest_dict(sections={"data_limits"}))
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    return {result.finding.id: result
            for result in evaluate_findings(analysis, n_boot=10)}["3.2-less-data-helps"]


def _mean_losses(rows: list[dict[str, Any]], model: str) -> tuple[float, float]:
    """The planted mean unseen ICL loss and 5-shot fine-tuning loss (no context) of a model."""
    frame = pd.DataFrame(rows)
    frame = frame[(frame["model"] == model) & (frame["metric"] == "loss")
                  & (frame["split"] == "test")]
    icl = frame[frame["method"] == "icl"]["value"].mean()
    ft = frame[(frame["method"] == "finetune") & (frame["shots"] == 5)
               & (frame["context"] == "none")]["value"].mean()
    return icl, ft


def test_less_data_helps_reads_the_planted_gaps_and_each_methods_wilcoxon_test() -> None:
    """§3.2's less-data finding: limit 10 is below limit 100 on every task for both ICL and
    fine-tuning loss (8 tasks: W = 36 of 36, one-sided p = 1/2^8), so it reproduces; its value
    is the mean of the two gaps, its text names the limits and each gap; swapping the two
    models' rows turns it into a failure with the opposite claim's test named."""
    from itransfer.analysis.verdicts import FAILS, REPRODUCES

    rows = build_rows(num_tasks=8)
    (icl10, ft10), (icl100, ft100) = (_mean_losses(rows, f"it-limit{limit}")
                                       for limit in (10, 100))
    result = _less_data_result(rows)
    assert result.verdict == REPRODUCES
    assert result.run_value == pytest.approx(((icl10 - icl100) + (ft10 - ft100)) / 2)
    assert result.run_p == pytest.approx(1 / 2**8)
    assert result.run_text == (f"limit 10 − limit 100: ICL loss {icl10 - icl100:+.3f}, "
                               f"FT loss {ft10 - ft100:+.3f}")
    both = "Wilcoxon W=36 of 36 for the claim, one-sided p=0.0039, n=8"
    assert result.test == ("Wilcoxon signed-rank over tasks, smallest vs largest limit "
                           f"(ICL: {both}; FT: {both})")
    swap = {"it-limit10": "it-limit100", "it-limit100": "it-limit10"}
    swapped = _less_data_result([{**record, "model": swap.get(record["model"],
                                                               record["model"])}
                                 for record in rows])
    assert swapped.verdict == FAILS
    assert swapped.run_value == pytest.approx(-result.run_value)
    assert "for more data better" in swapped.test


def test_less_data_helps_says_why_it_cannot_be_judged() -> None:
    """Undefined, with the reason: one limit with results; or the smallest limit measured by
    ICL only and the largest by fine-tuning only (no loss both share)."""
    rows = build_rows(num_tasks=8)
    alone = _less_data_result([record for record in rows if record["model"] != "it-limit100"])
    assert (alone.verdict, alone.run_text) == (
        "undefined", "needs two data limits with results, has 1")
    apart = [record for record in rows if not (
        (record["model"] == "it-limit10" and record["method"] == "finetune")
        or (record["model"] == "it-limit100" and record["method"] == "icl"))]
    result = _less_data_result(apart)
    assert result.verdict == "undefined"
    assert result.run_text == ("no ICL or fine-tuning loss at the smallest and largest "
                                    "limit")
