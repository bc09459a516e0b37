"""Text metrics of the Super-NaturalInstructions benchmark: exact match and ROUGE-L.

Matches the official evaluation (allenai/natural-instructions, ``eval/automatic/evaluation.py``)
for the default (English) track:

- ROUGE-L from ``rouge_score`` with its default tokenizer and the Porter stemmer;
- exact match after SQuAD-style normalisation: lower-casing, dropping ASCII punctuation and the
  articles a/an/the, collapsing whitespace. (The official script keeps the articles; pass
  ``drop_articles=False`` — ``itransfer score --keep-articles`` — to match it bit for bit.);
- each metric is the maximum over an instance's references, taken separately per metric;
- aggregates are means over instances on a 0–100 scale, overall and grouped by task or category.

ROUGE-L recall is added because the paper reports it ("Rouge-L r"); the official script does
not compute it.

Typical use::

    scorer = default_scorer()
    scored = [ScoredInstance(id, task, category, scorer.score(prediction, references)), ...]
    report = aggregate(scored)
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rouge_score import rouge_scorer

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str, *, drop_articles: bool = True) -> str:
    """Lower-case, drop ASCII punctuation and articles, collapse whitespace (SQuAD style).

    SNI's official normaliser is the same but keeps the articles; ``drop_articles=False``
    reproduces it.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    if drop_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class InstanceScore:
    """Metric values of one prediction against its references, each in [0, 1]."""

    exact_match: float
    rougeL: float
    rougeL_recall: float


@dataclass(frozen=True)
class ScoredInstance:
    """An instance's scores with the labels it is grouped by."""

    instance_id: str
    task_id: str
    task_category: str
    score: InstanceScore


@dataclass(frozen=True)
class MetricSummary:
    """Mean metric values over ``n`` instances, on a 0–100 scale."""

    exact_match: float
    rougeL: float
    rougeL_recall: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "exact_match": self.exact_match,
            "rougeL": self.rougeL,
            "rougeL_recall": self.rougeL_recall,
            "n": self.n,
        }


@dataclass(frozen=True)
class ScoreReport:
    """Overall, per-task and per-category summaries of one set of predictions."""

    overall: MetricSummary
    per_task: dict[str, MetricSummary]
    per_category: dict[str, MetricSummary]

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "per_task": {task: s.to_dict() for task, s in self.per_task.items()},
            "per_category": {cat: s.to_dict() for cat, s in self.per_category.items()},
        }


class SniScorer:
    """Scores predictions like the SNI evaluation; holds one ``RougeScorer`` for all calls."""

    def __init__(self, *, drop_articles: bool = True) -> None:
        # Default tokenizer (not GPT-2's) because this is SNI's English track; the stemmer
        # makes "running"/"runs" match "run".
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self.drop_articles = drop_articles

    def score(self, prediction: str, references: Sequence[str]) -> InstanceScore:
        """Score ``prediction`` against each reference and keep the best value of each metric."""
        if not references:
            raise ValueError("an instance needs at least one reference")
        normalized_prediction = normalize_answer(prediction, drop_articles=self.drop_articles)
        exact_match = float(
            any(
                normalize_answer(reference, drop_articles=self.drop_articles)
                == normalized_prediction
                for reference in references
            )
        )
        rouge_f = 0.0
        rouge_recall = 0.0
        for reference in references:
            rouge = self._rouge.score(target=reference, prediction=prediction)["rougeL"]
            # The maxima are independent: the reference with the best F need not have the best
            # recall, as in the official per-metric ``metric_max_over_ground_truths``.
            rouge_f = max(rouge_f, float(rouge.fmeasure))
            rouge_recall = max(rouge_recall, float(rouge.recall))
        return InstanceScore(exact_match=exact_match, rougeL=rouge_f, rougeL_recall=rouge_recall)


@lru_cache(maxsize=2)
def default_scorer(*, drop_articles: bool = True) -> SniScorer:
    """A shared :class:`SniScorer`; building ``RougeScorer`` loads the stemmer, so reuse it."""
    return SniScorer(drop_articles=drop_articles)


def score_instance(
    prediction: str, references: Sequence[str], *, scorer: SniScorer | None = None
) -> InstanceScore:
    """Exact match, ROUGE-L F and ROUGE-L recall of one prediction, each maxed over references."""
    return (scorer or default_scorer()).score(prediction, references)


def summarize(scores: Iterable[InstanceScore]) -> MetricSummary:
    """Mean of each metric over ``scores``, scaled to 0–100."""
    scores = list(scores)
    if not scores:
        raise ValueError("cannot summarize zero instances")
    n = len(scores)
    return MetricSummary(
        exact_match=100.0 * sum(s.exact_match for s in scores) / n,
        rougeL=100.0 * sum(s.rougeL for s in scores) / n,
        rougeL_recall=100.0 * sum(s.rougeL_recall for s in scores) / n,
        n=n,
    )


def aggregate(scored: Sequence[ScoredInstance]) -> ScoreReport:
    """Overall, per-task and per-category means; each group is a mean over its instances."""
    by_task: dict[str, list[InstanceScore]] = {}
    by_category: dict[str, list[InstanceScore]] = {}
    for item in scored:
        by_task.setdefault(item.task_id, []).append(item.score)
        by_category.setdefault(item.task_category, []).append(item.score)
    return ScoreReport(
        overall=summarize(item.score for item in scored),
        per_task={task: summarize(by_task[task]) for task in sorted(by_task)},
        per_category={cat: summarize(by_category[cat]) for cat in sorted(by_category)},
    )
