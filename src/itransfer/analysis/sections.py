"""Every table and correlation one run's report needs, computed once per paper section.

:func:`analyse` turns (results table, manifest) into a :class:`RunAnalysis`; the figures, the
findings and the report all read from it, so each number is computed in one place. A section
absent from the manifest is None here and vanishes from everything downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from itransfer.analysis import correlations as corr
from itransfer.analysis import seen_fit
from itransfer.analysis.manifest import (
    DataLimitsSpec,
    MixingSpec,
    RunManifest,
    SamplersSpec,
    TrajectorySpec,
    TransferSpec,
)


@dataclass(frozen=True)
class TransferAnalysis:
    """§3.1, Figure 1."""

    spec: TransferSpec
    loss_curves: pd.DataFrame  # label, context, shots → mean fine-tuning loss
    rouge_curves: pd.DataFrame  # the same for ROUGE-L (empty when nothing was generated)
    scatter: pd.DataFrame  # per task: finetune, icl (IT model)
    correlation: corr.Correlation
    icl_means: dict[str, float]  # label → mean ICL loss
    per_task_finetune: pd.DataFrame  # per task: pretrained, instruction_tuned (mean over k > 0)
    per_task_icl: pd.DataFrame  # per task: pretrained, instruction_tuned


@dataclass(frozen=True)
class DataLimitsAnalysis:
    """§3.2, Figure 2."""

    spec: DataLimitsSpec
    summary: pd.DataFrame  # per limit: icl_loss, finetune_loss
    before: str
    after: str
    deltas: pd.DataFrame  # per task: icl/finetune before, after, delta
    correlation: corr.Correlation


@dataclass(frozen=True)
class SamplersAnalysis:
    """§4, Figure 3."""

    spec: SamplersSpec
    summary: pd.DataFrame  # per sampler: seen train/test loss, ICL loss
    binned: pd.DataFrame  # per sampler, split and size bin: mean seen loss


@dataclass(frozen=True)
class TrajectoryAnalysis:
    """§5.1, Figure 4 (left, centre, right)."""

    spec: TrajectorySpec
    curves: pd.DataFrame  # step, method (icl | finetune) → mean loss
    phases: corr.PhaseCorrelations


@dataclass(frozen=True)
class MixingAnalysis:
    """§5.2, Figure 4 (left)."""

    spec: MixingSpec
    curves: pd.DataFrame  # label (with | without), step, method → mean loss


@dataclass(frozen=True)
class RunAnalysis:
    manifest: RunManifest
    num_rows: int
    transfer: TransferAnalysis | None = None
    data_limits: DataLimitsAnalysis | None = None
    samplers: SamplersAnalysis | None = None
    trajectory: TrajectoryAnalysis | None = None
    mixing: MixingAnalysis | None = None


def analyse(
    frame: pd.DataFrame, manifest: RunManifest, *, n_boot: int = 2000, seed: int = 0
) -> RunAnalysis:
    """Compute every section the manifest names (None for the others)."""
    return RunAnalysis(
        manifest=manifest,
        num_rows=len(frame),
        transfer=_transfer(frame, manifest, n_boot, seed) if manifest.transfer else None,
        data_limits=_data_limits(frame, manifest, n_boot, seed) if manifest.data_limits else None,
        samplers=_samplers(frame, manifest) if manifest.samplers else None,
        trajectory=_trajectory(frame, manifest, seed) if manifest.trajectory else None,
        mixing=_mixing(frame, manifest) if manifest.mixing else None,
    )


def evaluated_step(frame: pd.DataFrame, manifest: RunManifest, label: str) -> int | None:
    """The step a section evaluates ``label`` at: the manifest's final step when measured.

    None (the last step with rows) when the manifest does not name a step that has rows, so a
    manifest written before the evaluations finished still gives a report.
    """
    step = manifest.final_step(label)
    mine = frame[frame["model"] == label]
    if step is not None and (mine["checkpoint_step"] == step).any():
        return step
    return None


def trajectory_steps(frame: pd.DataFrame, manifest: RunManifest, label: str) -> tuple[int, ...]:
    """Steps of ``label``'s trajectory (0 = pre-trained) from the manifest, else from the rows."""
    steps = manifest.trajectory_of(label)
    if len(steps) > 1:
        return steps
    found = frame.loc[frame["model"] == label, "checkpoint_step"].dropna().astype(int)
    return tuple(sorted({0, *found.tolist()}))


def _transfer(frame: pd.DataFrame, manifest: RunManifest, n_boot: int, seed: int
              ) -> TransferAnalysis:
    spec = manifest.transfer
    assert spec is not None
    labels = {"pre-trained": spec.pretrained, "instruction-tuned": spec.instruction_tuned}
    steps = {label: step for label, model in labels.items()
             if (step := evaluated_step(frame, manifest, model)) is not None}
    scatter = corr.transfer_vs_icl(
        frame, spec.instruction_tuned, shots=spec.correlation_shots,
        context=spec.correlation_context, step=steps.get("instruction-tuned"),
    )
    pretrained_rows = corr.model_rows(frame, spec.pretrained, steps.get("pre-trained"))
    tuned_rows = corr.model_rows(frame, spec.instruction_tuned, steps.get("instruction-tuned"))
    return TransferAnalysis(
        spec=spec,
        loss_curves=corr.transfer_curves(frame, labels, metric="loss", steps=steps),
        rouge_curves=corr.transfer_curves(frame, labels, metric="rougeL", steps=steps),
        scatter=scatter,
        correlation=corr.spearman(scatter["finetune"], scatter["icl"], n_boot=n_boot, seed=seed),
        icl_means={label: float(corr.icl_values(rows).mean())
                   for label, rows in (("pre-trained", pretrained_rows),
                                       ("instruction-tuned", tuned_rows))},
        per_task_finetune=_paired(_few_shot_mean(pretrained_rows), _few_shot_mean(tuned_rows)),
        per_task_icl=_paired(corr.icl_values(pretrained_rows), corr.icl_values(tuned_rows)),
    )


def _few_shot_mean(rows: pd.DataFrame) -> pd.Series:
    """Per task: fine-tuning loss (no context) averaged over every k > 0 that was run."""
    tuned = rows[(rows["method"] == "finetune") & (rows["split"] == "test")
                 & (rows["metric"] == "loss") & (rows["context"] == "none")
                 & (rows["shots"] > 0)]
    return tuned.groupby(["task", "shots"])["value"].mean().groupby("task").mean()


def _paired(pretrained: pd.Series, tuned: pd.Series) -> pd.DataFrame:
    return pd.concat({"pretrained": pretrained, "instruction_tuned": tuned}, axis=1).dropna()


def _data_limits(frame: pd.DataFrame, manifest: RunManifest, n_boot: int, seed: int
                 ) -> DataLimitsAnalysis:
    spec = manifest.data_limits
    assert spec is not None
    ordered = sorted(spec.models.items(), key=lambda item: corr.limit_sort_key(item[0]))
    if spec.delta is not None:
        before, after = spec.delta
    else:
        # The paper's Figure 2 (right) goes from the largest limit to a small one.
        before, after = ordered[-1][1], ordered[0][1]
    deltas = corr.model_deltas(
        frame, before, after, shots=spec.shots,
        before_step=evaluated_step(frame, manifest, before),
        after_step=evaluated_step(frame, manifest, after),
    )
    return DataLimitsAnalysis(
        spec=spec,
        summary=corr.data_limit_summary(frame, spec.models, shots=spec.shots),
        before=before, after=after, deltas=deltas,
        correlation=corr.delta_correlation(deltas, n_boot=n_boot, seed=seed),
    )


def _samplers(frame: pd.DataFrame, manifest: RunManifest) -> SamplersAnalysis:
    spec = manifest.samplers
    assert spec is not None
    steps = {name: step for name, model in spec.models.items()
             if (step := evaluated_step(frame, manifest, model)) is not None}
    return SamplersAnalysis(
        spec=spec,
        summary=seen_fit.sampler_summary(frame, spec.models, steps=steps),
        binned=seen_fit.size_binned_seen_losses(frame, spec.models, steps=steps),
    )


def _trajectory(frame: pd.DataFrame, manifest: RunManifest, seed: int) -> TrajectoryAnalysis:
    spec = manifest.trajectory
    assert spec is not None
    steps = trajectory_steps(frame, manifest, spec.model)
    return TrajectoryAnalysis(
        spec=spec,
        curves=corr.trajectory_curves(frame, spec.model, steps, pretrained=manifest.pretrained,
                                      shots=spec.shots),
        phases=corr.phase_correlations(
            frame, spec.model, split_step=spec.phase_split_step, final_step=max(steps),
            pretrained=manifest.pretrained, shots=spec.shots, seed=seed,
        ),
    )


def _mixing(frame: pd.DataFrame, manifest: RunManifest) -> MixingAnalysis:
    spec = manifest.mixing
    assert spec is not None
    curves = []
    for label, model in (("with mixing", spec.with_), ("without mixing", spec.without)):
        steps = trajectory_steps(frame, manifest, model)
        curve = corr.trajectory_curves(frame, model, steps, pretrained=manifest.pretrained,
                                       shots=spec.shots)
        curves.append(curve.assign(label=label))
    return MixingAnalysis(spec=spec, curves=pd.concat(curves, ignore_index=True))
