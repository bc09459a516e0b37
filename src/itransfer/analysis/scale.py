"""What a run can show: the model's scale, its distance from guessing, each correlation's power.

A miniature's verdicts are easy to mistake for findings. The report's header therefore states
the model's parameter count, each evaluated model's mean unseen-task loss beside the loss of a
uniform guess over the vocabulary (ln V) and its mean ROUGE-L, and for every correlation the
number of tasks behind it with the smallest |ρ| that many tasks can show. When the models have
learned next to nothing (mean loss near ln V) or generate nothing ROUGE-L can score, every
verdict is a check that the pipeline runs, not evidence about the paper's claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from itransfer.analysis.correlations import model_rows, task_values
from itransfer.analysis.rows import ROUGE_F, ROUGE_RECALL, evaluated_step, rows_of_groups
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.verdicts import FindingResult

ALPHA = 0.05
POWER = 0.8
# A model whose mean loss is at least this share of ln V predicts about as well as a uniform
# guess over the vocabulary: its per-task differences are noise, not transfer.
NEAR_UNIFORM_SHARE = 0.9


def critical_rho(n: int, alpha: float = ALPHA) -> float:
    """The smallest |ρ| with a two-sided p < ``alpha`` over ``n`` tasks (t approximation,
    the one :func:`scipy.stats.spearmanr` uses for its p-value); NaN below 3 tasks."""
    if n < 3:
        return float("nan")
    t = float(stats.t.ppf(1 - alpha / 2, n - 2))
    return t / math.sqrt(n - 2 + t * t)


def detectable_rho(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The |ρ| that ``n`` tasks detect (p < ``alpha``) with probability ``power``.

    Fisher's z with the variance of Spearman's rho, 1.06 / (n − 3) (Fieller, Hartley &
    Pearson, 1957): |ρ| = tanh((z_{1−α/2} + z_power) · √(1.06 / (n − 3))); NaN below 4 tasks.
    """
    if n < 4:
        return float("nan")
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return min(1.0, math.tanh(z * math.sqrt(1.06 / (n - 3))))


@dataclass(frozen=True)
class ScaleAssessment:
    num_parameters: int | None
    vocab_size: int | None
    models: pd.DataFrame  # per model: step, mean ICL/fine-tuning loss, ROUGE-L recall, F, tasks
    power: pd.DataFrame  # per correlation finding: n, critical |ρ|, |ρ| detectable at 80 %
    pipeline_check_reasons: tuple[str, ...]

    @property
    def uniform_loss(self) -> float | None:
        return math.log(self.vocab_size) if self.vocab_size else None

    @property
    def pipeline_check(self) -> bool:
        """True when the verdicts check the pipeline rather than test the paper."""
        return bool(self.pipeline_check_reasons)


def _unseen_means(rows: pd.DataFrame, method: str, metric: str) -> tuple[float, int]:
    """Mean over tasks of :func:`task_values` (fine-tuning: k > 0 only), and the task count."""
    if method == "finetune":
        rows = rows[rows["shots"] > 0]
    per_task = task_values(rows, method=method, metric=metric)
    return (float(per_task.mean()) if not per_task.empty else float("nan"), int(per_task.size))


# Recall first (the paper's metric), the F-measure beside it: see rows.ROUGE_RECALL.
ROUGE_COLUMNS = ("icl_rougeL_recall", "finetune_rougeL_recall_k>0", "icl_rougeL_F",
                 "finetune_rougeL_F_k>0")
_ROUGE_METRICS = {"icl_rougeL_recall": ("icl", ROUGE_RECALL),
                  "finetune_rougeL_recall_k>0": ("finetune", ROUGE_RECALL),
                  "icl_rougeL_F": ("icl", ROUGE_F), "finetune_rougeL_F_k>0": ("finetune", ROUGE_F)}


def _rouge_means(rows: pd.DataFrame) -> dict[str, float]:
    return {column: _unseen_means(rows, method, metric)[0]
            for column, (method, metric) in _ROUGE_METRICS.items()}


def assess_scale(frame: pd.DataFrame, analysis: RunAnalysis,
                 findings: Sequence[FindingResult]) -> ScaleAssessment:
    manifest = analysis.manifest
    frame = rows_of_groups(frame, ("unseen",))  # held-out groups have their own table
    pretrained = manifest.models.get(manifest.pretrained)
    num_parameters = pretrained.num_parameters if pretrained else None
    vocab_size = pretrained.vocab_size if pretrained else None
    records = []
    for label in manifest.models:
        step = evaluated_step(frame, manifest, label) if not frame.empty else None
        rows = model_rows(frame, label, step) if not frame.empty else frame
        if rows.empty:
            continue
        icl_loss, n_tasks = _unseen_means(rows, "icl", "loss")
        finetune_loss, _ = _unseen_means(rows, "finetune", "loss")
        records.append({"model": label, "step": int(rows["checkpoint_step"].iloc[0]),
                        "icl_loss": icl_loss, "finetune_loss_k>0": finetune_loss,
                        **_rouge_means(rows), "n_tasks": n_tasks})
    models = pd.DataFrame.from_records(
        records, columns=["model", "step", "icl_loss", "finetune_loss_k>0", *ROUGE_COLUMNS,
                          "n_tasks"])
    power = pd.DataFrame.from_records(
        [{"finding": result.finding.id, "n_tasks": result.correlation.n,
          "rho": result.correlation.rho,
          "critical_abs_rho_p<0.05": critical_rho(result.correlation.n),
          "abs_rho_detectable_80%": detectable_rho(result.correlation.n)}
         for result in findings if result.correlation is not None],
        columns=["finding", "n_tasks", "rho", "critical_abs_rho_p<0.05",
                 "abs_rho_detectable_80%"])
    return ScaleAssessment(num_parameters, vocab_size, models, power,
                           _pipeline_check_reasons(models, vocab_size))


def best_rouge(models: pd.DataFrame) -> list[str]:
    """The header's ROUGE-L part: the best mean recall (the paper's metric), the F beside it."""
    recall = models[list(ROUGE_COLUMNS[:2])].max(axis=1).dropna()
    f_measure = models[list(ROUGE_COLUMNS[2:])].max(axis=1).dropna()
    parts = [f"{name} {best.max():.1f}" for name, best in (("recall", recall), ("F", f_measure))
             if not best.empty]
    return ["best mean ROUGE-L " + ", ".join(parts)] if parts else []


def _pipeline_check_reasons(models: pd.DataFrame, vocab_size: int | None) -> tuple[str, ...]:
    reasons = []
    if models.empty:
        return ("no model has unseen-task results",)
    losses = models[["icl_loss", "finetune_loss_k>0"]].min(axis=1).dropna()
    if vocab_size and not losses.empty:
        uniform = math.log(vocab_size)
        best = float(losses.min())
        if best >= NEAR_UNIFORM_SHARE * uniform:
            reasons.append(f"the best mean loss, {best:.2f}, is {best / uniform:.0%} of the "
                           f"uniform-guess loss ln {vocab_size} = {uniform:.2f}")
    rouge = models[list(ROUGE_COLUMNS)]
    if rouge.notna().any(axis=None) and not (rouge.fillna(0) > 0).any(axis=None):
        reasons.append("no generation scores above ROUGE-L 0")
    return tuple(reasons)
