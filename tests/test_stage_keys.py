"""One list of settings that do not change results: the stage keys of `itransfer run` ignore
exactly those, and change with every setting that does change a result."""

from __future__ import annotations

from typing import Any

import pytest

from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.runs import identity
from itransfer.runs.eval_plan import EvalPlan
from itransfer.runs.identity import (
    CHECKPOINT_SCHEDULE_SETTINGS,
    RESULT_NEUTRAL_SETTINGS,
    result_relevant,
)
from itransfer.runs.identity import evaluation_key as _eval_key
from itransfer.runs.identity import plan_key as _plan_key
from itransfer.runs.identity import training_key as _train_key

# A value other than the default for each setting that must not change results.
NEUTRAL_TOGGLES: dict[str, Any] = {
    "name": "another-label",
    "train.log_every": 7,
    "train.tensorboard": False,
    "train.wandb_project": "itransfer-test",
    "train.save_every_minutes": 5,
    "train.save_every_steps": 100,
    "eval.batch_size": 3,
    "eval.max_batch_tokens": 999,
    "eval.max_examples_per_pass": 5,
    "eval.max_tokens_per_pass": 777,
    "eval.cells_per_group": 2,
    # The monitor probes copies of the weights' behaviour, never the weights (test_monitor).
    "train.monitor": {"every_steps": 5},
    "train.monitor.every_steps": 5,
    "train.monitor.every_minutes": 2.5,
    "train.monitor.probe_tasks": ["task1447_drug_extraction_ade"],
    "train.monitor.tasks": 3,
    "train.monitor.test_items": 5,
    "train.monitor.shots": [5, 10],
    "train.monitor.context": "exemplars",
    "train.monitor.lora_epochs": 2,
    "train.monitor.forgetting_margin": 0.2,
}
# Settings that do change what a stage produces (the checkpoint schedule decides which
# trajectory checkpoints a training stage holds; save_adapters writes files; the engines agree
# only to rounding).
RESULT_TOGGLES: dict[str, Any] = {
    "seed": 1,
    "train.learning_rate": 1e-3,
    "train.sampler": {"name": "uniform"},
    "train.checkpoint_every": 5,
    "train.keep_checkpoints": 2,
    "data.splits.max_train_instances_per_task": 10,
    "model.max_source_length": 64,
    "eval.lora.r": 4,
    "eval.engine": "peft",
    "eval.save_adapters": True,
    "eval.max_new_tokens": 8,
}
PLAN = [True, False, [0, 5], ["none"]]


def _with(key: str, value: Any) -> ExperimentConfig:
    return load_config(None, [f"{key}={value!r}"])


def _keys(config: ExperimentConfig) -> tuple[str, str]:
    """(train stage key, key of the evaluation stage of its step-6 checkpoint)."""
    train_key = _train_key(config)
    return train_key, _eval_key(config, f"{train_key}@6", PLAN)


def test_every_listed_setting_has_a_toggle_here() -> None:
    assert set(NEUTRAL_TOGGLES) == RESULT_NEUTRAL_SETTINGS
    assert not set(RESULT_TOGGLES) & RESULT_NEUTRAL_SETTINGS


@pytest.mark.parametrize("key", sorted(NEUTRAL_TOGGLES))
def test_a_result_neutral_setting_keeps_the_stage_keys(key: str) -> None:
    base = load_config(None, [])
    toggled = _with(key, NEUTRAL_TOGGLES[key])
    assert toggled.model_dump() != base.model_dump()  # the toggle did change the config
    assert _keys(toggled) == _keys(base)


@pytest.mark.parametrize("key", sorted(RESULT_TOGGLES))
def test_a_result_changing_setting_changes_its_stage_key(key: str) -> None:
    base_train, base_eval = _keys(load_config(None, []))
    train_key, eval_key = _keys(_with(key, RESULT_TOGGLES[key]))
    assert eval_key != base_eval  # an evaluation reads the trained checkpoint's key too
    if key.startswith("eval."):
        assert train_key == base_train
    else:
        assert train_key != base_train


def test_result_relevant_reads_a_saved_config_and_drops_the_schedule_only_on_resume() -> None:
    saved = load_config(None, ["train.checkpoint_every=5", "train.wandb_project=x"]).model_dump(
        mode="json"
    )
    for_stage = result_relevant(saved)
    for_resume = result_relevant(saved, ignore_checkpoint_schedule=True)
    assert "wandb_project" not in for_stage["train"] and "batch_size" not in for_stage["eval"]
    assert for_stage["train"]["checkpoint_every"] == 5
    assert not {key.split(".")[1] for key in CHECKPOINT_SCHEDULE_SETTINGS} & set(
        for_resume["train"]
    )
    assert saved["train"]["wandb_project"] == "x"  # the caller's tree is left as it was


def test_the_annealing_schedule_is_result_relevant_and_linear_keeps_older_keys() -> None:
    ra = "train.sampler={name: reverse_annealing, max_temperature: 100}"
    implicit = load_config(None, [ra])
    explicit = load_config(None, [ra.replace("}", ", schedule: linear}")])
    # Stage keys from before `schedule` existed hashed exactly these keys: linear keeps them.
    legacy_sampler = {"name": "reverse_annealing", "start_temperature": 1.0,
                      "max_temperature": 100.0}
    assert result_relevant(implicit)["train"]["sampler"] == legacy_sampler
    assert _keys(explicit) == _keys(implicit)
    # Only the key omits it; the config (and so config.yaml and the manifest) states it.
    assert implicit.model_dump()["train"]["sampler"]["schedule"] == "linear"
    keys = {_keys(implicit)[0]}
    for schedule in ("inverse_linear", "log_linear"):
        other = load_config(None, [ra.replace("}", f", schedule: {schedule}}}")])
        assert result_relevant(other)["train"]["sampler"]["schedule"] == schedule
        keys.add(_keys(other)[0])
    assert len(keys) == 3  # each schedule is a training run of its own


def test_only_stages_with_lora_cells_name_the_draw_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(None, [])
    plans = {"cells": EvalPlan(icl=True, shots=frozenset({0, 5}), contexts=frozenset({"none"})),
             "icl": EvalPlan(icl=True, seen=True)}

    def keys() -> dict[str, str]:
        return {name: _eval_key(config, "ckpt@6", _plan_key(plan)) for name, plan in plans.items()}

    before = keys()
    monkeypatch.setattr(identity, "FEW_SHOT_DRAWS", "first-k-of-the-pool")
    after = keys()
    assert after["cells"] != before["cells"]  # drawn otherwise: recomputed, not reused
    assert after["icl"] == before["icl"]  # nothing drawn: stays cached


def test_the_step_budget_keys_a_training_stage_only_where_it_sets_the_step_count() -> None:
    def key(*overrides: str) -> str:
        return _train_key(load_config(None, list(overrides)))

    limited = "data.splits.max_train_instances_per_task=10"
    # With a limit and no train.steps the budgets train different step counts: never shared.
    assert key(limited, "train.budget=steps") != key(limited, "train.budget=epochs")
    # Without a limit, or with explicit steps, they are the same run: one stage.
    assert key("train.budget=steps") == key("train.budget=epochs")
    assert key(limited, "train.steps=50", "train.budget=steps") == key(limited, "train.steps=50")
    # "epochs" is what every run did before the setting existed, so their stages still match.
    before = load_config(None, [limited]).model_dump(mode="json")
    del before["train"]["budget"]
    assert result_relevant(before) == result_relevant(load_config(None, [limited]))
    assert "budget" in result_relevant(load_config(None, [limited, "train.budget=steps"]))["train"]


# --- every field: part of the identity, or marked (issue 23) ---------------------------------

# A changed value for the settings whose type alone does not give a valid one.
CHANGED: dict[str, Any] = {
    "data.sni_dir": "/data/natural-instructions",
    "data.context.name": "none",
    "data.context.max_input_tokens": 64,
    "data.splits.max_train_instances_per_task": 10,
    "model.name_or_path": "itransfer:tiny-llama",
    "train.steps": 50,
    "train.sampler": {"name": "uniform"},
    "train.mixing.every": 3,
    "train.mixing.source": "/data/c4",
    "train.keep_checkpoints": 2,
    "eval.tasks": ["task1624_disfl_qa_question_yes_no_classification"],
    "eval.max_tasks": 3,
    "eval.seen_budget": 30000,
    "eval.icl_context": "none",
    "eval.shots": [0, 5],
    "eval.transfer_contexts": ["none"],
    "eval.seeds": [0, 1],
    "eval.task_groups": ["heldout_domain"],
    # "auto" is keyed as the modules it means on T5 (q, v), so spelling those out is the same
    # stage by design (test_lora_targets): another list is another stage.
    "eval.lora.target_modules": ["q", "k"],
    "data.selection.languages": ["English", "German"],
}
# Settings in the identity only where they change the run (see config.result_relevant):
# the extra overrides under which they do.
CONDITIONAL: dict[str, list[str]] = {
    "train.budget": ["data.splits.max_train_instances_per_task=10"],
    "eval.seen_min_instances": ["eval.seen_budget=30000"],  # the floor of a budget only
}


def _leaves(model: type, prefix: str = "") -> dict[str, Any]:
    """Every setting of the config tree as dotted key -> field info (the sampler is one)."""
    from pydantic import BaseModel

    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found |= _leaves(info.annotation, f"{dotted}.")
        else:
            found[dotted] = info
    return found


def _changed_value(key: str, current: Any, info: Any) -> Any:
    from typing import get_args

    if key in CHANGED or key in NEUTRAL_TOGGLES:
        return CHANGED.get(key, NEUTRAL_TOGGLES.get(key))
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return current + 1
    if isinstance(current, float):
        return current / 2 if current else 0.01
    choices = [c for c in get_args(info.annotation) if isinstance(c, str) and c != current]
    if choices:
        return choices[0]
    if isinstance(current, list) and len(current) > 1:
        return current[:-1]
    if isinstance(current, list):
        return [*current, "another"]
    raise AssertionError(f"no changed value for {key} (default {current!r}): add it to CHANGED")


def _current(config: ExperimentConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


@pytest.mark.parametrize("key", sorted(_leaves(ExperimentConfig)))
def test_every_setting_is_in_the_stage_keys_or_marked(key: str) -> None:
    import json

    info = _leaves(ExperimentConfig)[key]
    extra = CONDITIONAL.get(key, [])
    base = load_config(None, extra)
    value = _changed_value(key, _current(base, key), info)
    changed = load_config(None, [*extra, f"{key}={json.dumps(value)}"])
    assert _current(changed, key) != _current(base, key)
    base_train, base_eval = _keys(base)
    train_key, eval_key = _keys(changed)
    if key in RESULT_NEUTRAL_SETTINGS:
        assert (train_key, eval_key) == (base_train, base_eval)
        return
    assert eval_key != base_eval, f"{key} changes no stage key and is not marked NO_EFFECT"
    assert (train_key != base_train) == (not key.startswith("eval."))


# The keys themselves: a change to how they are computed would silently orphan every cached
# stage and trajectory of existing run folders (computed on 2026-12-05, before run identity
# moved onto the fields; change them only with a compatibility reader).
PINNED_KEYS: dict[str, tuple[str, str]] = {
    "quickstart:it-proportional": ("bd56c59e97c9", "69c85763bcf0"),
    "quickstart:it-limit10": ("0254babee393", "85110b2db878"),
    "quickstart:it-mix3": ("38de4b3e6da5", "4e1690501af1"),
    "quickstart:it-uniform": ("8cc1f8f6f69c", "b86f46072ba2"),
    "defaults": ("c7bd61cb9421", "c5bbaa44282a"),
    "steps, seed, reverse annealing": ("bb52c306c9cd", "88ebfb5e0e75"),
}


def test_stage_keys_keep_their_values() -> None:
    from itransfer.config.packaged import packaged_config
    from itransfer.experiments.definition import load_experiment

    quickstart = load_experiment(packaged_config("quickstart"))
    configs = {f"quickstart:{label}": config for label, config in quickstart.variants.items()}
    configs["defaults"] = load_config(None, [])
    configs["steps, seed, reverse annealing"] = load_config(
        None, ["train.steps=7", "seed=2", "train.sampler={name: reverse_annealing}"])
    got = {}
    for name, config in configs.items():
        train_key = _train_key(config)
        plan = [True, False, [0, 5], ["none"]] if name.startswith("quickstart") else [
            True, False, [0], ["none"]]
        got[name] = (train_key, _eval_key(config, f"{train_key}@6", plan))
    assert got == PINNED_KEYS
