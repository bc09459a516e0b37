"""§4's Figure 3, read off the drawn figures (left: bars per sampler; centre and right: seen-task
loss by training-set size bin) and §4's word for a sampler's fit of the small tasks (issue 27's
mutants of draw_sampler_summary, draw_size_binned and fit_label in sections/samplers.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb, to_rgba

from itransfer.analysis import plotting
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.run import RunAnalysis, analyse
from itransfer.analysis.sections.samplers import (
    draw_sampler_summary,
    draw_size_binned,
    fit_label,
)
from itransfer.analysis.seen_fit import SmallTaskFit
from itransfer.analysis.significance import PairedTest
from test_analysis import manifest_dict, row

# Six seen tasks: log-spaced bins 10–24 (two tasks), 25–62 (none), 63–157 (one), 158–397 (none)
# and 398–1000 (three). Each task's train loss is its model's plus the task's offset.
SIZES = {"task900_seen": 10, "task901_seen": 12, "task902_seen": 100, "task903_seen": 1000,
         "task904_seen": 1000, "task905_seen": 1000}
OFFSET = {task: 0.1 * index for index, task in enumerate(SIZES)}
BINS = ["10–24", "25–62", "63–157", "158–397", "398–1000"]
IN_BIN = {0: ["task900_seen", "task901_seen"], 2: ["task902_seen"],
          4: ["task903_seen", "task904_seen", "task905_seen"]}
# section key → (variant, train loss, test − train gap, validation loss, ICL loss or None)
PLANT = {"ra-1e3": ("it-ra1000", 1.3, 0.4, 1.0, 3.0),  # the best reverse-annealing run
         "uniform": ("it-uniform", 0.8, 1.1, 1.3, 3.5),
         "ra-1e2": ("it-ra100", 1.6, 0.3, 1.5, 2.9),  # the worst: not in Figure 3
         "proportional": ("it-proportional", 1.0, 0.5, 1.1, 3.2),
         "ra-1e4": ("it-ra10000", 1.4, 0.45, 1.2, None)}  # second best, no ICL rows
COMPARED = ["proportional", "uniform", "ra-1e3", "ra-1e4"]  # Figure 3's order
ICL_OFFSETS = [0.0, 0.1, 0.2, 0.3]  # per unseen task, added to the model's ICL loss
BAR_LEGENDS = ["seen tasks: train loss", "seen tasks: test loss", "unseen tasks: ICL loss"]


def planted_rows(*, sizeless: tuple[str, ...] = (), splits: tuple[str, ...] = (
        "train", "validation", "test"), icl: bool = True) -> list[dict[str, Any]]:
    """Every model's rows at step 300 (sizes unless its key is in ``sizeless``)."""
    rows: list[dict[str, Any]] = []
    for key, (model, train, gap, validation, icl_loss) in PLANT.items():
        common = {"model": model, "checkpoint_step": 300, "method": "seen", "shots": 0}
        for task, size in SIZES.items():
            value = {"train": train + OFFSET[task], "validation": validation,
                     "test": train + OFFSET[task] + gap}
            rows += [row(**common, task=task, split=split, metric="loss", value=value[split])
                     for split in splits]
            if key not in sizeless:
                rows.append(row(**common, task=task, split="train", metric="train_size",
                                value=float(size)))
        if icl and icl_loss is not None:
            rows += [row(model=model, checkpoint_step=300, task=f"task{index:03d}_unseen",
                         value=icl_loss + offset) for index, offset in enumerate(ICL_OFFSETS)]
    return rows


def planted_analysis(rows: list[dict[str, Any]] | None = None, *,
                     keys: list[str] | None = None, sections: set[str] | None = None
                     ) -> RunAnalysis:
    manifest = manifest_dict(sections={"samplers"} if sections is None else sections)
    for model, *_ in PLANT.values():
        if model.startswith("it-ra"):
            manifest["models"][model] = {
                **manifest["models"]["it-uniform"], "sampler": "reverse_annealing",
                "sampler_config": {"name": "reverse_annealing",
                                   "max_temperature": int(model[5:]), "schedule": "linear"}}
    if "samplers" in manifest["sections"]:
        manifest["sections"]["samplers"]["models"] = {
            key: PLANT[key][0] for key in (keys or PLANT)}
    return analyse(pd.DataFrame(rows if rows is not None else planted_rows()),
                   RunManifest.model_validate(manifest), n_boot=10)


def drawn(monkeypatch: pytest.MonkeyPatch, draw: Any, analysis: RunAnalysis) -> Any:
    """The figure ``draw`` hands to plotting.save (None when it saves none), checking that it
    saves to the path asked for and returns it."""
    kept: list[tuple[Any, Path]] = []
    monkeypatch.setattr(plotting, "save", lambda figure, path: kept.append((figure, path))
                        or path)
    path = Path("fig3.png")
    returned = draw(analysis, path)
    if returned is None:
        assert not kept
        return None
    ((figure, saved_to),) = kept
    assert returned == saved_to == path
    assert figure is not None and figure.axes
    return figure


def expected_bars() -> list[list[float]]:
    """Per bar series (seen train, seen test, ICL): each compared sampler's planted mean."""
    offset, icl_offset = np.mean(list(OFFSET.values())), np.mean(ICL_OFFSETS)
    bars: list[list[float]] = [[], [], []]
    for key in COMPARED:
        _, train, gap, _, icl = PLANT[key]
        bars[0].append(train + offset)
        bars[1].append(train + offset + gap)
        bars[2].append(math.nan if icl is None else icl + icl_offset)
    return bars


def test_figure_3_left_draws_each_compared_samplers_planted_means_as_labelled_bars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Figure 3 (left) draws proportional, uniform and the two best reverse-annealing runs by
    validation loss, in that order (the worst run is left out): per sampler three side-by-side
    bars (seen train, seen test, unseen ICL loss) at the planted means, each labelled with its
    value to two decimals, an unmeasured one at height 0 labelled "n/a"; ticks name the
    samplers; title, axis labels and legend say what is shown; the figure widens for four."""
    figure = drawn(monkeypatch, draw_sampler_summary, planted_analysis())
    (axes,) = figure.axes
    assert axes.get_title() == "Figure 3 (left): multi-task fit vs ICL by sampler"
    assert axes.get_xlabel() == "task sampler P(K)"
    assert axes.get_ylabel() == "mean loss ↓"
    assert list(axes.get_xticks()) == [0, 1, 2, 3]
    assert [text.get_text() for text in axes.get_xticklabels()] == COMPARED
    assert [text.get_text() for text in axes.get_legend().get_texts()] == BAR_LEGENDS
    bars = expected_bars()
    assert [container.get_label() for container in axes.containers] == BAR_LEGENDS
    for index, (container, values) in enumerate(zip(axes.containers, bars, strict=True)):
        rectangles = list(container)
        assert len(rectangles) == len(COMPARED), BAR_LEGENDS[index]
        assert [rect.get_height() for rect in rectangles] == pytest.approx(
            np.nan_to_num(values)), BAR_LEGENDS[index]
        assert [rect.get_width() for rect in rectangles] == pytest.approx([0.8 / 3] * 4)
        centres = [rect.get_x() + rect.get_width() / 2 for rect in rectangles]
        assert centres == pytest.approx(
            [position + (index - 1) * 0.8 / 3 for position in range(4)]), BAR_LEGENDS[index]
    labels = [text.get_text() for text in axes.texts]
    assert labels == [f"{value:.2f}" if not math.isnan(value) else "n/a"
                      for values in bars for value in values]
    assert labels[-1] == "n/a" and "nan" not in labels
    assert figure.get_size_inches()[0] == pytest.approx(1.6 * 4)
    assert [line.get_visible() for line in axes.get_ygridlines()] == [True] * len(
        axes.get_yticks())
    assert not any(line.get_visible() for line in axes.get_xgridlines())


def test_figure_3_left_tells_its_bars_apart_in_black_and_white(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three bar series read in greyscale: white, then a light and a dark grey (none black,
    so the black hatching shows), each with its own hatching and a black outline, the white
    bars included. With two samplers the figure keeps its 5-inch minimum width."""
    figure = drawn(monkeypatch, draw_sampler_summary, planted_analysis())
    (axes,) = figure.axes
    faces = [to_rgba(container.patches[0].get_facecolor()) for container in axes.containers]
    assert faces == [to_rgba("white"), to_rgba(plotting.SHADES[2]),
                     to_rgba(plotting.SHADES[3])]
    assert to_rgba("black") not in faces
    for container in axes.containers:
        hatches = {rect.get_hatch() or "" for rect in container}
        faces_here = {to_rgba(rect.get_facecolor()) for rect in container}
        assert len(hatches) == 1 and len(faces_here) == 1, container.get_label()
        assert {to_rgba(rect.get_edgecolor()) for rect in container} == {to_rgba("black")}
    assert [container.patches[0].get_hatch() or "" for container in axes.containers] == [
        "", "//", "xx"]
    two = drawn(monkeypatch, draw_sampler_summary,
                planted_analysis(keys=["uniform", "proportional"]))
    assert [text.get_text() for text in two.axes[0].get_xticklabels()] == [
        "proportional", "uniform"]
    assert two.get_size_inches()[0] == pytest.approx(5.0)


def test_figure_3_is_not_drawn_without_the_section_or_anything_to_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither part of Figure 3 is drawn for a run without §4; the left part is not drawn when
    no compared sampler has a seen train/test or ICL loss, the centre/right part when no seen
    task has a training-set size."""
    absent = planted_analysis(sections={"mixing"})
    assert drawn(monkeypatch, draw_sampler_summary, absent) is None
    assert drawn(monkeypatch, draw_size_binned, absent) is None
    unmeasured = planted_analysis(planted_rows(splits=("validation",), icl=False))
    assert drawn(monkeypatch, draw_sampler_summary, unmeasured) is None
    sizeless = planted_analysis(planted_rows(sizeless=tuple(PLANT)))
    assert drawn(monkeypatch, draw_size_binned, sizeless) is None
    assert drawn(monkeypatch, draw_sampler_summary, sizeless) is not None


def curves(axes: Any) -> dict[str, Any]:
    """Legend label → the data line of each error-bar curve on ``axes``."""
    return {container.get_label(): container.lines[0] for container in axes.containers}


def test_figure_3_centre_and_right_draw_each_samplers_planted_bin_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Figure 3 centre (train loss) and right (test loss): each compared sampler, in Figure 3's
    order, is a curve over the size bins that hold tasks (an empty bin is skipped, a bin of one
    task is drawn) at the planted mean loss of the bin's tasks; every bin is a tick named by
    its size range; titles, axis labels and the legend (titled "sampler") say what is shown."""
    figure = drawn(monkeypatch, draw_size_binned, planted_analysis())
    assert len(figure.axes) == 2
    for axes, split, panel in zip(figure.axes, ("train", "test"), ("centre", "right"),
                                  strict=True):
        assert axes.get_title() == f"Figure 3 ({panel}): {split} loss by task size"
        assert axes.get_xlabel() == "task training-set size (log-spaced bins)"
        assert axes.get_ylabel() == f"mean seen-task {split} loss ↓"
        assert list(axes.get_xticks()) == list(range(len(BINS)))
        assert [text.get_text() for text in axes.get_xticklabels()] == BINS
        assert {text.get_rotation() for text in axes.get_xticklabels()} == {20}
        legend = axes.get_legend()
        assert legend.get_title().get_text() == "sampler"
        assert [text.get_text() for text in legend.get_texts()] == COMPARED
        lines = curves(axes)
        assert list(lines) == COMPARED, split
        for key, line in lines.items():
            _, train, gap, _, _ = PLANT[key]
            level = train + (gap if split == "test" else 0.0)
            assert list(line.get_xdata()) == list(IN_BIN), (split, key)
            assert list(line.get_ydata()) == pytest.approx(
                [level + np.mean([OFFSET[task] for task in tasks])
                 for tasks in IN_BIN.values()]), (split, key)
        assert all(line.get_visible() for line in axes.get_xgridlines())
        assert all(line.get_visible() for line in axes.get_ygridlines())


def test_figure_3_centre_and_right_tell_samplers_apart_in_black_and_white(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every curve is grey; the samplers differ in shade, marker and line style, and each keeps
    them in both panels. A sampler without training-set sizes (the first one here) is left out
    of both panels while the others are still drawn, each in its own style."""
    train, test = drawn(monkeypatch, draw_size_binned, planted_analysis()).axes
    styles = {}
    for axes in (train, test):
        for key, line in curves(axes).items():
            red, green, blue = to_rgb(line.get_color())
            assert red == green == blue, (key, line.get_color())
            style = (to_rgb(line.get_color()), line.get_marker(), line.get_linestyle())
            assert styles.setdefault(key, style) == style, key
    assert len({style[0] for style in styles.values()}) == len(COMPARED)
    assert len({style[1] for style in styles.values()}) == len(COMPARED)
    assert len({style[2] for style in styles.values()}) == len(COMPARED)
    assert "None" not in {style[1] for style in styles.values()}
    without = drawn(monkeypatch, draw_size_binned,
                    planted_analysis(planted_rows(sizeless=("proportional",)))).axes
    for axes in without:
        lines = curves(axes)
        assert list(lines) == COMPARED[1:]
        assert [text.get_text() for text in axes.get_legend().get_texts()] == COMPARED[1:]
        for key, line in lines.items():
            assert (to_rgb(line.get_color()), line.get_marker(),
                    line.get_linestyle()) == styles[key], key


def paired(p_value: float, opposite_p: float) -> PairedTest:
    return PairedTest(statistic=0.0, p_value=p_value, n=5, mean_difference=0.0,
                      claimed_sign=1.0, opposite_p=opposite_p, rank_total=15.0)


@pytest.mark.parametrize(("train", "test", "word"), [
    (paired(0.01, 0.99), paired(0.5, 0.5), "underfits"),  # train loss significantly higher
    (paired(0.01, 0.99), paired(0.01, 0.99), "underfits"),
    (paired(0.99, 0.01), paired(0.01, 0.99), "overfits"),  # lower train, higher test loss
    (paired(0.99, 0.01), paired(0.5, 0.5), "neither"),  # lower train loss only
    (paired(0.5, 0.5), paired(0.01, 0.99), "neither"),  # higher test loss only
    (paired(0.99, 0.01), paired(0.99, 0.01), "neither"),  # lower on both splits
    (paired(math.nan, math.nan), paired(0.01, 0.99), "neither"),  # too few tasks to test
])
def test_fit_label_says_underfits_overfits_or_neither(
    train: PairedTest, test: PairedTest, word: str,
) -> None:
    """§4's word in the fits table: "underfits" for a significantly higher train loss on the
    small tasks than proportional's; "overfits" only for a significantly lower train loss and a
    significantly higher test loss together; "neither" otherwise."""
    fit = SmallTaskFit(sampler="ra-1e3", reference="proportional", train=train, test=test,
                       gap_difference=0.0)
    assert fit_label(fit) == word
