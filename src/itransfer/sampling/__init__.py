"""Task samplers P(K) for instruction tuning (paper §4 and Appendix B).

Build one from a config spec and ask it for the distribution at each optimizer step::

    sampler = build_sampler({"name": "reverse_annealing", "max_temperature": 1000},
                            task_sizes, total_steps=300_000, batch_size=16)
    task = rng.choice(sampler.num_tasks, p=sampler.weights(step))

This package knows nothing of tokenizers or models: only task sizes and per-task losses.
Layout: ``rates`` (pure mixing-rate formulas), ``base`` (interface, registry, builder),
``samplers`` (size-based samplers), ``dwa`` (loss-adaptive), ``plot`` (schedule figure).
"""

from itransfer.sampling.base import (
    SAMPLERS,
    FixedSampler,
    TaskSampler,
    build_sampler,
    register_sampler,
    sampling_schedule,
)
from itransfer.sampling.dwa import DWASampler
from itransfer.sampling.plot import plot_sampling_schedule
from itransfer.sampling.samplers import (
    CappedProportionalSampler,
    ProportionalSampler,
    ReverseAnnealingSampler,
    TemperatureSampler,
    UniformSampler,
    UniMaxSampler,
)

__all__ = [
    "SAMPLERS",
    "CappedProportionalSampler",
    "DWASampler",
    "FixedSampler",
    "ProportionalSampler",
    "ReverseAnnealingSampler",
    "TaskSampler",
    "TemperatureSampler",
    "UniMaxSampler",
    "UniformSampler",
    "build_sampler",
    "plot_sampling_schedule",
    "register_sampler",
    "sampling_schedule",
]
