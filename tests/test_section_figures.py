"""Figures 1 (right), 2 and 4, read off the drawn figures: which points and curves they draw
from the planted rows, their legends, axis labels, titles and tick labels, how their series
are told apart in black and white, and when a figure is left out (issue 27's mutants of
draw_transfer_vs_icl, draw_data_limits, draw_data_limit_deltas, draw_trajectories and
draw_phase_deltas)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections.data_limits import (
    DataLimitsAnalysis,
    draw_data_limit_deltas,
    draw_data_limits,
)
from itransfer.analysis.sections.trajectory import (
    TrajectoryAnalysis,
    draw_phase_deltas,
    draw_trajectories,
)
from itransfer.analysis.sections.transfer import TransferAnalysis, draw_transfer_vs_icl
from test_analysis import SPLIT_STEP, build_rows, manifest_dict

SHOTS = 5  # every section's k in manifest_dict()
STEPS = (0, *(100, 200, 300))  # Figure 4's trajectory: the pre-trained model is step 0
Draw = Callable[[RunAnalysis, Path], "Path | None"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame.from_records(build_rows(num_tasks=8))


def analysis_of(frame: pd.DataFrame, sections: set[str]) -> RunAnalysis:
    return analyse(frame, RunManifest.model_validate(manifest_dict(sections=sections)),
                   n_boot=10)


@pytest.fixture(scope="module")
def full(frame: pd.DataFrame) -> RunAnalysis:
    return analysis_of(frame, {"transfer", "data_limits", "trajectory", "mixing"})


def drawn(monkeypatch: pytest.MonkeyPatch, draw: Draw, analysis: RunAnalysis) -> Any:
    """The figure ``draw`` makes, rendered (so a bad colour or style fails here) and kept
    instead of written; None when it draws nothing."""
    from itransfer.analysis import plotting

    kept: list[Any] = []

    def keep(figure: Any, path: Path) -> Path:
        figure.savefig(io.BytesIO(), format="png")
        kept.append(figure)
        return path

    monkeypatch.setattr(plotting, "save", keep)
    path = Path("figure.png")
    result = draw(analysis, path)
    if result is None:
        assert not kept
        return None
    assert result == path
    (figure,) = kept
    return figure


def per_task(frame: pd.DataFrame, model: str, step: int, method: str) -> pd.Series:
    """Task → the planted test loss of one model and step: ICL, or the k-shot fine-tuning
    loss without context averaged over seeds."""
    rows = frame[(frame["model"] == model) & (frame["checkpoint_step"] == step)
                 & (frame["split"] == "test") & (frame["metric"] == "loss")
                 & (frame["method"] == method)]
    if method == "finetune":
        rows = rows[(rows["shots"] == SHOTS) & (rows["context"] == "none")]
    return rows.groupby("task")["value"].mean().sort_index()


def trajectory_point(frame: pd.DataFrame, model: str, step: int, method: str) -> pd.Series:
    return per_task(frame, "pretrained" if step == 0 else model, step, method)


def offsets(axes: Any) -> np.ndarray:
    (points,) = axes.collections
    return np.asarray(points.get_offsets())


def assert_scatter(axes: Any, x: pd.Series, y: pd.Series) -> None:
    assert np.allclose(offsets(axes), np.column_stack([x.to_numpy(), y.to_numpy()]))


def assert_zero_lines(axes: Any) -> None:
    """Dotted grey lines at Δ = 0 on both axes: which tasks got better, which worse."""
    lines = axes.get_lines()
    assert len(lines) == 2
    horizontal, vertical = lines
    assert list(horizontal.get_ydata()) == [0, 0] and list(vertical.get_xdata()) == [0, 0]
    for line in lines:
        assert line.get_linestyle() == ":"
        red, green, blue = to_rgb(line.get_color())
        assert red == green == blue


def assert_greyscale_series(lines: list[Any]) -> None:
    """Every series is grey and differs from every other in shade, marker and line style."""
    for line in lines:
        red, green, blue = to_rgb(line.get_color())
        assert red == green == blue, (line.get_label(), line.get_color())
    for values in ([to_rgb(line.get_color()) for line in lines],
                   [line.get_marker() for line in lines],
                   [line.get_linestyle() for line in lines]):
        assert len(set(values)) == len(lines), values
    assert "None" not in {line.get_marker() for line in lines}


def legend_texts(axes: Any) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


# --- Figure 1 (right) -------------------------------------------------------------------------


def test_figure_1_right_scatters_the_it_models_per_task_ft_against_icl_loss(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """One point per unseen task: the IT model's 5-shot fine-tuning loss (no context) against
    its ICL loss, at its final step; the axes say which k and context, the title names the
    figure, the model and the correlation drawn."""
    figure = drawn(monkeypatch, draw_transfer_vs_icl, full)
    (axes,) = figure.axes
    assert_scatter(axes, per_task(frame, "it-proportional", 300, "finetune"),
                   per_task(frame, "it-proportional", 300, "icl"))
    assert len(offsets(axes)) == 8
    assert axes.get_xlabel() == "5-shot fine-tuning test loss (context: none)"
    assert axes.get_ylabel() == "in-context learning test loss"
    transfer = full.of(TransferAnalysis)
    assert transfer is not None
    assert axes.get_title() == ("Figure 1 (right): FT vs ICL per unseen task (it-proportional)"
                                f"\n{transfer.correlation.describe()}")
    assert not axes.get_lines()  # no zero lines: these are losses, not changes


# --- Figure 2 ---------------------------------------------------------------------------------


def test_figure_2_left_draws_each_limits_mean_icl_and_finetune_loss(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """Two lines over the data limits, smallest first: the mean ICL loss and the mean 5-shot
    fine-tuning loss of each limit's model; ticks name the limits; legend, axis labels and
    title say what is drawn; the lines are grey, hollow-marked and differ in shade, marker
    and line style."""
    figure = drawn(monkeypatch, draw_data_limits, full)
    (axes,) = figure.axes
    models = ("it-limit10", "it-limit100")
    icl, finetune = axes.get_lines()
    for line, label, method in ((icl, "in-context learning", "icl"),
                                (finetune, "5-shot fine-tuning", "finetune")):
        assert line.get_label() == label
        assert list(line.get_xdata()) == [0, 1]
        expected = [per_task(frame, model, 300, method).mean() for model in models]
        assert np.allclose(line.get_ydata(), expected), label
        assert to_rgb(line.get_markerfacecolor()) == (1.0, 1.0, 1.0), label  # hollow
    assert list(axes.get_xticks()) == [0, 1]
    assert [text.get_text() for text in axes.get_xticklabels()] == ["10", "100"]
    assert legend_texts(axes) == ["in-context learning", "5-shot fine-tuning"]
    assert axes.get_xlabel() == "training examples per task (data limit)"
    assert axes.get_ylabel() == "mean unseen-task test loss ↓"
    assert axes.get_title() == "Figure 2 (left): data per task vs transfer and ICL"
    assert_greyscale_series([icl, finetune])


def test_figure_2_right_scatters_each_tasks_change_from_the_larger_to_the_smaller_limit(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """One point per task: the change (it-limit10 − it-limit100) of its 5-shot fine-tuning
    loss against that of its ICL loss, with zero lines; labels and a title naming the two
    models and the correlation drawn."""
    figure = drawn(monkeypatch, draw_data_limit_deltas, full)
    (axes,) = figure.axes

    def change(method: str) -> pd.Series:
        return (per_task(frame, "it-limit10", 300, method)
                - per_task(frame, "it-limit100", 300, method))

    assert_scatter(axes, change("finetune"), change("icl"))
    assert len(offsets(axes)) == 8
    assert_zero_lines(axes)
    assert axes.get_xlabel() == "Δ 5-shot fine-tuning loss"
    assert axes.get_ylabel() == "Δ in-context learning loss"
    limits = full.of(DataLimitsAnalysis)
    assert limits is not None
    assert axes.get_title() == ("Figure 2 (right): per-task change, it-limit10 − it-limit100"
                                f"\n{limits.correlation.describe()}")


# --- Figure 4 ---------------------------------------------------------------------------------


def assert_trajectory_panels(figure: Any, frame: pd.DataFrame, series: dict[str, str],
                             split: bool) -> None:
    """Figure 4 (left): a fine-tuning and an ICL panel, each with one curve per legend label
    in ``series`` (label → model) over the steps 0 (pre-trained), 100, 200, 300, and the
    phase split at step 100 where the run has §5.1."""
    assert figure.get_suptitle() == (
        "Figure 4 (left): transfer and ICL through instruction tuning")
    finetune, icl = figure.axes
    for axes, method, name in ((finetune, "finetune", "5-shot fine-tuning"),
                               (icl, "icl", "in-context learning")):
        assert axes.get_title() == name
        assert axes.get_xlabel() == "instruction-tuning step (0 = pre-trained)"
        assert axes.get_ylabel() == f"mean unseen-task {name} loss ↓"
        curves = {container.get_label(): container.lines[0] for container in axes.containers}
        assert list(curves) == list(series), name
        for label, model in series.items():
            expected = [trajectory_point(frame, model, step, method).mean() for step in STEPS]
            assert list(curves[label].get_xdata()) == list(STEPS), label
            assert np.allclose(curves[label].get_ydata(), expected), (name, label)
        splits = [line for line in axes.get_lines() if line.get_label() == "phase split"]
        legend = legend_texts(axes)
        assert [text for text in legend if text != "phase split"] == list(series), name
        assert legend.count("phase split") == int(split), name
        assert len(splits) == int(split)
        for line in splits:
            assert list(line.get_xdata()) == [SPLIT_STEP, SPLIT_STEP]
            assert line.get_linestyle() == ":"
            red, green, blue = to_rgb(line.get_color())
            assert red == green == blue
        if len(curves) > 1:
            assert_greyscale_series(list(curves.values()))


def test_figure_4_left_draws_the_runs_with_and_without_mixing_and_the_phase_split(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """With §5.2 in the run, each panel draws the model with mixing and the one without,
    named by label and model, each at the planted mean loss of every step (step 0 the
    pre-trained model), told apart in black and white, and §5.1's phase split, dotted."""
    figure = drawn(monkeypatch, draw_trajectories, full)
    assert_trajectory_panels(figure, frame, {"with mixing (it-mix3)": "it-mix3",
                                             "without mixing (it-proportional)":
                                                 "it-proportional"}, split=True)


def test_figure_4_left_draws_section_5_1s_model_alone_or_mixing_without_a_split(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame,
) -> None:
    """Without §5.2, the panels draw §5.1's model (named by its label) and the phase split;
    with §5.2 but without §5.1, both mixing curves and no phase split."""
    figure = drawn(monkeypatch, draw_trajectories, analysis_of(frame, {"trajectory"}))
    assert_trajectory_panels(figure, frame, {"it-proportional": "it-proportional"},
                             split=True)
    figure = drawn(monkeypatch, draw_trajectories, analysis_of(frame, {"mixing"}))
    assert_trajectory_panels(figure, frame, {"with mixing (it-mix3)": "it-mix3",
                                             "without mixing (it-proportional)":
                                                 "it-proportional"}, split=False)


def assert_phase_panel(axes: Any, frame: pd.DataFrame, before: int, after: int) -> None:
    """One point per task: its change from step ``before`` to ``after`` of the 5-shot
    fine-tuning loss against that of its ICL loss, with zero lines."""

    def change(method: str) -> pd.Series:
        return (trajectory_point(frame, "it-proportional", after, method)
                - trajectory_point(frame, "it-proportional", before, method))

    assert_scatter(axes, change("finetune"), change("icl"))
    assert len(offsets(axes)) == 8
    assert_zero_lines(axes)
    assert axes.get_xlabel() == "Δ 5-shot fine-tuning loss"
    assert axes.get_ylabel() == "Δ in-context learning loss"


def test_figure_4_centre_and_right_scatter_each_phases_per_task_changes(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """The centre panel scatters each task's changes over the early phase (steps 0 → 100),
    the right one over the late phase (100 → 300); each title names the panel, its steps
    and the phase's correlation."""
    figure = drawn(monkeypatch, draw_phase_deltas, full)
    centre, right = figure.axes
    assert_phase_panel(centre, frame, 0, SPLIT_STEP)
    assert_phase_panel(right, frame, SPLIT_STEP, 300)
    trajectory = full.of(TrajectoryAnalysis)
    assert trajectory is not None
    assert centre.get_title() == ("Figure 4 (centre): steps 0 → 100\n"
                                  f"{trajectory.phases.early.describe()}")
    assert right.get_title() == ("Figure 4 (right): steps 100 → 300\n"
                                 f"{trajectory.phases.late.describe()}")


def test_figures_with_nothing_to_draw_are_left_out_but_one_drawn_phase_is_kept(
    monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, full: RunAnalysis,
) -> None:
    """A run whose data-limit models have no rows draws neither panel of Figure 2; one whose
    IT model was not fine-tuned at the section's k draws no Figure 1 (right); a run without
    the pre-trained model still draws Figure 4 (right), its centre panel empty. A run without
    a section draws none of its figures."""
    raw = manifest_dict(sections={"transfer", "data_limits", "trajectory"})
    raw["sections"]["transfer"]["correlation_shots"] = 7  # no fine-tuning run at k = 7
    unmeasured = frame[~frame["model"].isin(["it-limit10", "it-limit100", "pretrained"])]
    analysis = analyse(unmeasured, RunManifest.model_validate(raw), n_boot=10)
    for draw in (draw_data_limits, draw_data_limit_deltas, draw_transfer_vs_icl):
        assert drawn(monkeypatch, draw, analysis) is None, draw.__name__
    figure = drawn(monkeypatch, draw_phase_deltas, analysis)
    centre, right = figure.axes
    assert len(offsets(centre)) == 0
    assert_phase_panel(right, frame, SPLIT_STEP, 300)
    empty = RunAnalysis(manifest=full.manifest, num_rows=0)
    for draw in (draw_data_limits, draw_data_limit_deltas, draw_transfer_vs_icl,
                 draw_trajectories, draw_phase_deltas):
        assert drawn(monkeypatch, draw, empty) is None, draw.__name__
