"""Known values of the SNI metrics (exact match, ROUGE-L F and recall) and their aggregation."""

from __future__ import annotations

import pytest

from itransfer.eval.metrics import (
    InstanceScore,
    ScoredInstance,
    SniScorer,
    aggregate,
    default_scorer,
    normalize_answer,
    score_instance,
    summarize,
)


def test_normalize_drops_case_punctuation_and_extra_whitespace() -> None:
    assert normalize_answer("  The Answer,  is:\tYes! ") == "answer is yes"


def test_normalize_drops_articles_unless_asked_to_keep_them() -> None:
    # SQuAD-style by default; the official SNI script keeps articles (drop_articles=False).
    assert normalize_answer("A cat and the dog") == "cat and dog"
    assert normalize_answer("A cat and the dog", drop_articles=False) == "a cat and the dog"
    # Only whole words are articles.
    assert normalize_answer("Theater an anthem", drop_articles=True) == "theater anthem"


def test_exact_match_ignores_case_and_punctuation() -> None:
    assert score_instance("Yes.", ["yes"]).exact_match == 1.0
    assert score_instance('"Positive"!', ["positive"]).exact_match == 1.0
    assert score_instance("yes", ["no"]).exact_match == 0.0


def test_exact_match_ignores_articles_by_default() -> None:
    assert score_instance("the cat", ["cat"]).exact_match == 1.0
    assert SniScorer(drop_articles=False).score("the cat", ["cat"]).exact_match == 0.0


def test_each_metric_is_the_max_over_references() -> None:
    score = score_instance("the cat sat", ["dog", "The cat sat."])
    assert score == InstanceScore(exact_match=1.0, rougeL=1.0, rougeL_recall=1.0)


def test_rouge_uses_the_stemmer() -> None:
    assert score_instance("running", ["run"]).rougeL == pytest.approx(1.0)
    assert score_instance("runs", ["run"]).rougeL == pytest.approx(1.0)
    # Stemming is not normalisation for exact match.
    assert score_instance("runs", ["run"]).exact_match == 0.0


def test_rouge_recall_differs_from_f_measure() -> None:
    # prediction: 7 tokens, reference: 3 tokens, LCS = "the cat sat" = 3.
    # P = 3/7, R = 3/3 = 1, F = 2PR / (P + R) = (6/7) / (10/7) = 0.6.
    score = score_instance("the cat sat on the mat today", ["the cat sat"])
    assert score.rougeL == pytest.approx(0.6)
    assert score.rougeL_recall == pytest.approx(1.0)
    assert score.exact_match == 0.0


def test_f_and_recall_maxima_may_come_from_different_references() -> None:
    # vs "red":           LCS 1, P = 1/2, R = 1,   F = 2(1/2)(1) / (3/2)     = 2/3.
    # vs "red fox jumps": LCS 2, P = 1,   R = 2/3, F = 2(1)(2/3) / (5/3)     = 4/5.
    # Best F is 4/5 (second reference), best recall is 1 (first reference).
    score = score_instance("red fox", ["red", "red fox jumps"])
    assert score.rougeL == pytest.approx(0.8)
    assert score.rougeL_recall == pytest.approx(1.0)


def test_rouge_tokenizer_ignores_case_and_punctuation() -> None:
    assert score_instance("Hello, World!", ["hello world"]).rougeL == pytest.approx(1.0)


def test_empty_prediction_scores_zero() -> None:
    assert score_instance("", ["something"]) == InstanceScore(0.0, 0.0, 0.0)
    # rouge_score gives 0 when either side has no tokens, even if both are empty; exact match
    # still counts "" == "" as a match, as the official script does.
    assert score_instance("", [""]) == InstanceScore(1.0, 0.0, 0.0)


def test_instance_without_references_is_rejected() -> None:
    with pytest.raises(ValueError, match="reference"):
        score_instance("yes", [])


def test_default_scorer_is_built_once() -> None:
    assert default_scorer() is default_scorer()
    assert default_scorer(drop_articles=False) is not default_scorer()


def _scored(instance_id: str, task: str, category: str, em: float, f: float, r: float):
    return ScoredInstance(instance_id, task, category, InstanceScore(em, f, r))


def test_aggregate_means_over_instances_on_a_0_to_100_scale() -> None:
    scored = [
        _scored("a1", "task_a", "X", 1.0, 1.0, 1.0),
        _scored("a2", "task_a", "X", 0.0, 0.5, 0.25),
        _scored("b1", "task_b", "X", 1.0, 1.0, 1.0),
        _scored("c1", "task_c", "Y", 0.0, 0.0, 0.5),
    ]
    report = aggregate(scored)

    assert report.overall.n == 4
    assert report.overall.exact_match == pytest.approx(50.0)  # 2 / 4
    assert report.overall.rougeL == pytest.approx(62.5)  # 2.5 / 4
    assert report.overall.rougeL_recall == pytest.approx(68.75)  # 2.75 / 4

    assert report.per_task["task_a"].exact_match == pytest.approx(50.0)
    assert report.per_task["task_a"].rougeL == pytest.approx(75.0)
    assert report.per_task["task_a"].rougeL_recall == pytest.approx(62.5)
    assert report.per_task["task_b"].exact_match == pytest.approx(100.0)
    assert report.per_task["task_c"].rougeL_recall == pytest.approx(50.0)

    # Category X is the mean over its 3 instances (2/3), not over its tasks' means (75).
    assert report.per_category["X"].exact_match == pytest.approx(200 / 3)
    assert report.per_category["X"].n == 3
    assert report.per_category["Y"].exact_match == pytest.approx(0.0)


def test_report_to_dict_shape() -> None:
    report = aggregate([_scored("a1", "task_a", "X", 1.0, 0.5, 0.25)])
    expected_block = {"exact_match": 100.0, "rougeL": 50.0, "rougeL_recall": 25.0, "n": 1}
    assert report.to_dict() == {
        "overall": expected_block,
        "per_task": {"task_a": expected_block},
        "per_category": {"X": expected_block},
    }


def test_summarize_rejects_no_instances() -> None:
    with pytest.raises(ValueError, match=r"^cannot summarize zero instances$"):
        summarize([])
