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
    with pytest.raises(ConfigError) as error:
        build_context("fewshot")
    assert str(error.value) == ("unknown context 'fewshot'; known: definition, "
                                "definition+exemplars, exemplars, none, task_id")
    assert build_context("exemplars").num_exemplars == 3  # the paper's three (Figure 5)
    assert CONTEXTS["exemplars"]().num_exemplars == 3
    assert build_context("exemplars", 2).num_exemplars == 2


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
    inputs_cut = {qasc.name: 1} if cut.input_words_cut else {}  # as the callers count them
    assert inputs_cut == {qasc.name: 1}
    assert cut_summary(inputs_cut, 10) == "1 inputs cut to 10 tokens; --verbose lists them"
    assert f"1 inputs of 1 tasks were longer than the 10-token budget even without context and " \
        f"lost their tail (most: {qasc.name} (1))" in cut_details(inputs_cut, 10)


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


def _words_task(tmp_path: Path, definition: str = "one two three four five six"):
    return parse_task(write_task(
        tmp_path, "task007_words", Definition=[definition],
        **{"Positive Examples": [{"input": f"q{i} w", "output": f"a{i}", "explanation": "ok"}
                                 for i in range(3)]}))


def test_a_registered_context_cuts_exemplars_then_instruction_then_input_by_exact_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from itransfer.config import schema as config
    from itransfer.data import contexts

    monkeypatch.setattr(contexts, "CONTEXTS", dict(contexts.CONTEXTS))
    names = set(config.CONTEXT_NAMES)  # the toy leaves the names a config accepts as it found them
    monkeypatch.setattr(config, "CONTEXT_NAMES", names)
    monkeypatch.setattr(contexts, "CONTEXT_NAMES", names)

    @contexts.register_context("toy")
    class Toy(contexts.TaskContext):
        # The task's name, the instruction, one word per exemplar, then x; counted in words.
        uses_exemplars = True
        uses_definition = True

        def render(self, task, x, exemplars, definition):  # type: ignore[no-untyped-def]
            parts = [task.name, definition, *(e.output for e in exemplars), x]
            return " ".join(part for part in parts if part)

    assert Toy.name == "toy" and contexts.CONTEXTS["toy"] is Toy
    toy = build_context("toy", 3)
    task = _words_task(tmp_path)
    x = "x1 x2 x3 x4"
    full = 1 + 6 + 3 + 4  # 14 words
    assert toy.encode(task, x, max_tokens=full) == contexts.EncodedInput(toy.render(
        task, x, list(task.positive_examples[:3]), task.definition))
    with caplog.at_level(logging.INFO, logger="itransfer.data.contexts"):
        assert toy.encode(task, x, max_tokens=full - 1) == contexts.EncodedInput(
            f"task007_words one two three four five six a0 a1 {x}", exemplars_dropped=1)
    assert caplog.messages == ["task007_words: context cut to fit 13 tokens (1 exemplars dropped, "
                               "0 instruction words cut)"]
    caplog.clear()
    assert toy.encode(task, x, max_tokens=full - 3) == contexts.EncodedInput(
        f"task007_words one two three four five six {x}", exemplars_dropped=3)
    assert toy.encode(task, x, max_tokens=full - 5) == contexts.EncodedInput(
        f"task007_words one two three four {x}", exemplars_dropped=3, definition_words_cut=2)
    with caplog.at_level(logging.DEBUG, logger="itransfer.data.contexts"):
        cut = toy.encode(task, x, max_tokens=3)
    assert cut == contexts.EncodedInput("task007_words x1 x2", exemplars_dropped=3,
                                        definition_words_cut=6, input_words_cut=2)
    assert {task.name: int(cut.input_words_cut > 0)} == {"task007_words": 1}  # the one input cut
    assert ("task007_words: input longer than the 3-token budget even without context; cut 2 "
            "of its 4 words from the end") in caplog.messages
    assert "task007_words: context cut to fit 3 tokens (3 exemplars dropped, 6 instruction " \
           "words cut)" in caplog.messages


def test_a_budget_met_by_dropping_exemplars_leaves_the_instruction_whole(tmp_path: Path) -> None:
    task = _words_task(tmp_path)
    context = build_context("definition+exemplars", 3)
    bare = context.render(task, "x", [], task.definition)
    got = context.encode(task, "x", max_tokens=len(bare.split()))
    assert got == type(got)(bare, exemplars_dropped=3)
    definition_only = build_context("definition")
    assert definition_only.render(task, "x", [], "  ") == "x"
    assert definition_only.render(task, "x", [], " do it ") == "do it\nx"


def test_tk_instruct_layout_numbers_exemplars_from_one(tmp_path: Path) -> None:
    task = _words_task(tmp_path)
    text = build_context("definition+exemplars", 2).render(
        task, "the input", list(task.positive_examples[:2]), "Say it.")
    assert text == ("Definition: Say it.\n\n"
                    "Positive Example 1 -\nInput: q0 w\nOutput: a0\n\n"
                    "Positive Example 2 -\nInput: q1 w\nOutput: a1\n\n"
                    "Now complete the following example -\nInput: the input\nOutput:")


def test_longest_fitting_prefix_is_the_largest_n_that_fits() -> None:
    from itransfer.data.contexts import longest_fitting_prefix

    for length in range(0, 9):
        for budget in range(-1, 10):
            expected = max([n for n in range(length + 1) if n <= budget], default=0)
            assert longest_fitting_prefix(length, lambda n, b=budget: n <= b) == expected


def test_the_config_accepts_exactly_the_registered_contexts() -> None:
    """config.py cannot import the context classes (a floor up): its list of names must still
    be theirs, built-in and registered alike."""
    from itransfer.config.schema import CONTEXT_NAMES
    from itransfer.data.contexts import CONTEXTS

    assert set(CONTEXTS) == CONTEXT_NAMES
