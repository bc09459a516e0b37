"""The report's figures: what one is (:class:`PaperFigure`), the drawing helpers every section
shares, and :func:`draw_all`.

Each section module lists its figures as ``plots``; a figure's draw function saves one PNG
under ``out_dir`` and returns its path, or None when its section is absent from the run (or has
nothing to draw). Figures use matplotlib's object API (no pyplot state) and tell series apart
by line style, marker and hatching as well as by shade, so they read in black and white.
matplotlib is imported when the first figure is drawn, not when a section module is, so
validating an experiment's sections does not load it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from itransfer.analysis.correlations import Correlation
from itransfer.analysis.registry import section_types
from itransfer.analysis.run import RunAnalysis
from itransfer.runtime.atomic_files import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# Shades, markers and line styles vary together so each series survives greyscale printing.
SHADES = ("#000000", "#666666", "#999999", "#333333", "#bbbbbb")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINE_STYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "xx", "..", "\\\\")
DPI = 110


@dataclass(frozen=True)
class PaperFigure:
    """One report figure: its caption (the paper figure it reproduces), file and drawing."""

    name: str  # e.g. "Figure 1 (left)"; findings cite it by this name
    file: str  # under <run>/figures/
    draw: Callable[[RunAnalysis, Path], Path | None]  # (analysis, out path) → path or None


def draw_all(analysis: RunAnalysis, out_dir: Path) -> dict[str, Path]:
    """Every figure this run's sections allow, keyed by the paper figure it reproduces."""
    drawn = {}
    for section_cls in section_types().values():
        for plot in section_cls.plots:
            path = plot.draw(analysis, out_dir / plot.file)
            if path is None:
                logger.info("%s: nothing to draw in this run", plot.name)
            else:
                drawn[plot.name] = path
    return drawn


def new_figure(ncols: int = 1, width_per_panel: float = 5.0, height: float = 4.0
               ) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_per_panel * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def style(index: int) -> dict[str, str]:
    return {"color": SHADES[index % len(SHADES)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}


def errorbar(axes: Axes, x: Sequence[float], curve: pd.DataFrame, **line_style: str) -> None:
    sem = curve["sem"].to_numpy(dtype=float)
    yerr = None if np.all(np.isnan(sem)) else np.nan_to_num(sem)
    axes.errorbar(x, curve["mean"].to_numpy(dtype=float), yerr=yerr, capsize=3,
                  markersize=6, linewidth=1.6, markerfacecolor="white", **line_style)


def scatter(axes: Axes, x: pd.Series, y: pd.Series, correlation: Correlation, *,
            xlabel: str, ylabel: str, title: str, zero_lines: bool = False) -> None:
    axes.scatter(x, y, s=28, facecolors="white", edgecolors="black", linewidths=1.0)
    if zero_lines:
        axes.axhline(0.0, color="#888888", linestyle=":", linewidth=1.0)
        axes.axvline(0.0, color="#888888", linestyle=":", linewidth=1.0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(f"{title}\n{correlation.describe()}", fontsize=9)
    axes.grid(True, alpha=0.3)
