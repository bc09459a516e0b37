"""No function in src/ is longer than 60 lines: past that, a function does several jobs that
want names of their own (issue 23)."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 60
SRC = Path(__file__).resolve().parents[1] / "src"


def function_lengths(root: Path) -> list[tuple[str, int]]:
    """("file:function", lines from ``def`` to its last line) of every function under ``root``,
    methods and nested functions included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                found.append((f"{path.relative_to(root)}:{node.name}", length))
    return found


def test_no_function_in_src_is_over_60_lines() -> None:
    too_long = [f"{where}: {length} lines" for where, length in function_lengths(SRC)
                if length > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines: " + "; ".join(too_long)


def test_the_measure_counts_a_whole_function(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(
        f"def short():\n    return 1\n\n\nclass A:\n    async def long(self):\n{body}\n"
    )
    assert dict(function_lengths(tmp_path)) == {"long.py:short": 2,
                                                 "long.py:long": MAX_LINES + 1}
