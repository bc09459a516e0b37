"""Small HTML pieces the report and each section's tables share."""

from __future__ import annotations

import html
import math

import pandas as pd


def number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def table(frame: pd.DataFrame, *, index: bool = False) -> str:
    if frame.empty:
        return "<p><em>no rows</em></p>"
    return frame.to_html(index=index, border=0, classes="data", na_rep="—",
                         float_format=lambda value: number(value, 4))


def details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"
