"""The task-difficulty confound: partial Spearman given the pre-trained zero-shot loss."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from itransfer.analysis import correlations as corr


def test_partial_rho_equals_the_first_order_formula_on_ranks() -> None:
    rng = np.random.default_rng(3)
    x, y, z = rng.normal(size=(3, 40))
    y = y + 0.5 * x + 0.7 * z
    x = x + 0.4 * z
    result = corr.partial_spearman(x, y, z, n_permutations=200)
    r_xy, r_xz, r_yz = (stats.spearmanr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    expected = (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    assert result.rho == pytest.approx(expected, abs=1e-12)
    assert result.plain_rho == pytest.approx(r_xy, abs=1e-12)
    assert result.n == 40 and result.surviving == pytest.approx(expected / r_xy)


def test_a_planted_difficulty_confound_leaves_nothing() -> None:
    """FT and ICL loss both track difficulty and nothing else: ρ is high, the partial ~0."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(1, 5, 93)
    finetune = difficulty + rng.normal(0, 0.3, 93)
    icl = 2 * difficulty + rng.normal(0, 0.6, 93)
    result = corr.partial_spearman(finetune, icl, difficulty)
    assert corr.spearman(finetune, icl, n_boot=0).rho > 0.8
    assert abs(result.rho) < 0.2 and result.p_value > 0.05
    assert "survives" in result.describe()


def test_a_relation_beyond_difficulty_survives_and_is_significant() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(1, 5, 93)
    shared = rng.normal(0, 1, 93)  # what transfer and ICL have in common beyond difficulty
    finetune = difficulty + shared + rng.normal(0, 0.3, 93)
    icl = difficulty + shared + rng.normal(0, 0.3, 93)
    result = corr.partial_spearman(finetune, icl, difficulty, n_permutations=999)
    assert result.rho > 0.7
    assert result.p_value == pytest.approx(1 / 1000)  # no permutation reaches it


def test_permutation_p_is_uniform_under_the_null() -> None:
    """With independent x, y and z, about 5% of p-values fall below 0.05."""
    rng = np.random.default_rng(2)
    p_values = [corr.partial_spearman(*rng.normal(size=(3, 20)), n_permutations=199,
                                      seed=trial).p_value for trial in range(200)]
    assert 0.01 <= np.mean(np.array(p_values) < 0.05) <= 0.11


def test_undefined_cases_say_why() -> None:
    assert "fewer than 4 tasks" in corr.partial_spearman([1, 2, 3], [1, 3, 2], [3, 1, 2]).reason
    constant = corr.partial_spearman([1, 2, 3, 4], [1, 3, 2, 4], [5, 5, 5, 5])
    assert not constant.defined and "constant" in constant.reason
    explained = corr.partial_spearman([1, 2, 3, 4], [4, 1, 3, 2], [10, 20, 30, 40])
    assert not explained.defined and "fully explained" in explained.reason
    missing = corr.difficulty_partial(pd.DataFrame({"a": [1.0], "b": [2.0]}), "a", "b",
                                      pd.Series(dtype=float))
    assert "k = 0 loss was not measured" in missing.describe()


def test_difficulty_is_the_pretrained_k0_loss_without_context() -> None:
    rows = []
    for task, loss in (("t1", 2.0), ("t2", 3.0)):
        for shots, context, value in ((0, "none", loss), (0, "exemplars", 9.0), (5, "none", 8.0)):
            rows.append({"model": "pretrained", "checkpoint_step": 0, "task": task,
                         "method": "finetune", "split": "test", "metric": "loss",
                         "shots": shots, "context": context, "seed": 0, "value": value})
        rows.append({**rows[-1], "model": "it", "shots": 0, "value": 7.0})
    difficulty = corr.zero_shot_difficulty(pd.DataFrame(rows), "pretrained")
    assert difficulty.to_dict() == {"t1": 2.0, "t2": 3.0}
