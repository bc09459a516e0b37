"""§3.1's Figure 1 (left), read off the drawn figure: which lines it draws, their data, legend
and how they are told apart (issue 27's surviving mutants of sections/transfer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import analyse
from test_analysis import SHOTS, manifest_dict, unseen_rows

# Planted per-task losses of four tasks: the fine-tuning loss (unseen_rows lowers it by 0.01 per
# example and by 0.1 with exemplars in context; ROUGE-L recall is 45 − 10 × it, F 40 − 10 × it)
# and the ICL loss.
TASKS = [f"task{index:03d}_unseen" for index in range(4)]
PLANTED_FT = {"pre-trained": np.array([1.0, 1.5, 2.0, 2.5]),  # mean 1.75
              "instruction-tuned": np.array([2.0, 2.5, 3.0, 3.5])}  # mean 2.75
PLANTED_ICL = {"pre-trained": np.array([4.0, 4.5, 5.0, 5.5]),  # mean 4.75
               "instruction-tuned": np.array([3.0, 3.5, 4.0, 4.5])}  # mean 3.75
CONTEXT_OFFSET = {"none": 0.0, "exemplars": -0.1}
# legend → (model, fine-tuning context), in the order the figure draws them: the paper's first
LINES = {"pre-trained, context: none": ("pre-trained", "none"),
         "instruction-tuned, context: none": ("instruction-tuned", "none"),
         "instruction-tuned, context: exemplars": ("instruction-tuned", "exemplars"),
         "pre-trained, context: exemplars (ours)": ("pre-trained", "exemplars")}
ICL_LEGENDS = ["pre-trained, ICL (no tuning)", "instruction-tuned, ICL (no tuning)"]


def figure_1_left(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Figure 1 (left) of the planted rows (the pre-trained model at step 0, the IT model at its
    final step 300), kept as a Figure instead of being written."""
    from itransfer.analysis import plotting
    from itransfer.analysis.sections.transfer import draw_transfer_curves

    rng = np.random.default_rng(0)
    rows = [*unseen_rows("pretrained", 0, TASKS, PLANTED_ICL["pre-trained"],
                         PLANTED_FT["pre-trained"], rng),
            *unseen_rows("it-proportional", 300, TASKS, PLANTED_ICL["instruction-tuned"],
                         PLANTED_FT["instruction-tuned"], rng)]
    manifest = RunManifest.model_validate(manifest_dict(sections={"transfer"}))
    analysis = analyse(pd.DataFrame(rows), manifest, n_boot=10)
    kept: list[Any] = []
    monkeypatch.setattr(plotting, "save", lambda figure, path: kept.append(figure) or path)
    assert draw_transfer_curves(analysis, Path("fig1_transfer_curves.png")) is not None
    (figure,) = kept
    return figure


def curves_drawn(axes: Any) -> dict[str, Any]:
    """Legend label → the data line of each error-bar curve on ``axes``."""
    return {container.get_label(): container.lines[0] for container in axes.containers}


def icl_levels_drawn(axes: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in axes.get_lines()
            if line.get_label().endswith("ICL (no tuning)")}


def test_figure_1_left_draws_each_models_planted_curves_and_icl_levels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each panel (loss, ROUGE-L recall, ROUGE-L F) draws the pre-trained model without
    context, the IT model in each context and our pre-trained-with-exemplars line, each at the
    planted mean over tasks at every k; the loss panel adds each model's ICL loss as a
    horizontal level, and the legend names every line."""
    loss, recall, f_measure = figure_1_left(monkeypatch).axes
    shots = np.array(SHOTS, dtype=float)
    for axes, metric_of in ((loss, lambda level: level), (recall, lambda level: 45 - 10 * level),
                            (f_measure, lambda level: 40 - 10 * level)):
        drawn = curves_drawn(axes)
        assert list(drawn) == list(LINES), axes.get_ylabel()
        assert axes.get_xlabel() == "fine-tuning examples per task (k)"
        for legend, (model, context) in LINES.items():
            level = PLANTED_FT[model].mean() + CONTEXT_OFFSET[context] - 0.01 * shots
            assert list(drawn[legend].get_xdata()) == list(SHOTS), legend
            assert np.allclose(drawn[legend].get_ydata(), metric_of(level)), (
                axes.get_ylabel(), legend)
        legend_texts = [text.get_text() for text in axes.get_legend().get_texts()]
        assert sorted(legend_texts) == sorted(
            [*LINES, *(ICL_LEGENDS if axes is loss else [])]), axes.get_ylabel()
    levels = icl_levels_drawn(loss)
    assert sorted(levels) == sorted(ICL_LEGENDS)
    for legend, model in zip(ICL_LEGENDS, ("pre-trained", "instruction-tuned"), strict=True):
        assert np.allclose(levels[legend].get_ydata(), PLANTED_ICL[model].mean()), legend
    assert not icl_levels_drawn(recall) and not icl_levels_drawn(f_measure)


def test_figure_1_left_tells_its_lines_apart_in_black_and_white(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The figure reads in greyscale: every line is grey; each model keeps one shade and marker
    over its curves and its ICL level; the pre-trained model, the IT model and our
    pre-trained-with-exemplars line differ in shade and marker; the IT model's contexts differ
    in line style; the ICL levels are dotted, apart from the models' solid no-context curves."""
    loss = figure_1_left(monkeypatch).axes[0]
    drawn, levels = curves_drawn(loss), icl_levels_drawn(loss)
    pretrained, it_none, it_exemplars, ours = (drawn[legend] for legend in LINES)
    pt_level, it_level = (levels[legend] for legend in ICL_LEGENDS)
    for line in [*drawn.values(), *levels.values()]:
        red, green, blue = to_rgb(line.get_color())
        assert red == green == blue, (line.get_label(), line.get_color())
    assert to_rgb(pretrained.get_color()) == to_rgb(pt_level.get_color())
    assert (to_rgb(it_none.get_color()) == to_rgb(it_exemplars.get_color())
            == to_rgb(it_level.get_color()))
    assert it_none.get_marker() == it_exemplars.get_marker()
    models = (pretrained, it_none, ours)
    assert len({to_rgb(line.get_color()) for line in models}) == 3
    assert len({line.get_marker() for line in models}) == 3
    assert "None" not in {line.get_marker() for line in models}
    assert it_none.get_linestyle() != it_exemplars.get_linestyle()
    assert pretrained.get_linestyle() == it_none.get_linestyle() == "-"
    assert pt_level.get_linestyle() == it_level.get_linestyle() == ":"
