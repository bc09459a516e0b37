"""Every config setting is either part of the run's identity or marked as changing no result.

A setting added without a decision fails here: left unmarked it would enter every key of its
section and so change every key value (orphaning users' stages, results and checkpoints), or,
outside the keyed sections, make different runs look the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.effect import (
    AddedLater,
    CheckpointSchedule,
    Effect,
    KeyedOnlyWhen,
    NoEffect,
    marker,
)
from itransfer.runs import identity
from itransfer.sampling import SAMPLERS

# The settings that were keyed, unmarked, when tests/test_identity_pins.py pinned the key
# values. A new setting goes here only with a new pin (every key of its section changes);
# otherwise mark it: NoEffect, or AddedLater(<what runs did before it>) so old keys hold.
KEYED_WHEN_PINNED = frozenset({
    "seed", "data.sni_dir", "data.selection.languages", "data.selection.seen_categories",
    "data.selection.unseen_categories", "data.selection.evaluation_domains",
    "data.selection.adversarial_sources", "data.selection.synthetic_sources",
    "data.selection.min_eval_instances", "data.splits.seen_validation_fraction",
    "data.splits.seen_test_fraction", "data.splits.unseen_test_size",
    "data.splits.few_shot_pool_size", "data.splits.max_train_instances_per_task",
    "data.context.name", "data.context.num_exemplars", "data.context.max_input_tokens",
    "model.name_or_path", "model.architecture", "model.trust_remote_code",
    "model.max_source_length", "model.max_target_length",
    "train.steps", "train.epochs", "train.batch_size", "train.gradient_accumulation",
    "train.learning_rate", "train.warmup_steps", "train.max_grad_norm", "train.weight_decay",
    "train.precision", "train.sampler.name", "train.sampler.temperature", "train.sampler.window",
    "train.sampler.base", "train.sampler.cap", "train.sampler.start_temperature",
    "train.sampler.max_temperature", "train.sampler.max_epochs", "train.mixing.every",
    "train.mixing.source", "train.mixing.max_length", "train.length_window_batches",
    "eval.task_groups", "eval.tasks", "eval.max_tasks", "eval.icl_context", "eval.shots",
    "eval.transfer_contexts", "eval.seeds", "eval.engine", "eval.lora.r", "eval.lora.alpha",
    "eval.lora.dropout", "eval.lora.learning_rate", "eval.lora.batch_size", "eval.lora.epochs",
    "eval.lora.target_modules", "eval.lora.max_grad_norm", "eval.lora.weight_decay",
    "eval.max_new_tokens", "eval.generate", "eval.seen_max_instances", "eval.save_adapters",
})
KEYED_SECTIONS = {*identity.TRAINING_SECTIONS, *identity.EVALUATION_SECTIONS}
MARKERS = (Effect, AddedLater, KeyedOnlyWhen)


def leaf_settings(model: type[BaseModel] = ExperimentConfig) -> dict[str, list[Any]]:
    """Dotted key → the fields declaring it (a sampler parameter: once per sampler)."""
    leaves: dict[str, list[Any]] = {}
    for key, field in identity.settings(model):
        if not identity.models_in(field.annotation):
            leaves.setdefault(key, []).append(field)
    return leaves


def undecided(model: type[BaseModel], keyed: Iterable[str]) -> list[str]:
    """The settings neither marked nor among ``keyed``."""
    keyed = set(keyed)
    return sorted(key for key, fields in leaf_settings(model).items()
                  if key not in keyed
                  and not all(any(marker(f, kind) for kind in MARKERS) for f in fields))


def test_every_setting_is_keyed_or_marked() -> None:
    assert undecided(ExperimentConfig, KEYED_WHEN_PINNED) == []
    for key in KEYED_WHEN_PINNED | set(leaf_settings()):
        effect = {marker(f, Effect) for f in leaf_settings().get(key, [])}
        if NoEffect not in effect:  # what changes results is in a key's sections
            assert key.split(".")[0] in KEYED_SECTIONS, key


def test_a_setting_added_without_a_mark_is_caught() -> None:
    class Extended(ExperimentConfig):
        new_knob: int = 3

    class Marked(ExperimentConfig):
        new_knob: Annotated[int, NoEffect] = 3

    assert undecided(Extended, KEYED_WHEN_PINNED) == ["new_knob"]
    assert undecided(Marked, KEYED_WHEN_PINNED) == []


def _has(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _configs() -> list[ExperimentConfig]:
    """One config per sampler, so that every sampler parameter is in some dump."""
    specs = {"examples_proportional_capped": "{name: examples_proportional_capped, cap: 100}"}
    return [load_config(None, [f"train.sampler={specs.get(name, '{name: ' + name + '}')}"])
            for name in sorted(SAMPLERS)]


@pytest.mark.parametrize("config", _configs(), ids=sorted(SAMPLERS))
def test_the_derived_trees_hold_exactly_the_settings_that_change_results(
    config: ExperimentConfig,
) -> None:
    dumped = config.model_dump(mode="json")
    for_stages = identity.result_relevant(config)
    for_resume = identity.resume_identity(config)
    for key, fields in leaf_settings().items():
        if not _has(dumped, key):
            continue  # another sampler's parameter
        effect = marker(fields[0], Effect)
        omitted = any(marker(f, AddedLater) or marker(f, KeyedOnlyWhen) for f in fields)
        if effect is NoEffect:
            assert not _has(for_stages, key) and not _has(for_resume, key), key
        elif effect is CheckpointSchedule:
            assert _has(for_stages, key) and not _has(for_resume, key), key
        elif not omitted:  # at their defaults, settings added later are left out
            assert _has(for_stages, key) and _has(for_resume, key), key


def test_the_markers_are_where_the_keys_expect_them() -> None:
    neutral = {key for key, fields in leaf_settings().items()
               if marker(fields[0], Effect) is NoEffect}
    # A whole section may be marked too (train.monitor): it and each of its settings.
    neutral |= {key for key, field in identity.settings()
                if identity.models_in(field.annotation) and marker(field, Effect) is NoEffect}
    schedule = {"train.checkpoint_every", "train.keep_checkpoints"}
    assert neutral == identity.RESULT_NEUTRAL_SETTINGS
    assert schedule == identity.CHECKPOINT_SCHEDULE_SETTINGS
