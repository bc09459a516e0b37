"""Inputs cut to the length budget: one short warning line per stage, the detail at --verbose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from itransfer.cli import app
from itransfer.config.schema import load_config
from itransfer.eval.icl import evaluate_icl
from itransfer.eval.session import open_session

# A budget so small that many inputs lose their tail even without context.
CONFIG = ["model.max_source_length=12", "model.max_target_length=4",
          "data.splits.unseen_test_size=4", "eval.max_tasks=2", "eval.generate=false",
          "eval.icl_context=none"]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stage_warns_once_and_details_are_info(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = open_session(load_config(None, CONFIG), tiny_model_dir, tmp_path)
    with caplog.at_level(logging.INFO, logger="itransfer"), session.one_cut_warning("eval:base@0"):
        evaluate_icl(session)  # two evaluations of one stage
        evaluate_icl(session, context="definition")
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    line = warnings[0]
    assert "\n" not in line and len(line) < 80
    count = int(line.removeprefix("eval:base@0: ").split()[0])
    assert line == f"eval:base@0: {count} inputs cut to 12 tokens; --verbose lists them"
    # Each evaluation's detail (which tasks) is there at info level, and adds up to the count.
    details = [r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO and "lost their tail" in r.getMessage()]
    assert len(details) == 2
    assert sum(int(d.split(": ", 1)[1].split()[0]) for d in details) == count

    # Outside a stage each evaluation says it in one line of its own.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="itransfer"):
        evaluate_icl(session, force=True)
    assert [w.split(":")[0] for w in _warnings(caplog)] == ["evaluation"]


def test_verbose_is_a_root_option_that_shows_info() -> None:
    runner = CliRunner()
    logger = logging.getLogger("itransfer.eval.session")
    assert runner.invoke(app, ["--verbose", "data", "--help"]).exit_code == 0
    assert logger.isEnabledFor(logging.INFO)
    runner.invoke(app, ["data", "--help"])
    assert not logger.isEnabledFor(logging.INFO)
