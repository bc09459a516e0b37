"""§4 (task samplers): the finding texts, rankings and category-block rechecks a report reader
sees, on small planted runs whose expected numbers follow from the plant."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from itransfer.analysis.block_bootstrap import BlockBootstrap, Robustness
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections import samplers as samplers_module
from itransfer.analysis.sections.samplers import (
    PROPORTIONAL_BEST,
    RA_UNDERFITS,
    UNIFORM_OVERFITS,
)
from itransfer.analysis.significance import RankingStability
from itransfer.analysis.verdicts import (
    FAILS,
    NOT_SIGNIFICANT,
    REPRODUCES,
    UNDEFINED,
    BootstrapOptions,
    FindingResult,
    evaluate_findings,
)
from test_analysis import build_rows, manifest_dict, row, seen_rows
from test_report_robustness import frame_with_seeds, record_bootstrap_settings

MODELS = {"proportional": "it-proportional", "uniform": "it-uniform"}
# Six small seen tasks and two large ones: the per-task mean counts each task once, the pooled
# average weighs each by its size (100 times more for the large ones).
SIZES = [10] * 6 + [1000] * 2


def analysed(frame: pd.DataFrame, models: dict[str, str] | None = None, *, n_boot: int = 50
             ) -> RunAnalysis:
    manifest = manifest_dict(sections={"samplers"})
    if models is not None:
        manifest["sections"]["samplers"]["models"] = models
    return analyse(frame, RunManifest.model_validate(manifest), n_boot=n_boot)


def results(analysis: RunAnalysis, *, n_boot: int = 50, seed: int = 0
            ) -> dict[str, FindingResult]:
    found = evaluate_findings(analysis, n_boot=n_boot, seed=seed)
    return {result.finding.id: result for result in found}


def planted(test_loss: dict[str, tuple[float, float]], icl: dict[str, float], *,
            sizeless: tuple[str, ...] = (), icl_less: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per model (label → its rows at step 300, in 4 categories): seen test loss ``(small,
    large)`` on the six small and two large tasks of :data:`SIZES` (train 0.5 lower, validation
    equal), training-set sizes unless ``sizeless``, and ICL loss ``icl`` on 8 unseen tasks
    unless ``icl_less``."""
    rows: list[dict[str, Any]] = []
    for model, (small, large) in test_loss.items():
        common = {"model": model, "checkpoint_step": 300, "shots": 0}
        for index, size in enumerate(SIZES):
            task = {"task": f"task{900 + index}_seen", "category": f"cat{index % 4}",
                    "method": "seen"}
            loss = small if size == SIZES[0] else large
            rows += [row(**common, **task, split="train", metric="loss", value=loss - 0.5),
                     row(**common, **task, split="validation", metric="loss", value=loss),
                     row(**common, **task, split="test", metric="loss", value=loss)]
            if model not in sizeless:
                rows.append(row(**common, **task, split="train", metric="train_size",
                                value=float(size)))
        if model not in icl_less:
            rows += [row(model=model, checkpoint_step=300, task=f"task{index:03d}_unseen",
                         category=f"cat{index % 4}", value=icl[model]) for index in range(8)]
    return pd.DataFrame.from_records(rows)


def test_proportional_first_everywhere_reads_as_its_rankings_and_constant_leads() -> None:
    """The miniature: proportional is 0.4 below uniform on every seen task's test loss and 0.3
    on every unseen task's ICL loss. The finding ranks it first on all three averages (no
    disagreement sentence), and the category recheck states each lead, first in every resample,
    and survives; uniform's small-task rechecks run on the five small tasks only."""
    found = results(analysed(frame_with_seeds(1)))
    best = found["4-proportional-best"]
    assert best.verdict == REPRODUCES
    assert best.run_p == 0.0  # first in every resample: no resample where the ranking fails
    assert best.run_text == (
        "proportional among {proportional, uniform}: seen test, per-task mean rank 1/2; "
        "unseen ICL rank 1/2; seen test, pooled (not in the verdict) rank 1/2")
    assert best.robustness is not None and best.robustness.survives is True
    # constant leads: a CI of width 0 and the smallest p 50 resamples allow (2/50)
    assert best.robustness.text == (
        "seen test: first in 100% of resamples; proportional's lead=+0.400, category "
        "bootstrap 95% CI [+0.40, +0.40], p=0.04 (10 tasks in 4 categories); "
        "unseen ICL: first in 100% of resamples; proportional's lead=+0.300, category "
        "bootstrap 95% CI [+0.30, +0.30], p=0.04 (8 tasks in 4 categories)")
    overfits = found["4-uniform-overfits-small"]
    assert overfits.robustness is not None and overfits.robustness.survives is True
    # small tasks: sizes 10, 20, 30, 50, 100 (tasks 900, 901, 909, 902, 903: 4 categories)
    assert overfits.robustness.text == (
        "uniform − proportional, train loss on the small tasks=-0.200, category bootstrap "
        "95% CI [-0.20, -0.20], p=0.04 (5 tasks in 4 categories); "
        "uniform − proportional, test loss on the small tasks=+0.400, category bootstrap "
        "95% CI [+0.40, +0.40], p=0.04 (5 tasks in 4 categories)")


@pytest.mark.parametrize(("proportional", "uniform", "icl", "ranks", "first_on"), [
    # worse on the six small tasks, far better on the two large ones: first pooled only
    ((2.0, 1.0), (1.6, 1.5), (1.0, 1.5), ("2/2", "1/2", "1/2"), "pooled average"),
    # better on the small tasks, worse on the large ones, worse ICL: first per task only
    ((1.0, 2.0), (1.5, 1.6), (1.5, 1.0), ("1/2", "2/2", "2/2"), "per-task mean"),
])
def test_the_two_seen_test_averages_disagreeing_is_said_and_only_the_mean_decides(
    proportional: tuple[float, float], uniform: tuple[float, float], icl: tuple[float, float],
    ranks: tuple[str, str, str], first_on: str,
) -> None:
    """Per-task mean and pooled (size-weighted) seen-test averages planted to rank
    proportional differently: the finding says on which one it is first and that the verdict
    rests on the per-task mean; with it second on one of the two rankings counted (seen-test
    mean, unseen ICL), the claim does not reproduce whatever the pooled ranking says."""
    frame = planted({"it-proportional": proportional, "it-uniform": uniform},
                    {"it-proportional": icl[0], "it-uniform": icl[1]})
    best = results(analysed(frame))["4-proportional-best"]
    mean_rank, icl_rank, pooled_rank = ranks
    assert best.run_text == (
        f"proportional among {{proportional, uniform}}: seen test, per-task mean rank "
        f"{mean_rank}; unseen ICL rank {icl_rank}; seen test, pooled (not in the verdict) "
        f"rank {pooled_rank}. The seen-test averages disagree: first on the {first_on} "
        "only; the verdict rests on the per-task mean")
    assert best.verdict == FAILS


def test_a_ranking_without_two_measured_samplers_is_not_measured() -> None:
    """Proportional without training-set sizes has no pooled average, and uniform without ICL
    rows no ICL loss: those two rankings say "not measured" (no rank of one, no disagreement
    sentence), and the verdict rests on the seen-test mean, where proportional is first."""
    frame = planted({"it-proportional": (1.0, 1.0), "it-uniform": (1.4, 1.4)},
                    {"it-proportional": 1.0}, sizeless=("it-proportional",),
                    icl_less=("it-uniform",))
    best = results(analysed(frame))["4-proportional-best"]
    assert best.run_text == (
        "proportional among {proportional, uniform}: seen test, per-task mean rank 1/2; "
        "unseen ICL: not measured; seen test, pooled (not in the verdict): not measured")
    assert best.verdict == REPRODUCES


def test_a_recheck_without_two_categories_says_why_and_decides_nothing() -> None:
    """Every task in one category: the category bootstrap cannot run, and the proportional
    recheck names each ranking's lead as undefined, with no share of resamples."""
    best = results(analysed(frame_with_seeds(1).assign(category="only")))["4-proportional-best"]
    assert best.verdict == REPRODUCES
    assert best.robustness == Robustness(None, (
        "seen test: proportional's lead: category bootstrap undefined (1 category); "
        "unseen ICL: proportional's lead: category bootstrap undefined (1 category)"))


@pytest.mark.parametrize(("share", "survives"), [(0.95, True), (0.94, False)])
def test_proportional_survives_the_recheck_when_first_in_at_least_95_percent(
    monkeypatch: pytest.MonkeyPatch, share: float, survives: bool,
) -> None:
    """The recheck holds when proportional leads in at least 95% of category resamples (the
    rule the finding states): exactly 95% holds, 94% does not, though the lead is positive."""
    def resampled(*args: Any, n_boot: int, seed: int, **kwargs: Any) -> BlockBootstrap:
        return BlockBootstrap(0.1, -0.05, 0.2, 0.1, share, 10, 4, n_boot)

    analysis = analysed(frame_with_seeds(1))
    monkeypatch.setattr(samplers_module, "block_bootstrap", resampled)
    robustness = PROPORTIONAL_BEST.robustness(analysis, BootstrapOptions(n_boot=50, seed=0))
    assert robustness.survives is survives
    assert robustness.text.startswith(f"seen test: first in {share:.0%} of resamples; "
                                      "proportional's lead=+0.100")


@pytest.mark.parametrize("models", [{"uniform": "it-uniform"},
                                    {"proportional": "it-proportional"}])
def test_the_section_rechecks_need_proportional_and_a_sampler_beside_it(
    models: dict[str, str],
) -> None:
    """Called on a run without proportional, or with proportional alone, §4's rechecks return
    the empty recheck ("—", nothing decided) instead of failing."""
    analysis = analysed(frame_with_seeds(1), models)
    options = BootstrapOptions(n_boot=20, seed=0)
    for finding in (PROPORTIONAL_BEST, UNIFORM_OVERFITS, RA_UNDERFITS):
        assert finding.robustness(analysis, options) == Robustness(None, "—"), finding.id


def test_the_ranking_bootstrap_uses_the_reports_resamples_and_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each ranking's "first in x% of N task resamples" draws the report's N from the report's
    seed, so the same seed gives the same text."""
    calls = record_bootstrap_settings(monkeypatch, samplers_module, "ranking_stability")
    best = results(analysed(frame_with_seeds(1)), n_boot=37, seed=11)["4-proportional-best"]
    assert calls == [(37, 11)] * 3
    assert best.test == (
        "bootstrap over tasks, ✓ needs first in ≥ 95% (seen test, per-task mean: first in "
        "100% of 37 task resamples (n=10); unseen ICL: first in 100% of 37 task resamples "
        "(n=8); seen test, pooled (not in the verdict): first in 100% of 37 task resamples "
        "(n=10))")


def test_underfitting_readings_name_each_schedules_runs() -> None:
    """Two linear reverse-annealing runs 0.3 and 0.4 above proportional's train loss on every
    task underfit the small tasks; an inverse-linear run 0.1 below it on both splits does not:
    the readings list both linear runs and "none" of the one inverse-linear run."""
    rows = build_rows(num_tasks=6)
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    manifest = manifest_dict(sections={"samplers"})
    for name, schedule, train, test, validation in (("ra100", "linear", 1.3, 1.7, 0.0),
                                                    ("ra1000", "linear", 1.4, 1.8, 0.0),
                                                    ("ra10", "inverse_linear", 0.9, 1.4, 1.0)):
        seen = seen_rows(f"it-{name}", 300, sizes, train_loss=train, test_loss=test)
        rows += seen + [{**record, "split": "validation", "value": record["value"] + validation}
                        for record in seen if record["split"] == "test"]
        manifest["models"][f"it-{name}"] = {
            **manifest["models"]["it-uniform"], "sampler": "reverse_annealing",
            "sampler_config": {"name": "reverse_annealing", "max_temperature": 100,
                               "schedule": schedule}}
        manifest["sections"]["samplers"]["models"][name] = f"it-{name}"
    analysis = analyse(pd.DataFrame(rows), RunManifest.model_validate(manifest), n_boot=20)
    underfits = results(analysis, n_boot=20)["4-ra-underfits-small"]
    assert underfits.verdict == REPRODUCES
    assert underfits.run_text == (
        "train loss minus proportional's over the small tasks: ra100 +0.300 (n=5); ra1000 "
        "+0.400 (n=5). Readings of the schedule: linear underfits in ra100, ra1000 of 2; "
        "inverse_linear underfits in none of 1; log_linear not run")


@pytest.mark.parametrize(("share", "expected"), [(0.95, REPRODUCES), (0.94, NOT_SIGNIFICANT)])
def test_the_ranking_holds_when_first_in_at_least_95_percent_and_its_p_is_the_share_failing(
    monkeypatch: pytest.MonkeyPatch, share: float, expected: str,
) -> None:
    """Proportional ranked first on both counted averages: the seen-test mean first in every
    task resample, the unseen ICL ranking in ``share`` of them, the pooled one (not counted)
    in half. ✓ needs at least 95% on each counted ranking, so exactly 95% reproduces and 94%
    is only "not significant"; the finding's p is the largest share of resamples in which a
    counted ranking fails (1 − share), whatever the pooled ranking's share."""
    shares = iter([1.0, share, 0.5])  # _rankings' order: seen-test mean, unseen ICL, pooled

    def stability(per_task: pd.DataFrame, target: str, *, n_boot: int, seed: int
                  ) -> RankingStability:
        return RankingStability(target, True, next(shares), len(per_task), n_boot)

    monkeypatch.setattr(samplers_module, "ranking_stability", stability)
    best = results(analysed(frame_with_seeds(1)))["4-proportional-best"]
    assert best.verdict == expected
    assert best.run_p == pytest.approx(1.0 - share)
    assert best.test == (
        "bootstrap over tasks, ✓ needs first in ≥ 95% (seen test, per-task mean: first in "
        f"100% of 50 task resamples (n=10); unseen ICL: first in {share:.0%} of 50 task "
        "resamples (n=8); seen test, pooled (not in the verdict): first in 50% of 50 task "
        "resamples (n=10))")


def ra_run(small_tasks: int) -> tuple[pd.DataFrame, RunManifest]:
    """The miniature's seen tasks (sizes 10 … 5000: the five of sizes ≤ 100 are small) with a
    reverse-annealing run "ra100" beside proportional and uniform, 0.3 above proportional's
    train loss, on the large tasks and only ``small_tasks`` of the small ones."""
    rows = build_rows(num_tasks=6)
    sizes = {f"task{900 + index}_seen": size for index, size in
             enumerate([10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 30])}
    small = [task for task, size in sizes.items() if size <= 100][:small_tasks]
    kept = {task: size for task, size in sizes.items() if size > 100 or task in small}
    seen = seen_rows("it-ra100", 300, kept, train_loss=1.3, test_loss=1.7)
    rows += seen + [{**record, "split": "validation"} for record in seen
                    if record["split"] == "test"]
    manifest = manifest_dict(sections={"samplers"})
    manifest["models"]["it-ra100"] = {
        **manifest["models"]["it-uniform"], "sampler": "reverse_annealing",
        "sampler_config": {"name": "reverse_annealing", "max_temperature": 100,
                           "schedule": "linear"}}
    manifest["sections"]["samplers"]["models"]["ra100"] = "it-ra100"
    return pd.DataFrame(rows), RunManifest.model_validate(manifest)


@pytest.mark.parametrize(("drop", "small_tasks", "why"), [
    ("proportional", 5, "no proportional-sampling model in this run"),
    ("ra100", 5, "no reverse-annealing model in Figure 3"),
    (None, 2, "fewer than 3 small tasks with train losses (n=2)"),
])
def test_reverse_annealing_underfitting_says_why_it_cannot_be_judged(
    drop: str | None, small_tasks: int, why: str,
) -> None:
    """The underfitting claim is undefined, with the reason in the report's run column and no
    value or p, when there is no proportional run to compare with, when no reverse-annealing
    run is in Figure 3, or when the kept run has train losses on only 2 of the 5 small tasks
    (the Wilcoxon test needs 3): the reason states that n."""
    frame, manifest = ra_run(small_tasks)
    if drop is not None:
        models = dict(manifest.sections["samplers"].models)
        del models[drop]
        raw = manifest.model_dump(mode="json")
        raw["sections"]["samplers"]["models"] = models
        manifest = RunManifest.model_validate(raw)
    found = results(analyse(frame, manifest, n_boot=20), n_boot=20)
    underfits = found["4-ra-underfits-small"]
    assert underfits.finding is RA_UNDERFITS
    assert (underfits.verdict, underfits.run_value, underfits.run_p) == (UNDEFINED, None, None)
    assert underfits.run_text == why


def test_the_sections_table_names_each_kept_reverse_annealing_run_with_its_schedule() -> None:
    """§4's table says which reverse-annealing runs Figure 3 keeps, each with its T_max as a
    number reads (100, not 100.0), its schedule and its mean seen validation loss."""
    from itransfer.analysis.sections.samplers import SamplersAnalysis

    frame, manifest = ra_run(5)
    raw = manifest.model_dump(mode="json")
    raw["models"]["it-ra100"]["sampler_config"]["max_temperature"] = 100.0
    section = analyse(frame, RunManifest.model_validate(raw), n_boot=10).of(SamplersAnalysis)
    assert section is not None
    validation = frame[(frame["model"] == "it-ra100") & (frame["split"] == "validation")]
    mean = validation.groupby("task")["value"].mean().mean()
    assert (f"<p>Kept: ra100 (T_max=100, linear schedule, validation loss {mean:.4f}).</p>"
            in section.tables_html())


def test_uniform_overfitting_needs_a_uniform_model_and_says_so() -> None:
    """Without a uniform model beside proportional the overfitting claim is undefined, and
    the report's run column says what is missing."""
    overfits = results(analysed(frame_with_seeds(1), {"proportional": "it-proportional"})
                       )["4-uniform-overfits-small"]
    assert (overfits.verdict, overfits.run_value, overfits.run_text) == (
        UNDEFINED, None, "needs a proportional and a uniform model")
