"""The README's miniature table says what the recorded `--scale small` report says."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ("✓", "≈", "◐", "✗", "?")


def _verdict_symbols(rows: list[list[str]], column: int) -> Counter[str]:
    return Counter(next(symbol for symbol in SYMBOLS if row[column].startswith(symbol))
                   for row in rows)


def _table_rows(text: str, header: str) -> list[list[str]]:
    lines = text[text.index(header):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_the_readme_miniature_matches_the_recorded_report() -> None:
    report = (REPO / "bench" / "results-quickstart-small-report.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The half-hour miniature"):]
    recorded = _table_rows(report, "| § | Claim | Paper |")
    shown = _table_rows(section, "| § | Claim | This run |")
    assert len(shown) == len(recorded) == 16
    ours = _verdict_symbols(shown, 5)
    assert ours == _verdict_symbols(recorded, -1)
    summary = ", ".join(f"{ours[symbol]} {symbol}" for symbol in SYMBOLS if ours[symbol])
    assert summary in section  # "4 ✓, 3 ≈, 8 ✗, 1 ?"
    kept = re.search(r"after Holm's adjustment across them, (\d+) of the (\d+) ✓", report)
    assert kept is not None
    assert f"{kept.group(1)} of the {kept.group(2)} ✓ keep p < 0.05 after Holm" in section
    assert [row[0] for row in shown] == [row[0] for row in recorded]
