"""What to measure on a checkpoint: the evaluation plans that the paper's sections ask for.

A section (:class:`itransfer.analysis.registry.Section`) says what it needs per model as
:class:`Need` values; the pipeline merges every section's plans (``a | b``) and the stage keys
(:mod:`itransfer.runs.identity`) hash them. Plain data: no torch, pandas or pydantic here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

PRETRAINED = "pretrained"  # the base model before instruction tuning; step 0 of trajectories


@dataclass(frozen=True)
class EvalPlan:
    """What to measure on one checkpoint; ``a | b`` measures everything either asks for.

    ``task_groups`` are evaluation groups measured on top of the config's ``eval.task_groups``
    (every measurement of the plan covers their tasks too).
    """

    icl: bool = False
    seen: bool = False
    shots: frozenset[int] = frozenset()
    contexts: frozenset[str] = frozenset()
    task_groups: frozenset[str] = frozenset()

    def merge(self, other: EvalPlan) -> EvalPlan:
        return EvalPlan(icl=self.icl or other.icl, seen=self.seen or other.seen,
                        shots=self.shots | other.shots, contexts=self.contexts | other.contexts,
                        task_groups=self.task_groups | other.task_groups)

    __or__ = merge


When = Literal["final", "trajectory"]


@dataclass(frozen=True)
class Need:
    """A section's request: measure ``plan`` on ``model`` at its final step or every step."""

    model: str
    when: When
    plan: EvalPlan = field(default_factory=EvalPlan)


def transfer_plan(shots: Iterable[int], contexts: Iterable[str] = ("none",)) -> EvalPlan:
    """ICL and k-shot fine-tuning at each of ``shots`` in each fine-tuning context."""
    return EvalPlan(icl=True, shots=frozenset(shots), contexts=frozenset(contexts))


# The control of the task-difficulty confound (analysis.correlations.zero_shot_difficulty):
# the pre-trained model's test loss at k = 0 with no context, one forward pass per test item.
DIFFICULTY_PLAN = EvalPlan(shots=frozenset({0}), contexts=frozenset({"none"}))


def trajectory_needs(labels: list[str], shots: int) -> list[Need]:
    """Every checkpoint of each model, and the pre-trained model as their step 0."""
    plan = transfer_plan({shots})
    return [*(Need(label, "trajectory", plan) for label in labels),
            Need(PRETRAINED, "final", plan | DIFFICULTY_PLAN)]
