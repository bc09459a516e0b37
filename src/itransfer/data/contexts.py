"""Task contexts r_k (the paper's Figure 5): what precedes each instance input x.

One small class per context, registered by name; the YAML picks one
(``data.context.name: exemplars``). Exemplars always come from the task's ``Positive Examples``
metadata, never from its instances, so they cannot leak test data.

A length budget (``max_input_tokens``) is met by cutting the context first — dropping exemplars
from the last, then shortening the instruction — and only then the input's tail; every cut is
logged and reported on the returned :class:`EncodedInput`, never silent.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from itransfer.config.schema import CONTEXT_NAMES
from itransfer.data.sni import Demonstration, Task, task_unique_id

logger = logging.getLogger(__name__)

CONTEXTS: dict[str, type[TaskContext]] = {}

TokenCounter = Callable[[str], int]


def whitespace_token_count(text: str) -> int:
    """Fallback length measure when no tokenizer is given (words, not subwords)."""
    return len(text.split())


def register_context(name: str) -> Callable[[type[TaskContext]], type[TaskContext]]:
    def decorator(cls: type[TaskContext]) -> type[TaskContext]:
        cls.name = name
        CONTEXTS[name] = cls
        CONTEXT_NAMES.add(name)  # a config may name it
        return cls

    return decorator


@dataclass(frozen=True)
class EncodedInput:
    """A model input and what the length budget removed to build it."""

    text: str
    exemplars_dropped: int = 0
    definition_words_cut: int = 0
    input_words_cut: int = 0

    @property
    def was_cut(self) -> bool:
        return bool(self.exemplars_dropped or self.definition_words_cut or self.input_words_cut)


class TaskContext(ABC):
    """Renders (r_k; x) for a task; subclasses define the layout of r_k."""

    name: ClassVar[str]
    uses_exemplars: ClassVar[bool] = False
    uses_definition: ClassVar[bool] = False

    def __init__(self, num_exemplars: int = 3) -> None:
        self.num_exemplars = num_exemplars

    @abstractmethod
    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        """The full model input for instance input ``x``."""

    def exemplars(self, task: Task) -> tuple[Demonstration, ...]:
        if not self.uses_exemplars:
            return ()
        return task.positive_examples[: self.num_exemplars]

    def encode(
        self,
        task: Task,
        x: str,
        *,
        max_tokens: int | None = None,
        count_tokens: TokenCounter = whitespace_token_count,
    ) -> EncodedInput:
        """Render the input, cutting context (then input) to fit ``max_tokens`` if given."""
        exemplars = list(self.exemplars(task))
        definition = task.definition
        text = self.render(task, x, exemplars, definition)
        if max_tokens is None or count_tokens(text) <= max_tokens:
            return EncodedInput(text)

        dropped = 0
        while exemplars and count_tokens(text) > max_tokens:
            exemplars.pop()
            dropped += 1
            text = self.render(task, x, exemplars, definition)

        definition_cut = 0
        if self.uses_definition and count_tokens(text) > max_tokens:
            words = definition.split()
            keep = longest_fitting_prefix(
                len(words),
                lambda n: count_tokens(self.render(task, x, exemplars, " ".join(words[:n])))
                <= max_tokens,
            )
            definition_cut = len(words) - keep
            definition = " ".join(words[:keep])
            text = self.render(task, x, exemplars, definition)

        input_cut = 0
        if count_tokens(text) > max_tokens:
            words = x.split()

            def input_fits(n: int) -> bool:
                text = self.render(task, " ".join(words[:n]), exemplars, definition)
                return count_tokens(text) <= max_tokens

            keep = longest_fitting_prefix(len(words), input_fits)
            input_cut = len(words) - keep
            text = self.render(task, " ".join(words[:keep]), exemplars, definition)
            # Logged per instance at debug level; the training loop and each evaluation stage
            # count the inputs cut (``EncodedExample.input_cut``) in one line (`cut_summary`).
            logger.debug(
                "%s: input longer than the %d-token budget even without context; "
                "cut %d of its %d words from the end",
                task.name, max_tokens, input_cut, len(words),
            )
        if dropped or definition_cut:
            logger.info(
                "%s: context cut to fit %d tokens (%d exemplars dropped, %d instruction words cut)",
                task.name, max_tokens, dropped, definition_cut,
            )
        return EncodedInput(text, dropped, definition_cut, input_cut)


def cut_summary(inputs_cut: dict[str, int], max_tokens: int | None) -> str | None:
    """A short line counting the inputs that lost their tail to the length budget, or None.

    Logged once per training run or evaluation stage; :func:`cut_details` says which tasks,
    for ``--verbose``.
    """
    if not inputs_cut:
        return None
    return f"{sum(inputs_cut.values())} inputs cut to {max_tokens} tokens; --verbose lists them"


# Inside `one_warning_for_cuts`: (where, inputs cut, budget) of each summary held back.
_held_cuts: list[tuple[str, int, int | None]] | None = None


def warn_inputs_cut(where: str, inputs_cut: dict[str, int], max_tokens: int | None, *,
                    details: bool = True) -> None:
    """One warning line for ``where`` (a training run, an evaluation stage) counting its inputs
    that lost their tail, and with ``details`` at info level (``--verbose``) which tasks; inside
    :func:`one_warning_for_cuts` the warning waits for that block's single line."""
    summary = cut_summary(inputs_cut, max_tokens)
    if summary is None:
        return
    if _held_cuts is None:
        logger.warning("%s: %s", where, summary)
    else:
        _held_cuts.append((where, sum(inputs_cut.values()), max_tokens))
        logger.info("%s: %s", where, summary)
    if details:
        logger.info("%s: %s", where, cut_details(inputs_cut, max_tokens))


@contextmanager
def one_warning_for_cuts() -> Iterator[None]:
    """Within the block (an experiment's stages), cut inputs are warned about once, at its end:
    every training run and evaluation stage of a variant cuts the same long inputs again."""
    global _held_cuts
    outer, _held_cuts = _held_cuts, []
    try:
        yield
    finally:
        held, _held_cuts = _held_cuts, outer
        if held:
            budgets = [str(budget) for budget in sorted({budget for _, _, budget in held},
                                                        key=lambda budget: budget or 0)]
            logger.warning(
                "%d stages cut inputs to %s tokens (at most %d inputs in one stage); "
                "--verbose lists them", len(held), " or ".join(budgets),
                max(count for _, count, _ in held))


def cut_details(inputs_cut: dict[str, int], max_tokens: int | None) -> str | None:
    """What :func:`cut_summary` counts, with the tasks most affected and what to do about it."""
    if not inputs_cut:
        return None
    worst = sorted(inputs_cut.items(), key=lambda item: -item[1])[:3]
    listed = ", ".join(f"{name} ({count})" for name, count in worst)
    return (
        f"{sum(inputs_cut.values())} inputs of {len(inputs_cut)} tasks were longer than the "
        f"{max_tokens}-token budget even without context and lost their tail (most: {listed}); "
        "raise model.max_source_length to keep them"
    )


def longest_fitting_prefix(length: int, fits: Callable[[int], bool]) -> int:
    """Largest n in [0, length] with fits(n), assuming fits is monotone decreasing in n."""
    low, high = 0, length
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _exemplar_lines(exemplars: Sequence[Demonstration]) -> list[str]:
    lines = []
    for example in exemplars:
        lines.append(f"input: {example.input.strip()}")
        lines.append(f"output: {example.output.strip()}")
    return lines


@register_context("none")
class NoContext(TaskContext):
    """r_k is empty: plain multi-task training (the paper's fine-tuning without exemplars)."""

    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        return x


@register_context("task_id")
class TaskIdContext(TaskContext):
    """The unique task ID as a prefix (Figure 5, "Unique ID"): ``task_040_qasc: <x>``."""

    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        return f"{task_unique_id(task.name)}: {x}"


@register_context("definition")
class DefinitionContext(TaskContext):
    """The task's instruction (SNI ``Definition``), then the input (Figure 5, "Instruction")."""

    uses_definition = True

    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        return f"{definition.strip()}\n{x}" if definition.strip() else x


@register_context("exemplars")
class ExemplarsContext(TaskContext):
    """k positive examples as ``input: … output: …`` lines, then ``input: <x>`` (Figure 5)."""

    uses_exemplars = True

    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        return "\n".join([*_exemplar_lines(exemplars), f"input: {x}"])


@register_context("definition+exemplars")
class DefinitionExemplarsContext(TaskContext):
    """Tk-Instruct's layout (Wang et al., 2022): definition, positive examples, then the input."""

    uses_exemplars = True
    uses_definition = True

    def render(
        self, task: Task, x: str, exemplars: Sequence[Demonstration], definition: str
    ) -> str:
        blocks = []
        if definition.strip():
            blocks.append(f"Definition: {definition.strip()}")
        for number, example in enumerate(exemplars, start=1):
            blocks.append(
                f"Positive Example {number} -\n"
                f"Input: {example.input.strip()}\nOutput: {example.output.strip()}"
            )
        blocks.append(f"Now complete the following example -\nInput: {x}\nOutput:")
        return "\n\n".join(blocks)


def build_context(name: str, num_exemplars: int = 3) -> TaskContext:
    """The context encoder registered as ``name``."""
    try:
        cls = CONTEXTS[name]
    except KeyError:
        from itransfer.errors import ConfigError

        raise ConfigError(
            f"unknown context '{name}'; known: {', '.join(sorted(CONTEXTS))}"
        ) from None
    return cls(num_exemplars=num_exemplars)
