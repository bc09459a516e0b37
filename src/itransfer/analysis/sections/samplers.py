"""§4: models by task sampler, the paper's four compared (Figure 3).

The YAML keys (``sections.samplers``), the analysis, Figure 3 and the section's finding.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from itransfer.analysis import correlations as corr
from itransfer.analysis import plotting, seen_fit
from itransfer.analysis.block_bootstrap import (
    Check,
    Robustness,
    block_bootstrap,
    combine,
    lead_statistic,
    paired_check,
)
from itransfer.analysis.html import table
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.plotting import PaperFigure
from itransfer.analysis.registry import Section, register_section
from itransfer.analysis.rows import evaluated_step
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.significance import RankingStability, ranking_stability
from itransfer.analysis.verdicts import (
    BootstrapOptions,
    Finding,
    FindingResult,
    largest_p,
    opposed,
    passes,
    undefined,
    verdict,
)
from itransfer.config.schema import EvalConfig
from itransfer.runs.eval_plan import EvalPlan, Need
from itransfer.sampling.rates import ANNEALING_SCHEDULES

KEY = "samplers"
FIGURE_3_LEFT = "Figure 3 (left)"
FIGURE_3_CENTRE_RIGHT = "Figure 3 (centre, right)"
# A ranking "holds" when the candidate is first in at least this share of task resamples.
RANKING_CONFIDENCE = 0.95


# --- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplersAnalysis:
    """§4, Figure 3: the paper's four samplers compared, the rest beside them."""

    section: SamplersSection
    summary: pd.DataFrame  # per sampler (every one trained): seen losses, ICL loss, role
    binned: pd.DataFrame  # per compared sampler, split and size bin: mean seen loss
    comparison: seen_fit.SamplerComparison
    per_task_seen_test: pd.DataFrame  # seen task × compared sampler: test loss
    per_task_icl: pd.DataFrame  # unseen task × compared sampler: ICL loss
    seen_losses: dict[str, pd.DataFrame]  # "train"/"test" → seen task × every sampler
    test_weights: pd.Series  # seen task → its test split's size (the pooled average's weight)
    small: tuple[str, ...]  # the seen tasks of the lowest `small_bins` size bins
    reference: str | None  # the proportional model the fits are measured against
    fits: dict[str, seen_fit.SmallTaskFit]  # every other sampler on the small tasks

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: SamplersSection, *,
                n_boot: int, seed: int) -> SamplersAnalysis:
        steps = {name: step for name, model in section.models.items()
                 if (step := evaluated_step(frame, manifest, model)) is not None}
        summary = seen_fit.sampler_summary(frame, section.models, steps=steps)
        infos = {name: manifest.models.get(model) for name, model in section.models.items()}
        kinds = {name: seen_fit.sampler_kind(name, info.sampler if info else None)
                 for name, info in infos.items()}
        comparison = seen_fit.compare_samplers(
            summary, kinds,
            {name: (info.sampler_config or {}) if info else {} for name, info in infos.items()},
            keep=section.keep_reverse_annealing,
        )
        summary["sampler_kind"] = summary["sampler"].map(kinds)
        summary["in_figure_3"] = summary["sampler"].isin(comparison.compared)
        compared_models = {name: section.models[name] for name in comparison.compared}
        tables = {name: seen_fit.seen_task_table(frame, model, steps.get(name))
                  for name, model in section.models.items()}
        reference = next((name for name in comparison.compared
                          if kinds.get(name) == "proportional"), None)
        seen_losses = {split: pd.DataFrame({name: table[f"{split}_loss"]
                                            for name, table in tables.items()})
                       for split in ("train", "test")}
        small, fits = _small_task_fits(tables, seen_losses, compared_models, section, reference)
        return cls(
            section=section, summary=summary, comparison=comparison,
            binned=seen_fit.size_binned_seen_losses(frame, compared_models,
                                                    num_bins=section.size_bins, steps=steps),
            per_task_seen_test=pd.DataFrame({
                name: tables[name]["test_loss"] for name in compared_models}),
            per_task_icl=pd.DataFrame({
                name: corr.icl_values(corr.model_rows(frame, model, steps.get(name)))
                for name, model in compared_models.items()}),
            seen_losses=seen_losses,
            test_weights=_across(tables, compared_models, "test_weight"),
            small=small, reference=reference, fits=fits,
        )

    @property
    def compared(self) -> pd.DataFrame:
        """The summary rows of the samplers Figure 3 compares, in its order."""
        return (self.summary.set_index("sampler").loc[list(self.comparison.compared)]
                .reset_index())

    def kind(self, name: str) -> str | None:
        """The sampler ``name`` was trained with (see :func:`seen_fit.sampler_kind`)."""
        kinds = self.summary.set_index("sampler")["sampler_kind"]
        return kinds.get(name)

    @property
    def others(self) -> pd.DataFrame:
        return self.summary[~self.summary["in_figure_3"]].reset_index(drop=True)

    def tables_html(self) -> str:
        comparison = self.comparison
        columns = ["sampler", "model", "sampler_kind", "seen_train_loss", "seen_validation_loss",
                   "seen_test_loss", "seen_train_loss_pooled", "seen_test_loss_pooled",
                   "icl_loss", "n_seen_tasks", "n_unseen_tasks"]
        body = ("<p>Compared as in Figure 3: proportional, uniform and the best "
                f"{self.section.keep_reverse_annealing} reverse-annealing runs by mean seen-task "
                "validation loss (§4). Seen losses are averaged two ways: over tasks (each task "
                "once) and pooled (<code>_pooled</code>: over examples, each task weighted by "
                "its split's size). Proportional sampling minimises the pooled training loss "
                "and uniform sampling the per-task mean, so the two can rank the samplers "
                "differently; the finding says which one its verdict rests on.</p>"
                + table(self.compared[columns]))
        if not comparison.sweep.empty:
            kept = comparison.sweep[comparison.sweep["kept"]]
            chosen = "; ".join(
                f"{row.sampler} (T_max={_number(row.max_temperature)}, {row.schedule} schedule, "
                f"validation loss {row.seen_validation_loss:.4f})" for row in kept.itertuples())
            body += ("<h3>Reverse-annealing sweep, ranked on seen validation loss</h3>"
                     f"<p>Kept: {html.escape(chosen or 'none (no validation loss)')}.</p>"
                     + table(comparison.sweep))
        if comparison.notes:
            body += "<p><em>" + html.escape("; ".join(comparison.notes)) + ".</em></p>"
        if not self.others.empty:
            body += ("<h3>Other samplers (not in the paper's comparison)</h3>"
                     + table(self.others[columns]))
        if not self.binned.empty:
            # The bins are labels ("10–34"): pivoting alone would order them as text.
            by_size = self.binned.pivot_table(index=["split", "label"], columns="bin",
                                              values="mean")
            bins = self.binned.sort_values("bin_low")["bin"].drop_duplicates()
            body += "<h3>Seen-task loss by training-set size</h3>" + table(
                by_size[[size for size in bins if size in by_size.columns]], index=True)
        return body + self.fits_html()

    def fits_table(self) -> pd.DataFrame:
        """Per sampler other than proportional: its small-task differences from proportional
        (``sampler − proportional``; Wilcoxon p-values) and §4's word for them."""
        sweep = self.comparison.sweep.set_index("sampler")
        kinds = self.summary.set_index("sampler")["sampler_kind"]
        records = [{
            "sampler": name, "sampler_kind": kinds.get(name),
            "schedule": sweep["schedule"].get(name), "T_max": sweep["max_temperature"].get(name),
            "in_figure_3": name in self.comparison.compared, "n_tasks": fit.train.n,
            "train_diff": fit.train.mean_difference, "train_p": fit.train.p_value,
            "test_diff": fit.test.mean_difference, "test_p": fit.test.p_value,
            "gap_diff": fit.gap_difference, "fit": fit_label(fit),
        } for name, fit in self.fits.items()]
        return pd.DataFrame.from_records(records, columns=FIT_COLUMNS)

    def fits_html(self) -> str:
        if self.reference is None:
            return ""
        return (f"<h3>Fit of the small tasks against {html.escape(self.reference)}</h3>"
                f"<p>{html.escape(FIT_DEFINITION)} Small tasks: the lowest "
                f"{self.section.small_bins} of the {self.section.size_bins} size bins, "
                f"{len(self.small)} tasks. {html.escape(SMALL_TASKS_SAMPLED_MORE)}</p>"
                + table(self.fits_table()))


FIT_COLUMNS = ["sampler", "sampler_kind", "schedule", "T_max", "in_figure_3", "n_tasks",
               "train_diff", "train_p", "test_diff", "test_p", "gap_diff", "fit"]
FIT_DEFINITION = (
    "On the tasks of the small size bins, against proportional sampling and paired by task "
    "(Wilcoxon signed-rank, α = 0.05): a sampler underfits them when its train loss there is "
    "higher; it overfits them when its train loss is lower and its test loss higher (so its "
    "test-minus-train gap is larger too).")
# Proved by tests/test_sampling.py (any sizes, any T ≥ 1): why "underfits" is not the obvious
# outcome of reverse annealing, which draws small tasks more often than proportional does.
SMALL_TASKS_SAMPLED_MORE = (
    "Under p_k ∝ n_k^(1/T) with T ≥ 1, the tasks drawn at least as often as under proportional "
    "sampling are all those below a size threshold, the smallest task always among them: "
    "reverse annealing (T ≥ 1 at every step, whatever its schedule) never samples the "
    "smallest tasks less often than proportional sampling, so an underfit there cannot come "
    "from seeing them less often.")


def _across(tables: dict[str, pd.DataFrame], names: Iterable[str], column: str) -> pd.Series:
    """A per-task column the samplers share (sizes: one data split), averaged over ``names``."""
    chosen = [tables[name][column] for name in names]
    return pd.concat(chosen, axis=1).mean(axis=1) if chosen else pd.Series(dtype=float)


def _small_task_fits(
    tables: dict[str, pd.DataFrame], losses: dict[str, pd.DataFrame], compared: Iterable[str],
    section: SamplersSection, reference: str | None,
) -> tuple[tuple[str, ...], dict[str, seen_fit.SmallTaskFit]]:
    """The small tasks (Figure 3's bins, over the compared samplers' tasks) and every other
    sampler's fit of them against ``reference`` (``losses``: split → task × sampler)."""
    sizes = _across(tables, compared, "train_size")
    edges = seen_fit.size_bin_edges(sizes.to_numpy(dtype=float), section.size_bins)
    small = tuple(seen_fit.small_tasks(sizes, edges, section.small_bins))
    if reference is None:
        return small, {}
    return small, {name: seen_fit.small_task_fit(losses["train"], losses["test"], small, name,
                                                 reference)
                   for name in tables if name != reference}


def fit_label(fit: seen_fit.SmallTaskFit) -> str:
    """§4's words for a sampler's fit of the small tasks against proportional: "underfits"
    when its train loss there is significantly higher; "overfits" when it is significantly
    lower and the test loss significantly higher; else "neither"."""
    if passes(fit.train):
        return "underfits"
    if opposed(fit.train) and passes(fit.test):
        return "overfits"
    return "neither"


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


# --- Figure 3 --------------------------------------------------------------------------------


def draw_sampler_summary(analysis: RunAnalysis, path: Path) -> Path | None:
    """F3 left: per compared sampler, mean seen train/test loss and unseen ICL loss (bars)."""
    samplers = analysis.of(SamplersAnalysis)
    bars = (("seen_train_loss", "seen tasks: train loss"),
            ("seen_test_loss", "seen tasks: test loss"),
            ("icl_loss", "unseen tasks: ICL loss"))
    if samplers is None or samplers.compared[[c for c, _ in bars]].isna().all(axis=None):
        return None
    summary = samplers.compared  # the paper's four; the report lists the others in a table
    positions = np.arange(len(summary))
    width = 0.8 / len(bars)
    figure, (axes,) = plotting.new_figure(width_per_panel=max(5.0, 1.6 * len(summary)))
    for index, (column, label) in enumerate(bars):
        values = summary[column].to_numpy(dtype=float)
        drawn = axes.bar(positions + (index - 1) * width, np.nan_to_num(values), width,
                         label=label, color=plotting.SHADES[index + 1] if index else "white",
                         edgecolor="black", hatch=plotting.HATCHES[index])
        axes.bar_label(drawn, labels=[f"{v:.2f}" if not math.isnan(v) else "n/a"
                                      for v in values], fontsize=7)
    axes.set_xticks(positions, list(summary["sampler"]))
    axes.set_xlabel("task sampler P(K)")
    axes.set_ylabel("mean loss ↓")
    axes.set_title(f"{FIGURE_3_LEFT}: multi-task fit vs ICL by sampler", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, axis="y", alpha=0.3)
    return plotting.save(figure, path)


def draw_size_binned(analysis: RunAnalysis, path: Path) -> Path | None:
    """F3 centre/right: seen-task train and test loss by training-set size bin, per sampler."""
    samplers = analysis.of(SamplersAnalysis)
    if samplers is None or samplers.binned.empty:
        return None
    binned = samplers.binned
    bins = list(dict.fromkeys(binned["bin"].astype(str)))
    positions = {name: index for index, name in enumerate(bins)}
    figure, axes_list = plotting.new_figure(2)
    for axes, split, panel in zip(axes_list, ("train", "test"), ("centre", "right"),
                                  strict=True):
        for index, label in enumerate(dict.fromkeys(binned["label"])):
            curve = binned[(binned["label"] == label) & (binned["split"] == split)]
            curve = curve[curve["n_tasks"] > 0]
            if curve.empty:
                continue
            plotting.errorbar(axes, [positions[str(name)] for name in curve["bin"]], curve,
                              label=label, **plotting.style(index))
        axes.set_xticks(range(len(bins)), bins, rotation=20, fontsize=8)
        axes.set_xlabel("task training-set size (log-spaced bins)")
        axes.set_ylabel(f"mean seen-task {split} loss ↓")
        axes.set_title(f"Figure 3 ({panel}): {split} loss by task size", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, title="sampler", title_fontsize=8)
    return plotting.save(figure, path)


PLOTS = (PaperFigure(FIGURE_3_LEFT, "fig3_samplers.png", draw_sampler_summary),
         PaperFigure(FIGURE_3_CENTRE_RIGHT, "fig3_size_bins.png", draw_size_binned))


# --- findings: the test behind the verdict ---------------------------------------------------


# The seen-task average the proportional-first verdict rests on: the per-task mean, in which
# each task counts once as in the unseen ICL loss it is set beside, and which proportional
# sampling does not minimise by construction (it minimises the pooled training loss). The
# pooled ranking is reported beside it.
VERDICT_AVERAGE = "per-task mean"


def _rankings(samplers: SamplersAnalysis) -> list[tuple[str, str, pd.DataFrame, bool]]:
    """(summary column, label, per-task table, in the verdict) for each ranking reported."""
    pooled = seen_fit.pooled_per_task(samplers.per_task_seen_test, samplers.test_weights)
    return [("seen_test_loss", f"seen test, {VERDICT_AVERAGE}", samplers.per_task_seen_test,
             True),
            ("icl_loss", "unseen ICL", samplers.per_task_icl, True),
            ("seen_test_loss_pooled", "seen test, pooled (not in the verdict)", pooled, False)]


def _rank_of(compared: pd.DataFrame, column: str, per_task: pd.DataFrame, best: str,
             bootstrap: BootstrapOptions) -> tuple[int, int, RankingStability] | None:
    values = compared[column].dropna()
    if best not in values.index or len(values) < 2:
        return None
    stability = ranking_stability(per_task, best, n_boot=bootstrap.n_boot, seed=bootstrap.seed)
    return int(values.rank(method="min")[best]), len(values), stability


def _proportional_best(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                       ) -> FindingResult:
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    compared = samplers.compared.set_index("sampler")
    best = samplers.reference
    if best is None:
        return undefined(finding, "no proportional-sampling model in this run")
    if len(compared) < 2:
        return undefined(finding, "needs proportional and at least one of the samplers it is "
                                  "compared with")
    directions, significant, p_values, parts, tests = [], [], [], [], []
    first: dict[str, bool] = {}
    for column, label, per_task, in_verdict in _rankings(samplers):
        ranked = _rank_of(compared, column, per_task, best, bootstrap)
        if ranked is None:
            parts.append(f"{label}: not measured")
            continue
        rank, count, stability = ranked
        first[column] = rank == 1
        parts.append(f"{label} rank {rank}/{count}")
        tests.append(f"{label}: {stability.describe()}")
        if in_verdict:
            directions.append(rank == 1)
            significant.append(stability.share_first >= RANKING_CONFIDENCE)
            # The share of resamples in which the ranking fails plays the role of a p-value.
            p_values.append(1.0 - stability.share_first)
    among = ", ".join(compared.index)
    return FindingResult(finding, verdict(directions, significant), None,
                         largest_p(p_values),
                         f"{best} among {{{among}}}: " + "; ".join(parts) + _disagreement(first),
                         test=f"bootstrap over tasks, ✓ needs first in ≥ "
                              f"{RANKING_CONFIDENCE:.0%} (" + "; ".join(tests) + ")")


def _disagreement(first: dict[str, bool]) -> str:
    """A sentence when the two seen-test averages disagree on whether proportional is first."""
    mean, pooled = first.get("seen_test_loss"), first.get("seen_test_loss_pooled")
    if mean is None or pooled is None or mean == pooled:
        return ""
    where = "pooled average" if pooled else VERDICT_AVERAGE
    return (f". The seen-test averages disagree: first on the {where} only; the verdict rests "
            f"on the {VERDICT_AVERAGE}")


def _ra_underfits(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                  ) -> FindingResult:
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    if samplers.reference is None:
        return undefined(finding, "no proportional-sampling model in this run")
    kept = [name for name in samplers.comparison.compared
            if samplers.kind(name) == seen_fit.REVERSE_ANNEALING]
    if not kept:
        return undefined(finding, "no reverse-annealing model in Figure 3")
    fits = [samplers.fits[name] for name in kept if samplers.fits[name].train.defined]
    if not fits:
        return undefined(finding, f"fewer than 3 small tasks with train losses "
                                  f"(n={samplers.fits[kept[0]].train.n})")
    differences = [fit.train.mean_difference for fit in fits]
    text = ("train loss minus proportional's over the small tasks: "
            + "; ".join(f"{fit.sampler} {fit.train.mean_difference:+.3f} (n={fit.train.n})"
                        for fit in fits)
            + ". Readings of the schedule: " + _readings(samplers))
    return FindingResult(
        finding, verdict([d > 0 for d in differences], [passes(fit.train) for fit in fits],
                         [opposed(fit.train) for fit in fits]),
        min(differences), largest_p([fit.train.p_value for fit in fits]), text,
        test="; ".join(f"{fit.sampler} train: {fit.train.describe()}" for fit in fits))


def _readings(samplers: SamplersAnalysis) -> str:
    """Which reverse-annealing schedules, over the whole sweep, underfit the small tasks."""
    sweep = samplers.comparison.sweep
    parts = []
    for schedule in ANNEALING_SCHEDULES:
        runs = [name for name in sweep.loc[sweep["schedule"] == schedule, "sampler"]
                if name in samplers.fits]
        if not runs:
            parts.append(f"{schedule} not run")
            continue
        under = [name for name in runs if fit_label(samplers.fits[name]) == "underfits"]
        parts.append(f"{schedule} underfits in {', '.join(under) or 'none'} of {len(runs)}")
    return "; ".join(parts)


def _uniform_overfits(analysis: RunAnalysis, finding: Finding, bootstrap: BootstrapOptions
                      ) -> FindingResult:
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    uniform = [name for name in samplers.comparison.compared if samplers.kind(name) == "uniform"]
    if samplers.reference is None or not uniform:
        return undefined(finding, "needs a proportional and a uniform model")
    fit = samplers.fits[uniform[0]]
    if not (fit.train.defined and fit.test.defined):
        return undefined(finding, f"fewer than 3 small tasks with both losses (n={fit.test.n})")
    found = verdict([fit.train.mean_difference < 0, fit.test.mean_difference > 0],
                    [opposed(fit.train), passes(fit.test)],
                    [passes(fit.train), opposed(fit.test)])
    text = (f"{fit.sampler} minus {fit.reference} over the small tasks: train "
            f"{fit.train.mean_difference:+.3f}, test {fit.test.mean_difference:+.3f}, "
            f"test-minus-train gap {fit.gap_difference:+.3f} (n={fit.test.n})")
    return FindingResult(finding, found, fit.test.mean_difference,
                         largest_p([fit.train.opposite_p, fit.test.p_value]), text,
                         test=f"train: {fit.train.describe()}; test: {fit.test.describe()}")


# --- findings: the same test under the category-block bootstrap ------------------------------


def _proportional_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions) -> Robustness:
    """How often proportional stays first when categories, then tasks, are resampled."""
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    kinds = samplers.compared.set_index("sampler")["sampler_kind"]
    proportional = [name for name, kind in kinds.items() if kind == "proportional"]
    checks = []
    for per_task, label in ((samplers.per_task_seen_test, "seen test"),
                            (samplers.per_task_icl, "unseen ICL")):
        if not proportional or proportional[0] not in per_task.columns or per_task.shape[1] < 2:
            continue
        target = list(per_task.columns).index(proportional[0])
        result = block_bootstrap(per_task, analysis.categories, lead_statistic(target),
                                 n_boot=bootstrap.n_boot, seed=bootstrap.seed)
        first = (f" first in {result.share_above:.0%} of resamples;" if result.defined else "")
        checks.append(Check(f"{label}:{first} {proportional[0]}'s lead", result,
                            result.defined and result.share_above >= RANKING_CONFIDENCE))
    return combine(checks)


def _small_task_robustness(analysis: RunAnalysis, bootstrap: BootstrapOptions, *,
                           kind: str, signs: dict[str, float]) -> Robustness:
    """Each ``kind`` sampler of Figure 3 minus proportional on the small tasks, per split in
    ``signs`` (the claimed direction of its difference), tasks resampled by category."""
    samplers = analysis.of(SamplersAnalysis)
    assert samplers is not None
    reference, rows = samplers.reference, list(samplers.small)
    names = [name for name in samplers.comparison.compared if samplers.kind(name) == kind]
    checks = []
    for name in names if reference is not None else []:
        for split, sign in signs.items():
            losses = samplers.seen_losses[split].reindex(rows)
            checks.append(paired_check(
                f"{name} − {reference}, {split} loss on the small tasks", losses[reference],
                losses[name], analysis.categories, sign=sign, n_boot=bootstrap.n_boot,
                seed=bootstrap.seed))
    return combine(checks)


# --- findings: the paper's claim -------------------------------------------------------------

PROPORTIONAL_BEST = Finding(
    id="4-proportional-best", paper_section="4", section=KEY, figure=FIGURE_3_LEFT,
    claim="Proportional sampling has the lowest seen-task test loss (per-task mean) and "
          "unseen ICL loss",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="proportional ranks first on both",
    how_to_compute="Among the samplers of Figure 3 (proportional, uniform and the two "
                   "reverse-annealing runs with the lowest mean seen-task validation loss; "
                   "DWA and the other runs are reported apart), rank by seen-task test loss "
                   "averaged over tasks and by mean unseen ICL loss; proportional should rank "
                   "first on both, and stay first in at least 95% of bootstrap resamples of "
                   "the tasks. The pooled (example-weighted) seen-test ranking, which "
                   "proportional sampling favours by construction, is reported beside it and "
                   "not counted in the verdict.",
    evaluate=_proportional_best, robustness=_proportional_robustness,
)

RA_UNDERFITS = Finding(
    id="4-ra-underfits-small", paper_section="4", section=KEY, figure=FIGURE_3_CENTRE_RIGHT,
    panel="centre",
    claim="Reverse annealing underfits the lower-resource tasks: higher train loss than "
          "proportional sampling on the small-task bins",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="Reverse Annealing sampling underfits lower resource tasks",
    how_to_compute="On the seen tasks of the lowest size bins of Figure 3 (by default the "
                   "lowest 2 of 5 log-spaced bins), the per-task train loss of each "
                   "reverse-annealing run of Figure 3 minus proportional's, Wilcoxon "
                   "signed-rank over those tasks: higher, at p < 0.05, for every run. The "
                   "run's text also says which schedule readings of the sweep (linear, "
                   "inverse_linear, log_linear) underfit. Under p_k ∝ n_k^(1/T), T ≥ 1, the "
                   "smallest tasks are sampled at least as often as under proportional at "
                   "every step, so fewer draws cannot explain an underfit.",
    evaluate=_ra_underfits,
    robustness=partial(_small_task_robustness, kind=seen_fit.REVERSE_ANNEALING,
                       signs={"train": 1.0}),
)

UNIFORM_OVERFITS = Finding(
    id="4-uniform-overfits-small", paper_section="4", section=KEY, figure=FIGURE_3_CENTRE_RIGHT,
    claim="Uniform sampling overfits the lower-resource tasks: lower train loss but higher "
          "test loss than proportional sampling on the small-task bins",
    kind="direction", paper_value=None, paper_p=None,
    paper_text="Uniform Sampling overfits lower resource tasks",
    how_to_compute="On the seen tasks of the lowest size bins of Figure 3 (by default the "
                   "lowest 2 of 5 log-spaced bins), uniform's per-task train loss minus "
                   "proportional's should be negative and its test loss minus proportional's "
                   "positive (hence a larger test-minus-train gap), each by a Wilcoxon "
                   "signed-rank test over those tasks at p < 0.05; the p-value is the larger "
                   "of the two.",
    evaluate=_uniform_overfits,
    robustness=partial(_small_task_robustness, kind="uniform",
                       signs={"train": -1.0, "test": 1.0}),
)


# --- the YAML keys ---------------------------------------------------------------------------


@register_section(KEY)
class SamplersSection(Section):
    """§4: models by task sampler (the names are display labels, e.g. "proportional")."""

    title = "§4 Multi-task generalization vs ICL (task samplers)"
    paper_section = "4"
    analysis = SamplersAnalysis
    plots = PLOTS
    findings = (PROPORTIONAL_BEST, RA_UNDERFITS, UNIFORM_OVERFITS)

    models: dict[str, str]  # sampler name → variant label
    # §4: "We sweep over T = 10^{2,3,4,5} and report the two highest performing methods based
    # on seen task validation data": how many reverse-annealing runs Figure 3 keeps.
    keep_reverse_annealing: int = Field(default=2, ge=1)
    # Figure 3's log-spaced size bins, and how many of the lowest hold the "lower resource
    # tasks" on which §4's under- and overfitting claims are tested.
    size_bins: int = Field(default=5, ge=2)
    small_bins: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _small_bins_leave_larger_ones(self) -> SamplersSection:
        if self.small_bins >= self.size_bins:
            raise ValueError(f"small_bins ({self.small_bins}) must be below size_bins "
                             f"({self.size_bins}): the small tasks are compared with the rest")
        return self

    def model_labels(self) -> list[str]:
        return list(self.models.values())

    def needs(self, eval_config: EvalConfig) -> list[Need]:
        plan = EvalPlan(icl=True, seen=True)
        return [Need(label, "final", plan) for label in self.model_labels()]
