"""Whether two runs are the same: every identity key, derived from the config's markers.

Each config field says once, where it is declared, how it bears on results
(:mod:`itransfer.effect`); unmarked fields change results. From that one statement come:

* :func:`training_key`: a training stage of ``itransfer run`` (its trajectory checkpoints);
* :func:`evaluation_key` with :func:`plan_key`: an evaluation stage of one checkpoint;
* :func:`measurement_hash`: the ``config_hash`` of results rows, by which an evaluation skips
  the cells it already measured;
* :func:`resume_differences`: what keeps ``--resume`` from continuing a checkpoint;
* :func:`tokenized_cache_key`: the tokenized training set on disk.

Every value must stay what earlier versions computed for the same config (users' stage stores,
results tables and caches are found by them): ``tests/test_identity_pins.py`` pins them, and
settings added later carry :class:`~itransfer.effect.AddedLater` so that old keys hold.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from itransfer.config.schema import ExperimentConfig, SplitConfig
from itransfer.data.splits import FEW_SHOT_DRAWS
from itransfer.effect import CheckpointSchedule, Effect, KeyedOnlyWhen, NoEffect, marker
from itransfer.runs.compat import omitted_from_older_keys, upgrade_saved_config

if TYPE_CHECKING:
    from itransfer.runs.eval_plan import EvalPlan

# The sections of the config each key hashes (the others are told by the key's other parts).
TRAINING_SECTIONS = ("seed", "data", "model", "train")
EVALUATION_SECTIONS = ("eval", "data", "model")  # the checkpoint stands for the training
MEASUREMENT_SECTIONS = ("model", "data")  # eval settings: per method, below
# An evaluation stage's checkpoint names its weights, so the model's name is not hashed again.
NAMED_BY_THE_CHECKPOINT = "name_or_path"
# The eval settings each method's rows depend on, under the names their hashes have used.
MEASURED_WITH: dict[str, dict[str, str]] = {
    "icl": {"max_new_tokens": "max_new_tokens", "generate": "generate"},
    # The budget and its floor were added later: absent from the keys where unset (below).
    "seen": {"cap": "seen_max_instances", "budget": "seen_budget",
             "min_instances": "seen_min_instances"},
    "finetune": {"max_new_tokens": "max_new_tokens", "generate": "generate"},
}
# Of the splits, the tokenized cache depends on the seen tasks' fractions only: the per-task
# data limit shortens what a run reads from it, and evaluation tasks are not in it.
TOKENIZED_SPLIT_SETTINGS = ("seen_test_fraction", "seen_validation_fraction")


def config_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that determine a measurement or a stage."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- the settings and their markers ------------------------------------------------------------


def settings(model: type[BaseModel] = ExperimentConfig) -> Iterator[tuple[str, FieldInfo]]:
    """Every setting of ``model`` as (dotted key, field), through nested sections and each
    member of a union (the samplers' parameters appear once per sampler that has them)."""
    for name, field in model.model_fields.items():
        yield name, field
        for nested in models_in(field.annotation):
            for key, inner in settings(nested):
                yield f"{name}.{key}", inner


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field holds: itself, or the members of its union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is None:
        return []
    return [model for arg in get_args(annotation) for model in models_in(arg)]


def marked(effect: Effect, model: type[BaseModel] = ExperimentConfig) -> frozenset[str]:
    """The dotted keys of the settings marked ``effect``."""
    return frozenset(key for key, field in settings(model) if marker(field, Effect) is effect)


RESULT_NEUTRAL_SETTINGS = marked(NoEffect)
"""Settings that change how a run is logged or how fast it computes, never its numbers."""
CHECKPOINT_SCHEDULE_SETTINGS = marked(CheckpointSchedule)
"""Settings that decide which checkpoints a run keeps: in stage keys, out of the resume check."""


# --- the config as keys see it -----------------------------------------------------------------


def result_relevant(
    config: BaseModel | Mapping[str, Any], *, ignore_checkpoint_schedule: bool = False
) -> dict[str, Any]:
    """``config`` as a JSON tree of what changes results: without settings marked
    :data:`~itransfer.effect.NoEffect` (and, for a resumed run,
    :data:`~itransfer.effect.CheckpointSchedule`), without settings at the value they had
    before they existed (:class:`~itransfer.effect.AddedLater`), and without those whose
    :class:`~itransfer.effect.KeyedOnlyWhen` condition fails. A mapping is taken as an
    already dumped config, such as the one a checkpoint saved; it is left as it was."""
    root = (config.model_dump(mode="json") if isinstance(config, BaseModel)
            else copy.deepcopy(dict(config)))
    tree = copy.deepcopy(root)
    _prune(tree, ExperimentConfig, root, resuming=ignore_checkpoint_schedule)
    return tree


def _prune(
    node: dict[str, Any], model: type[BaseModel], root: Mapping[str, Any], *, resuming: bool
) -> None:
    for name, field in model.model_fields.items():
        if name not in node:
            continue
        if _left_out(field, node[name], root, resuming=resuming):
            del node[name]
            continue
        nested = _model_of(field, node[name])
        if nested is not None:
            _prune(node[name], nested, root, resuming=resuming)


def _left_out(field: FieldInfo, value: Any, root: Mapping[str, Any], *, resuming: bool) -> bool:
    effect = marker(field, Effect)
    if effect is not None and not (effect.in_resume_check if resuming else effect.in_stage_keys):
        return True
    only_when = marker(field, KeyedOnlyWhen)
    if only_when is not None and not only_when.condition(root):
        return True
    return omitted_from_older_keys(field, value)


def _model_of(field: FieldInfo, value: Any) -> type[BaseModel] | None:
    """The config class of a dumped section; a union's member is the one ``name`` chooses."""
    if not isinstance(value, dict):
        return None
    members = models_in(field.annotation)
    if len(members) == 1:
        return members[0]
    chosen = [member for member in members
              if member.model_fields.get("name") is not None
              and member.model_fields["name"].default == value.get("name")]
    return chosen[0] if len(chosen) == 1 else None


# --- the keys ----------------------------------------------------------------------------------


def training_key(config: ExperimentConfig) -> str:
    """The training stage of ``config``. The checkpoint schedule stays in (it decides which
    trajectory checkpoints exist)."""
    relevant = result_relevant(config)
    return config_hash({section: relevant[section] for section in TRAINING_SECTIONS})


def plan_key(plan: EvalPlan) -> list[Any]:
    """What an evaluation stage measures, for its key. Only stages with LoRA cells name the
    k-shot draw scheme: when the draws change those are recomputed rather than reused, while
    ICL and seen-task stages stay cached."""
    key: list[Any] = [plan.icl, plan.seen, sorted(plan.shots), sorted(plan.contexts)]
    return [*key, FEW_SHOT_DRAWS] if plan.shots else key


def evaluation_key(config: ExperimentConfig, checkpoint: str, plan: list[Any]) -> str:
    """The evaluation stage of ``checkpoint`` (a model, or a training stage's key@step) that
    measures ``plan`` (a :func:`plan_key`)."""
    from itransfer.models.loading import model_type_of
    from itransfer.models.lora_targets import targets_for_key  # torch: only when keys are made

    relevant = result_relevant(config)
    # `auto` is keyed as the modules it means for this model (q, v on T5: the keys of the old
    # default), so spelling the list out shares the stage.
    lora = relevant["eval"]["lora"]
    lora["target_modules"] = targets_for_key(
        lora["target_modules"],
        model_type_of(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code),
    )
    relevant["model"].pop(NAMED_BY_THE_CHECKPOINT)
    return config_hash({"checkpoint": checkpoint, "plan": plan,
                        **{section: relevant[section] for section in EVALUATION_SECTIONS}})


def measurement_hash(
    config: ExperimentConfig, checkpoint: str, method: str, **inputs: Any
) -> str:
    """The ``config_hash`` of the rows ``method`` measures on ``checkpoint`` (a label): the
    model and data sections, the eval settings the method reads (:data:`MEASURED_WITH`), and
    ``inputs`` (the context; for LoRA cells the resolved ``lora`` settings, with the draw
    scheme added here)."""
    relevant = result_relevant(config)
    # Read from the keyed tree, so a setting its markers leave out (added later, at its old
    # value) leaves the hash as it was before the setting existed.
    measured = {hashed: relevant["eval"][setting]
                for hashed, setting in MEASURED_WITH[method].items()
                if setting in relevant["eval"]}
    if method == "finetune":
        measured["draws"] = FEW_SHOT_DRAWS
    return config_hash({**{section: relevant[section] for section in MEASUREMENT_SECTIONS},
                        "checkpoint": checkpoint, "method": method, **measured, **inputs})


def resume_identity(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """What a run resumed from a checkpoint must share with the run that wrote it: its
    results, but not its checkpoint schedule (a resumed run may keep other checkpoints)."""
    return result_relevant(config, ignore_checkpoint_schedule=True)


def resume_differences(saved: Mapping[str, Any], config: ExperimentConfig) -> list[str]:
    """The settings on which a checkpoint's saved config and ``config`` would train
    differently (empty: it may be resumed)."""
    before = resume_identity(upgrade_saved_config(saved))
    now = resume_identity(config)
    differing = []
    for section in TRAINING_SECTIONS:
        if section == "train":  # named setting by setting: the usual difference is one of them
            saved_train = before.get("train", {})
            differing += [f"train.{key}" for key, value in now["train"].items()
                          if saved_train.get(key) != value]
        elif before.get(section) != now[section]:
            differing.append(section)
    return differing


def tokenized_cache_key(
    encoder: Mapping[str, Any], tasks: Sequence[tuple[str, str]], splits: SplitConfig,
    seed: int, *, code: str, version: int,
) -> str:
    """The tokenized training set of ``tasks`` ((name, file hash) pairs) as ``encoder`` (an
    :func:`itransfer.encoding.cache.encoder_identity`) renders them, split by ``seed``;
    ``code`` fingerprints the modules that render examples, ``version`` the cache's format."""
    content = {
        "format": version,
        "code": code,
        "encoder": dict(encoder),
        "split_seed": seed,
        **{setting: getattr(splits, setting) for setting in TOKENIZED_SPLIT_SETTINGS},
        "tasks": [list(task) for task in tasks],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]

