"""Task samplers P(K) for instruction tuning (paper §4 and Appendix B).

Build one from a config (``ExperimentConfig.train.sampler``, or the same as a mapping) and ask it
for the distribution at each optimizer step::

    sampler = build_sampler(ReverseAnnealingConfig(max_temperature=1000),
                            task_sizes, total_steps=300_000, batch_size=16)
    task = rng.choice(sampler.num_tasks, p=sampler.weights(step))

Each sampler is a config class (its parameters, typed, with defaults) registered together with
its implementation: ``@register_sampler("dwa", config=DWAConfig)``.

This package knows nothing of tokenizers or models: only task sizes and per-task losses.
Layout: ``rates`` (pure mixing-rate formulas), ``base`` (interface, config base, registry,
builder), ``samplers`` (size-based samplers), ``dwa`` (loss-adaptive), ``plot`` (schedule
figure).
"""

from itransfer.sampling.base import (
    SAMPLERS,
    FixedSampler,
    SamplerConfig,
    TaskSampler,
    build_sampler,
    parse_sampler_config,
    register_sampler,
    sampler_config_union,
    sampling_schedule,
)
from itransfer.sampling.dwa import DWAConfig, DWASampler
from itransfer.sampling.plot import plot_sampling_schedule
from itransfer.sampling.samplers import (
    CappedProportionalConfig,
    CappedProportionalSampler,
    ProportionalConfig,
    ProportionalSampler,
    ReverseAnnealingConfig,
    ReverseAnnealingSampler,
    TemperatureConfig,
    TemperatureSampler,
    UniformConfig,
    UniformSampler,
    UniMaxConfig,
    UniMaxSampler,
)

__all__ = [
    "SAMPLERS",
    "CappedProportionalConfig",
    "CappedProportionalSampler",
    "DWAConfig",
    "DWASampler",
    "FixedSampler",
    "ProportionalConfig",
    "ProportionalSampler",
    "ReverseAnnealingConfig",
    "ReverseAnnealingSampler",
    "SamplerConfig",
    "TaskSampler",
    "TemperatureConfig",
    "TemperatureSampler",
    "UniMaxConfig",
    "UniMaxSampler",
    "UniformConfig",
    "UniformSampler",
    "build_sampler",
    "parse_sampler_config",
    "plot_sampling_schedule",
    "register_sampler",
    "sampler_config_union",
    "sampling_schedule",
]
