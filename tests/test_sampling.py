"""Task samplers: each distribution against its formula on hand-worked sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from itransfer.config.schema import TrainConfig
from itransfer.errors import ConfigError
from itransfer.sampling import (
    SAMPLERS,
    DWASampler,
    SamplerConfig,
    TemperatureSampler,
    UniformConfig,
    build_sampler,
    parse_sampler_config,
    plot_sampling_schedule,
    register_sampler,
    sampling_schedule,
)
from itransfer.sampling.plot import _plot_steps, describe_sampler
from itransfer.sampling.rates import (
    ANNEALING_SCHEDULES,
    annealed_temperature,
    effective_num_tasks,
    proportional_rates,
    temperature_rates,
    unimax_allocation,
    unimax_rates,
)

SIZES = [10, 40, 50]
TOTAL_STEPS = 1000
BATCH_SIZE = 4


def make(spec: dict, sizes: list[int] = SIZES, total_steps: int = TOTAL_STEPS):
    return build_sampler(spec, sizes, total_steps=total_steps, batch_size=BATCH_SIZE)


def assert_distribution(weights: np.ndarray, expected: list[float] | np.ndarray) -> None:
    assert weights.dtype == np.float64
    assert weights.shape == (len(expected),)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-15)


def sqrt_weights(sizes: list[int], temperature: float) -> np.ndarray:
    powered = np.array(sizes, dtype=float) ** (1.0 / temperature)
    return powered / powered.sum()


def test_registry_names_every_sampler() -> None:
    assert set(SAMPLERS) == {
        "proportional",
        "uniform",
        "temperature",
        "reverse_annealing",
        "dwa",
        "examples_proportional_capped",
        "unimax",
    }


# One spec per sampler with every parameter off its default; a new sampler must add one.
NON_DEFAULT_SPECS = {
    "proportional": {"name": "proportional"},
    "uniform": {"name": "uniform"},
    "temperature": {"name": "temperature", "temperature": 2.5},
    "reverse_annealing": {"name": "reverse_annealing", "start_temperature": 2.0,
                          "max_temperature": 100.0, "schedule": "log_linear"},
    "dwa": {"name": "dwa", "temperature": 0.5, "window": 3, "base": "uniform"},
    "examples_proportional_capped": {"name": "examples_proportional_capped", "cap": 30.0},
    "unimax": {"name": "unimax", "max_epochs": 2.0},
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_has_a_config_that_round_trips(name: str) -> None:
    config_class = SAMPLERS[name].config_class
    assert issubclass(config_class, SamplerConfig) and config_class.registered_name() == name
    config = parse_sampler_config(NON_DEFAULT_SPECS[name])
    assert type(config) is config_class
    assert config.model_dump() == NON_DEFAULT_SPECS[name]
    assert config_class.model_validate(config.model_dump()) == config
    # Through the experiment config's union, as YAML and the stage cache keys see it.
    dumped = TrainConfig(sampler=config).model_dump(mode="json")
    assert TrainConfig.model_validate(dumped).sampler == config
    # The sampler reads its parameters from the config, not from defaults of its own.
    sampler = build_sampler(config, SIZES, total_steps=TOTAL_STEPS, batch_size=BATCH_SIZE)
    assert sampler.config is config
    for parameter, value in config.model_dump(exclude={"name"}).items():
        assert getattr(sampler, parameter) == value


def test_config_defaults_are_the_samplers_defaults() -> None:
    defaults = {
        name: SAMPLERS[name].config_class.model_construct().model_dump(exclude={"name"})
        for name in SAMPLERS
    }
    assert defaults == {
        "proportional": {},
        "uniform": {},
        "temperature": {"temperature": 1.0},
        "reverse_annealing": {"start_temperature": 1.0, "max_temperature": 1000.0,
                              "schedule": "linear"},
        "dwa": {"temperature": 1.0, "window": 50, "base": "proportional"},
        "examples_proportional_capped": {},  # cap is required
        "unimax": {"max_epochs": 1.0},
    }
    assert SAMPLERS["examples_proportional_capped"].config_class.model_fields["cap"].is_required()


def test_a_config_must_carry_its_samplers_name() -> None:
    with pytest.raises(ValueError, match=r"defaults to 'uniform'.*registers as 'flat'"):
        register_sampler("flat", config=UniformConfig)


def test_a_sampler_refuses_another_samplers_config() -> None:
    with pytest.raises(TypeError, match="takes a TemperatureConfig, got UniformConfig"):
        TemperatureSampler(UniformConfig(), SIZES, total_steps=1, batch_size=1)


def test_proportional_follows_sizes() -> None:
    assert_distribution(make({"name": "proportional"}).weights(0), [0.1, 0.4, 0.5])


def test_proportional_with_data_limit_of_10_is_uniform() -> None:
    # Sizes are counted after the per-task cap: a limit of 10 leaves every task with 10 (§3.2).
    capped_sizes = [min(size, 10) for size in [10, 400, 5000, 73]]
    assert_distribution(make({"name": "proportional"}, capped_sizes).weights(7), [0.25] * 4)


def test_uniform() -> None:
    assert_distribution(make({"name": "uniform"}).weights(123), [1 / 3] * 3)


def test_temperature_two_is_normalised_square_roots() -> None:
    weights = make({"name": "temperature", "temperature": 2.0}).weights(0)
    roots = np.sqrt([10, 40, 50])
    assert_distribution(weights, roots / roots.sum())


def test_temperature_extremes_stay_finite() -> None:
    assert_distribution(make({"name": "temperature", "temperature": 1e-3}).weights(0), [0, 0, 1])
    near_uniform = make({"name": "temperature", "temperature": 1e9}).weights(0)
    np.testing.assert_allclose(near_uniform, [1 / 3] * 3, atol=1e-8)


def test_reverse_annealing_heats_linearly() -> None:
    sampler = make({"name": "reverse_annealing", "max_temperature": 1000})
    assert_distribution(sampler.weights(0), [0.1, 0.4, 0.5])
    halfway_temperature = 1 + (1000 - 1) / 2
    assert sampler.temperature(TOTAL_STEPS // 2) == halfway_temperature
    assert_distribution(sampler.weights(TOTAL_STEPS // 2), sqrt_weights(SIZES, halfway_temperature))
    assert_distribution(sampler.weights(TOTAL_STEPS), sqrt_weights(SIZES, 1000))
    # Past the end the temperature holds at its maximum.
    assert_distribution(sampler.weights(5 * TOTAL_STEPS), sqrt_weights(SIZES, 1000))


def test_reverse_annealing_custom_start() -> None:
    sampler = make({"name": "reverse_annealing", "max_temperature": 10, "start_temperature": 2})
    assert sampler.temperature(0) == 2
    assert sampler.temperature(TOTAL_STEPS // 4) == 2 + 8 / 4
    assert_distribution(sampler.weights(0), sqrt_weights(SIZES, 2))


# T0=1, T_max=1000 over 1000 steps, worked by hand at the start, a quarter, half, the end and
# past it. inverse_linear: 1/T = 1 - 0.999 p; log_linear: T = 1000^p.
HAND_TEMPERATURES = {
    "linear": [1.0, 250.75, 500.5, 1000.0, 1000.0],
    "inverse_linear": [1.0, 1 / 0.75025, 1 / 0.5005, 1000.0, 1000.0],
    "log_linear": [1.0, 10**0.75, 10**1.5, 1000.0, 1000.0],
}


@pytest.mark.parametrize("schedule", sorted(HAND_TEMPERATURES))
def test_annealed_temperature_matches_hand_values(schedule: str) -> None:
    temperatures = [
        annealed_temperature(step, 1000, start=1.0, end=1000.0, schedule=schedule)
        for step in (0, 250, 500, 1000, 3000)
    ]
    np.testing.assert_allclose(temperatures, HAND_TEMPERATURES[schedule], rtol=1e-12)


def test_annealed_temperature_from_another_start() -> None:
    # T0=2, T_max=8 at half-way: arithmetic, harmonic and geometric means of the end points.
    halfway = {schedule: annealed_temperature(5, 10, start=2.0, end=8.0, schedule=schedule)
               for schedule in ANNEALING_SCHEDULES}
    assert halfway == pytest.approx({"linear": 5.0, "inverse_linear": 3.2, "log_linear": 4.0})


def test_annealed_temperature_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown temperature schedule 'cosine'"):
        annealed_temperature(0, 10, start=1.0, end=2.0, schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start <= end"):
        annealed_temperature(0, 10, start=3.0, end=2.0)


def test_reverse_annealing_defaults_to_the_linear_schedule() -> None:
    config = parse_sampler_config({"name": "reverse_annealing"})
    assert config.schedule == "linear"
    sampler = make({"name": "reverse_annealing"})
    assert sampler.temperature(TOTAL_STEPS // 2) == 500.5


@pytest.mark.parametrize("schedule", sorted(HAND_TEMPERATURES))
def test_reverse_annealing_follows_its_schedule(schedule: str) -> None:
    sampler = make({"name": "reverse_annealing", "max_temperature": 1000, "schedule": schedule})
    for step, temperature in zip((0, 250, 500, 1000, 3000), HAND_TEMPERATURES[schedule],
                                 strict=True):
        assert sampler.temperature(step) == pytest.approx(temperature, rel=1e-12)
        assert_distribution(sampler.weights(step), sqrt_weights(SIZES, temperature))


def test_reverse_annealing_schedules_order_the_spread_of_p_k() -> None:
    # At every step inside the run linear is hottest and inverse_linear coolest, so P(K) is
    # spread over more tasks under linear: the point of the alternative readings.
    spread = {
        schedule: effective_num_tasks(sampling_schedule(
            make({"name": "reverse_annealing", "schedule": schedule}), [100, 500, 900]))
        for schedule in ANNEALING_SCHEDULES
    }
    assert np.all(spread["linear"] > spread["log_linear"])
    assert np.all(spread["log_linear"] > spread["inverse_linear"])


def test_temperature_sampling_never_draws_small_tasks_less_than_proportional() -> None:
    # §4's "Reverse Annealing underfits lower resource tasks" cannot come from drawing them less
    # often. p_k(T) / p_k(1) = n_k^(1/T - 1) · Σ n_j / Σ n_j^(1/T): non-increasing in n_k for
    # T >= 1, and >= 1 for the smallest task (each n_j / n_min >= 1 is at least its 1/T-th
    # power). So the tasks that gain are all those below a size, the smallest always among them.
    rng = np.random.default_rng(0)
    for trial in range(500):
        sizes = rng.integers(1, 6500, size=int(rng.integers(2, 80)))
        temperature = 1.0 if trial % 10 == 0 else 1.0 + float(rng.exponential(rng.choice(
            [0.5, 10.0, 1000.0])))
        ratio = temperature_rates(sizes, temperature) / proportional_rates(sizes)
        order = np.argsort(sizes, kind="stable")
        assert ratio[order[0]] >= 1.0 - 1e-12, (sizes.tolist(), temperature)
        assert np.all(np.diff(ratio[order]) <= 1e-12 * ratio[order][:-1])


@pytest.mark.parametrize("schedule", ANNEALING_SCHEDULES)
def test_reverse_annealing_draws_the_smallest_task_at_least_proportionally_at_every_step(
    schedule: str,
) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        sizes = rng.integers(1, 6500, size=int(rng.integers(2, 50))).tolist()
        sampler = make({"name": "reverse_annealing", "max_temperature": float(
            rng.choice([1.0, 100.0, 1e5])), "schedule": schedule}, sizes, total_steps=200)
        smallest = int(np.argmin(sizes))
        shares = sampling_schedule(sampler, range(0, 201, 5))[:, smallest]
        assert np.all(shares >= proportional_rates(sizes)[smallest] * (1 - 1e-12))


def test_unknown_schedule_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"reverse_annealing.*'schedule'.*got 'cosine'"):
        parse_sampler_config({"name": "reverse_annealing", "schedule": "cosine"})


def test_effective_num_tasks() -> None:
    assert effective_num_tasks(np.full(7, 1 / 7)) == pytest.approx(7.0)
    assert effective_num_tasks(np.array([0.0, 1.0, 0.0])) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2, so exp(H) = 2^1.5.
    assert effective_num_tasks(np.array([0.5, 0.25, 0.25])) == pytest.approx(2**1.5)
    # Row-wise over a schedule, as the figure uses it.
    np.testing.assert_allclose(effective_num_tasks(np.array([[0.5, 0.5], [1.0, 0.0]])), [2, 1])


def test_examples_proportional_capped() -> None:
    weights = make({"name": "examples_proportional_capped", "cap": 30}).weights(0)
    assert_distribution(weights, [10 / 70, 30 / 70, 30 / 70])


def test_unimax_hand_worked_allocation() -> None:
    # Budget 90, 2 epochs: task 0 gets min(90/3, 20) = 20; then min(70/2, 80) = 35; then 35.
    np.testing.assert_allclose(unimax_allocation(SIZES, 90, 2), [20, 35, 35])
    # One epoch: min(30, 10) = 10; min(80/2, 40) = 40; min(40, 50) = 40.
    np.testing.assert_allclose(unimax_allocation(SIZES, 90, 1), [10, 40, 40])
    np.testing.assert_allclose(unimax_rates(SIZES, 90, 1), [10 / 90, 40 / 90, 40 / 90])
    sampler = make({"name": "unimax", "max_epochs": 1}, total_steps=45)  # 45 * 4 = 180 > 100
    assert_distribution(sampler.weights(0), [0.1, 0.4, 0.5])
    sampler = build_sampler(
        {"name": "unimax", "max_epochs": 2}, SIZES, total_steps=30, batch_size=3
    )
    assert_distribution(sampler.weights(0), [20 / 90, 35 / 90, 35 / 90])


def feed_dwa(sampler: DWASampler, losses_per_step: list[dict[int, float]], first_step: int = 0):
    for offset, losses in enumerate(losses_per_step):
        sampler.observe_losses(first_step + offset, losses)


HALVING_VS_FLAT = [{0: 2.0, 1: 2.0}, {0: 2.0, 1: 2.0}, {0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}]


def test_dwa_favours_the_task_whose_loss_stalls() -> None:
    sampler = make({"name": "dwa", "window": 2}, sizes=[100, 100])
    assert_distribution(sampler.weights(0), [0.5, 0.5])
    feed_dwa(sampler, HALVING_VS_FLAT)
    np.testing.assert_allclose(sampler.loss_ratios(), [0.5, 1.0])
    expected = np.exp([0.5, 1.0]) / np.exp([0.5, 1.0]).sum()
    weights = sampler.weights(4)
    assert_distribution(weights, expected)
    assert weights[0] < weights[1]


def test_dwa_tilts_proportional_base_and_respects_temperature() -> None:
    sampler = make({"name": "dwa", "window": 2, "temperature": 0.5}, sizes=[10, 30])
    assert_distribution(sampler.weights(0), [0.25, 0.75])
    feed_dwa(sampler, HALVING_VS_FLAT)
    tilted = np.array([10, 30]) * np.exp(np.array([0.5, 1.0]) / 0.5)
    assert_distribution(sampler.weights(4), tilted / tilted.sum())


def test_dwa_uniform_base_is_plain_softmax() -> None:
    sampler = make({"name": "dwa", "window": 2, "base": "uniform"}, sizes=[10, 30])
    feed_dwa(sampler, HALVING_VS_FLAT)
    assert_distribution(sampler.weights(4), np.exp([0.5, 1.0]) / np.exp([0.5, 1.0]).sum())


def test_dwa_needs_two_full_windows_and_bounds_memory() -> None:
    sampler = make({"name": "dwa", "window": 2}, sizes=[100, 100])
    feed_dwa(sampler, HALVING_VS_FLAT[:3])
    np.testing.assert_allclose(sampler.loss_ratios(), [1.0, 1.0])
    feed_dwa(sampler, [{0: 1.0}] * 20, first_step=3)
    assert [len(history) for history in sampler.state_dict()["loss_history"]] == [4, 3]


def test_dwa_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(1)
    original = make({"name": "dwa", "window": 3}, sizes=[5, 17, 40])
    steps = [
        {int(task): float(rng.uniform(0.1, 3.0)) for task in rng.choice(3, 2)} for _ in range(30)
    ]
    feed_dwa(original, steps)
    resumed = make({"name": "dwa", "window": 3}, sizes=[5, 17, 40])
    resumed.load_state_dict(json.loads(json.dumps(original.state_dict())))
    np.testing.assert_array_equal(resumed.weights(30), original.weights(30))
    for sampler in (original, resumed):
        sampler.observe_losses(30, {0: 0.7, 2: 1.9})
    np.testing.assert_array_equal(resumed.weights(31), original.weights(31))
    with pytest.raises(ValueError, match="steps must increase"):
        resumed.observe_losses(30, {0: 1.0})


def test_state_from_another_sampler_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'dwa'.*'uniform'"):
        make({"name": "uniform"}).load_state_dict(make({"name": "dwa"}).state_dict())


def test_dwa_rejects_bad_losses() -> None:
    sampler = make({"name": "dwa"})
    with pytest.raises(ValueError, match="task index 3"):
        sampler.observe_losses(0, {3: 1.0})
    with pytest.raises(ValueError, match="nan"):
        sampler.observe_losses(0, {0: math.nan})


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_draws_match_weights(name: str) -> None:
    spec = {"name": name, "cap": 30} if name == "examples_proportional_capped" else {"name": name}
    sampler = make(spec)
    weights = sampler.weights(TOTAL_STEPS // 3)
    draws = np.random.default_rng(0).choice(len(SIZES), size=20_000, p=weights)
    frequencies = np.bincount(draws, minlength=len(SIZES)) / draws.size
    # 4 standard errors of a frequency near 0.5 over 20k draws is about 0.014.
    np.testing.assert_allclose(frequencies, weights, atol=0.015)


def test_unknown_sampler_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown sampler 'annealing'.*proportional.*uniform"):
        make({"name": "annealing"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "temperature", "temp": 2}, "'temperature' has no parameter 'temp' .given 2"),
        ({"name": "temperature", "temperature": 0}, "'temperature'.*'temperature'.*got 0"),
        ({"name": "temperature", "temperature": -1.5}, "got -1.5"),
        ({"name": "temperature", "temperature": "1e3"}, "got '1e3'"),
        ({"name": "examples_proportional_capped", "cap": 0}, "'cap' must be > 0, got 0"),
        ({"name": "examples_proportional_capped"}, "needs parameter 'cap'"),
        ({"name": "reverse_annealing", "max_temperature": 0.5}, "'max_temperature'.*got 0.5"),
        ({"name": "dwa", "window": 0}, "'window' must be an integer >= 1, got 0"),
        ({"name": "dwa", "base": "inverse"}, "'base' must be one of.*got 'inverse'"),
        ({"name": "unimax", "max_epochs": -1}, "'max_epochs'.*got -1"),
        ({"sampler": "uniform"}, "'name' key"),
    ],
)
def test_invalid_parameters_name_sampler_parameter_and_value(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(spec)


@pytest.mark.parametrize(
    ("sizes", "total_steps", "message"),
    [
        ([], 10, "task list is empty"),
        ([10, 0, 5], 10, "task 1 has size 0"),
        ([10, -3], 10, "task 1 has size -3"),
        ([10, 20], 0, "'total_steps' must be an integer >= 1, got 0"),
    ],
)
def test_invalid_setup(sizes: list[int], total_steps: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make({"name": "proportional"}, sizes, total_steps=total_steps)


def test_negative_step_is_a_bug() -> None:
    with pytest.raises(ValueError, match="step"):
        make({"name": "uniform"}).weights(-1)


def test_schedule_and_plot(tmp_path) -> None:
    sampler = make({"name": "reverse_annealing", "max_temperature": 100})
    schedule = sampling_schedule(sampler, [0, 500, 1000])
    assert schedule.shape == (3, 3)
    np.testing.assert_allclose(schedule.sum(axis=1), 1.0)
    spread = effective_num_tasks(schedule)
    assert np.all(np.diff(spread) > 0) and spread[-1] < 3
    path = plot_sampling_schedule(
        sampler, tmp_path / "figures" / "schedule.png", task_names=["a", "b", "c"], top_k=2
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_schedule_figure_names_the_samplers_parameters() -> None:
    sampler = make({"name": "reverse_annealing", "max_temperature": 100, "schedule": "log_linear"})
    assert describe_sampler(sampler) == (
        "reverse_annealing (start_temperature=1, max_temperature=100, schedule=log_linear)"
    )
    assert describe_sampler(make({"name": "uniform"})) == "uniform"


def test_schedule_figure_samples_the_start_of_the_run_densely() -> None:
    # Under the linear reading P(K) changes almost entirely in the first 1-2% of the run.
    steps = _plot_steps(10_000, 50)
    assert steps[0] == 0 and steps[-1] == 10_000 and np.all(np.diff(steps) > 0)
    assert np.sum(steps < 10_000 / 49) >= 8  # not just step 0, as evenly spaced points give
