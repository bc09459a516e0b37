"""The mixing-rate functions at their edges: what they reject (and how they say it), ties,
end points of the annealing, and the exact formulas on small hand cases."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

from itransfer.sampling import rates
from itransfer.sampling.samplers import UniMaxConfig, UniMaxSampler


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([[1, 2]], "task sizes must be a non-empty 1-D sequence, got (1, 2)"),
        ([], "task sizes must be a non-empty 1-D sequence, got (0,)"),
        ([3, 0], "task sizes must be finite and positive"),
        ([3, -1], "task sizes must be finite and positive"),
        ([3, math.inf], "task sizes must be finite and positive"),
        ([3, math.nan], "task sizes must be finite and positive"),
    ],
)
def test_task_sizes_are_checked(sizes: list, message: str) -> None:
    with pytest.raises(ValueError) as error:
        rates.proportional_rates(sizes)
    assert str(error.value) == message


def test_small_positive_sizes_are_accepted_as_float64() -> None:
    got = rates.proportional_rates(np.array([1, 3], dtype=np.int32))
    assert got.dtype == np.float64 and got.tolist() == [0.25, 0.75]
    assert rates.proportional_rates([0.5, 0.5]).tolist() == [0.5, 0.5]


def test_uniform_rates() -> None:
    assert rates.uniform_rates(1).tolist() == [1.0]
    got = rates.uniform_rates(4)
    assert got.dtype == np.float64 and got.tolist() == [0.25] * 4
    with pytest.raises(ValueError) as error:
        rates.uniform_rates(0)
    assert str(error.value) == "need at least one task, got 0"


def test_temperature_rates_formula_and_check() -> None:
    assert rates.temperature_rates([1, 4], 2.0) == pytest.approx([1 / 3, 2 / 3])  # 1 : 4^(1/2)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError) as error:
            rates.temperature_rates([1, 4], bad)
        assert str(error.value) == f"temperature must be > 0, got {bad}"


def test_capped_rates_formula_and_check() -> None:
    assert rates.capped_rates([1, 4, 10], 4) == pytest.approx([1 / 9, 4 / 9, 4 / 9])
    assert rates.capped_rates([1, 2], 0.5).tolist() == [0.5, 0.5]  # any positive cap
    with pytest.raises(ValueError) as error:
        rates.capped_rates([1, 2], 0)
    assert str(error.value) == "cap must be > 0, got 0"


@pytest.mark.parametrize("schedule", ["linear", "inverse_linear", "log_linear"])
def test_annealed_temperature_end_points_and_checks(schedule: str) -> None:
    def at(step: int, total: int = 10, start: float = 2.0, end: float = 8.0) -> float:
        return rates.annealed_temperature(step, total, start=start, end=end, schedule=schedule)

    assert at(0) == 2.0 and at(10) == 8.0 and at(25) == 8.0  # held at the end past the last step
    assert at(3, start=5.0, end=5.0) == pytest.approx(5.0)  # start == end: a constant T
    assert at(0, total=1) == 2.0 and at(1, total=1) == 8.0
    middle = {"linear": 5.0, "inverse_linear": 1 / (0.5 + (0.125 - 0.5) / 2), "log_linear": 4.0}
    assert at(5) == pytest.approx(middle[schedule])
    for kwargs, message in (
        ({"start": 0.0}, "need 0 < start <= end, got start=0.0 and end=8.0"),
        ({"start": 9.0}, "need 0 < start <= end, got start=9.0 and end=8.0"),
        ({"total": 0}, "need total_steps >= 1 and step >= 0, got 0 and 1"),
        ({"step": -1}, "need total_steps >= 1 and step >= 0, got 10 and -1"),
    ):
        call = {"step": 1, "total": 10, "start": 2.0, "end": 8.0} | kwargs
        with pytest.raises(ValueError) as error:
            rates.annealed_temperature(call["step"], call["total"], start=call["start"],
                                       end=call["end"], schedule=schedule)
        assert str(error.value) == message


def test_annealed_temperature_names_an_unknown_schedule() -> None:
    with pytest.raises(ValueError) as error:
        rates.annealed_temperature(1, 10, start=1.0, end=2.0, schedule="cosine")  # type: ignore[arg-type]
    assert str(error.value) == ("unknown temperature schedule 'cosine'; known: linear, "
                                "inverse_linear, log_linear")


def test_unimax_allocation_ties_checks_and_leftovers() -> None:
    # Smallest first; a tie in size is visited in index order (the same shares here).
    assert rates.unimax_allocation([4, 1, 4], 9, 1.0).tolist() == [4.0, 1.0, 4.0]
    # 2 tasks of size 2 capped at 2 epochs (4 each); the rest goes to the large one.
    assert rates.unimax_allocation([2, 100, 2], 30, 2.0).tolist() == [4.0, 22.0, 4.0]
    assert rates.unimax_rates([2, 100, 2], 30, 2.0) == pytest.approx([4 / 30, 22 / 30, 4 / 30])
    assert rates.unimax_allocation([1, 3], 0.5, 1.0).tolist() == [0.25, 0.25]  # any budget > 0
    for budget, epochs, message in ((0, 1.0, "budget must be > 0, got 0"),
                                    (10, 0.0, "max_epochs must be > 0, got 0.0")):
        with pytest.raises(ValueError) as error:
            rates.unimax_allocation([1, 2], budget, epochs)
        assert str(error.value) == message


def test_loss_ratio_rates_formula_and_check() -> None:
    base = np.array([0.5, 0.5])
    got = rates.loss_ratio_rates(base, np.array([0.0, math.log(3.0) * 2]), 2.0)
    assert got == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError) as error:
        rates.loss_ratio_rates(base, np.zeros(2), 0.0)
    assert str(error.value) == "temperature must be > 0, got 0.0"


def test_entropy_counts_zero_mass_as_zero_along_the_last_axis() -> None:
    weights = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 * log 0 is counted as 0, without a numpy warning
        got = rates.entropy(weights)
    assert got == pytest.approx([math.log(2), 0.0, 1.5 * math.log(2)])
    assert rates.effective_num_tasks(weights) == pytest.approx([2.0, 1.0, 2 ** 1.5])
    assert rates.entropy([0.5, 0.5]) == pytest.approx(math.log(2))


def test_unimax_sampler_logs_how_many_tasks_the_budget_caps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="itransfer.sampling.samplers"):
        sampler = UniMaxSampler(UniMaxConfig(max_epochs=2.0), [2, 100, 2], total_steps=10,
                                batch_size=3)
        weights = sampler.weights(0)
    assert weights == pytest.approx([4 / 30, 22 / 30, 4 / 30])
    assert "unimax: budget of 30 examples caps 2 of 3 tasks at 2 epochs" in caplog.messages
