"""Task contexts r_k (Figure 5): exact strings on a real task, and the length budget."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import write_task
from itransfer.data.contexts import CONTEXTS, build_context, cut_details, cut_summary
from itransfer.data.sni import parse_task
from itransfer.errors import ConfigError

X = "Fact: rain helps plants to survive."
DEFINITION_START = "Turn the given fact into a question by a simple rearrangement of words."


@pytest.fixture(scope="module")
def qasc(sni_slice: Path):
    return parse_task(sni_slice / "tasks" / "task040_qasc_question_generation.json")


def test_registered_contexts() -> None:
    assert set(CONTEXTS) == {"none", "task_id", "definition", "exemplars", "definition+exemplars"}
    with pytest.raises(ConfigError, match="unknown context 'fewshot'"):
        build_context("fewshot")


def test_none_and_task_id(qasc) -> None:
    assert build_context("none").encode(qasc, X).text == X
    assert build_context("task_id").encode(qasc, X).text == f"task_040_qasc: {X}"


def test_definition(qasc) -> None:
    text = build_context("definition").encode(qasc, X).text
    assert text.startswith(DEFINITION_START)
    assert text == f"{qasc.definition}\n{X}"
    assert text.endswith('"A radio converts electricity into?"\n' + X)


def test_exemplars_match_figure_5(qasc) -> None:
    text = build_context("exemplars").encode(qasc, X).text
    assert text == (
        "input: Fact: pesticides can harm animals.\n"
        "output: What can harm animals?\n"
        "input: Fact: rain can help form soil.\n"
        "output: Rain can help form?\n"
        "input: Fact: rain helps plants to survive.\n"
        "output: rain helps plants to?\n"
        "input: Fact: rain helps plants to survive."
    )
    assert build_context("exemplars", num_exemplars=1).encode(qasc, X).text == (
        "input: Fact: pesticides can harm animals.\n"
        "output: What can harm animals?\n"
        f"input: {X}"
    )


def test_definition_plus_exemplars_is_tk_instruct_style(qasc) -> None:
    text = build_context("definition+exemplars", num_exemplars=2).encode(qasc, X).text
    assert text == (
        f"Definition: {qasc.definition}\n\n"
        "Positive Example 1 -\nInput: Fact: pesticides can harm animals.\n"
        "Output: What can harm animals?\n\n"
        "Positive Example 2 -\nInput: Fact: rain can help form soil.\n"
        "Output: Rain can help form?\n\n"
        f"Now complete the following example -\nInput: {X}\nOutput:"
    )


def test_exemplars_come_from_positive_examples_not_instances(tmp_path: Path) -> None:
    task = parse_task(write_task(tmp_path, "task001_demo"))
    text = build_context("exemplars").encode(task, "question 0").text
    assert "input: q0\noutput: a0" in text
    assert "answer" not in text  # no instance output leaks into the context


def test_budget_drops_exemplars_before_touching_the_input(qasc) -> None:
    encoder = build_context("exemplars")
    full = encoder.encode(qasc, X)
    budget = len(full.text.split()) - 3
    cut = encoder.encode(qasc, X, max_tokens=budget)
    assert cut.exemplars_dropped == 1 and cut.input_words_cut == 0
    assert cut.text.endswith(f"input: {X}") and len(cut.text.split()) <= budget


def test_budget_cuts_definition_words_then_logs_input_cut(qasc, caplog) -> None:
    encoder = build_context("definition")
    cut = encoder.encode(qasc, X, max_tokens=20)
    assert cut.input_words_cut == 0 and cut.definition_words_cut > 0
    assert cut.text.endswith(X) and len(cut.text.split()) <= 20

    long_input = " ".join(f"w{i}" for i in range(30))
    with caplog.at_level(logging.DEBUG, logger="itransfer.data.contexts"):
        cut = encoder.encode(qasc, long_input, max_tokens=10)
    assert cut.input_words_cut == 20
    assert cut.text == " ".join(f"w{i}" for i in range(10))
    assert "cut 20 of its 30 words" in caplog.text
    assert encoder.inputs_cut == {qasc.name: 1}
    assert cut_summary(encoder.inputs_cut, 10) == "1 inputs cut to 10 tokens; --verbose lists them"
    assert f"1 inputs of 1 tasks were longer than the 10-token budget even without context and " \
        f"lost their tail (most: {qasc.name} (1))" in cut_details(encoder.inputs_cut, 10)


def test_budget_uses_the_given_token_counter(qasc) -> None:
    def characters(text: str) -> int:
        return len(text)

    cut = build_context("exemplars").encode(qasc, X, max_tokens=120, count_tokens=characters)
    assert len(cut.text) <= 120 and cut.exemplars_dropped >= 2


def test_cut_inputs_are_warned_once_per_stage_with_details_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from itransfer.data.contexts import one_warning_for_cuts, warn_inputs_cut

    cuts = {"task_a": 1, "task_b": 5, "task_c": 2, "task_d": 3}
    assert cut_details(cuts, 64) == (
        "11 inputs of 4 tasks were longer than the 64-token budget even without context and "
        "lost their tail (most: task_b (5), task_d (3), task_c (2)); raise "
        "model.max_source_length to keep them")
    assert cut_details({}, 64) is None and cut_summary({}, 64) is None
    with caplog.at_level("INFO", logger="itransfer.data.contexts"):
        warn_inputs_cut("train it", {}, 64)
        assert caplog.records == []
        warn_inputs_cut("train it", cuts, 64)
        warn_inputs_cut("eval pt", {"task_a": 2}, 64, details=False)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "train it: 11 inputs cut to 64 tokens; --verbose lists them"),
        ("INFO", f"train it: {cut_details(cuts, 64)}"),
        ("WARNING", "eval pt: 2 inputs cut to 64 tokens; --verbose lists them"),
    ]
    caplog.clear()
    with caplog.at_level("INFO", logger="itransfer.data.contexts"):
        with one_warning_for_cuts():
            warn_inputs_cut("train it", cuts, 64, details=False)
            warn_inputs_cut("eval it@80", {"task_a": 2}, 128, details=False)
            warn_inputs_cut("eval it@160", {}, 128, details=False)
            assert all(r.levelname == "INFO" for r in caplog.records)
        with one_warning_for_cuts():
            pass  # a block without cuts says nothing
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "train it: 11 inputs cut to 64 tokens; --verbose lists them"),
        ("INFO", "eval it@80: 2 inputs cut to 128 tokens; --verbose lists them"),
        ("WARNING", "2 stages cut inputs to 64 or 128 tokens (at most 11 inputs in one stage); "
                    "--verbose lists them"),
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="itransfer.data.contexts"):
        warn_inputs_cut("after", {"task_a": 1}, 8, details=False)  # the block ended: at once
    assert [r.getMessage() for r in caplog.records] == [
        "after: 1 inputs cut to 8 tokens; --verbose lists them"]
