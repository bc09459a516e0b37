"""The identity keys keep their values: run folders, stage stores, results tables and tokenized
caches written by earlier versions are found, and resumed, by later ones.

The expected hex strings were computed by the code that listed identity fields in six places,
before :mod:`itransfer.runs.identity` derived them from the config's markers. A change here silently
orphans every user's caches and blocks ``--resume``: if a key must change, say so in the
changelog, do not just update the string.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from itransfer.config.packaged import find_config
from itransfer.config.schema import ExperimentConfig, load_config
from itransfer.data.contexts import build_context
from itransfer.encoding import cache as tokenized
from itransfer.eval.session import EvalSession
from itransfer.experiments.definition import load_experiment
from itransfer.runs.eval_plan import EvalPlan
from itransfer.runs.identity import (
    TRAINING_SECTIONS,
    evaluation_key,
    plan_key,
    resume_identity,
    training_key,
)

PLANS = {
    "cells": EvalPlan(icl=True, seen=True, shots=frozenset({0, 5}),
                      contexts=frozenset({"none", "exemplars"})),
    "icl": EvalPlan(icl=True),
}
# Every setting off its default (and the sampler parameters that were added later, at values
# other than the legacy one), so that each of them shows in the keys it belongs to.
NON_DEFAULT = [
    "name=nondefault", "seed=7",
    "data.selection.min_eval_instances=50", "data.splits.seen_validation_fraction=0.2",
    "data.splits.few_shot_pool_size=30", "data.splits.max_train_instances_per_task=12",
    "data.context.name=definition", "data.context.num_exemplars=2",
    "data.context.max_input_tokens=64",
    "model.max_source_length=96", "model.max_target_length=16", "model.chat_template=true",
    "train.steps=30", "train.budget=steps", "train.batch_size=4", "train.learning_rate=1e-3",
    "train.warmup_steps=3", "train.max_grad_norm=null", "train.weight_decay=0.01",
    "train.sampler={name: reverse_annealing, max_temperature: 50, schedule: log_linear}",
    "train.mixing.every=3", "train.checkpoint_every=10", "train.keep_checkpoints=2",
    "train.save_every_minutes=5", "train.log_every=2", "train.tensorboard=false",
    "eval.tasks=[task1, task2]", "eval.max_tasks=2", "eval.shots=[0, 5, 10]",
    "eval.seeds=[0, 1]", "eval.engine=peft", "eval.lora.r=4",
    "eval.lora.target_modules=[q, k, v]", "eval.batch_size=8", "eval.max_new_tokens=8",
    "eval.generate=false", "eval.seen_max_instances=3", "eval.save_adapters=true",
]


def _configs() -> dict[str, ExperimentConfig]:
    quickstart = load_experiment(find_config("quickstart"))
    sampling = load_experiment(find_config("paper/sec4_sampling"), scale="tiny")
    full = load_experiment(find_config("paper/sec3_2_data_limits"))
    configs = {"defaults": load_config(None, []), "non_default": load_config(None, NON_DEFAULT)}
    configs.update({f"quickstart/{label}": config
                    for label, config in quickstart.variants.items()})
    configs.update({f"sec4-tiny/{label}": config for label, config in sampling.variants.items()})
    configs.update({f"sec3_2/{label}": config for label, config in full.variants.items()})
    return configs


def _settings_hashes(config: ExperimentConfig) -> list[str]:
    session: Any = SimpleNamespace(config=config, model_label="runs/x/checkpoints/step-0000006")
    lora = config.eval.lora.model_copy(update={"target_modules": ["q", "v"]})
    return [
        EvalSession.measurement_hash(session, "icl", context="exemplars"),
        EvalSession.measurement_hash(session, "seen", context=config.data.context.name),
        EvalSession.measurement_hash(session, "finetune", lora=lora.model_dump(mode="json")),
    ]


def _stage_keys(label: str, config: ExperimentConfig) -> list[str]:
    train_key = training_key(config)
    keys = [train_key]
    if not label.startswith("sec3_2/"):  # a hub model: its type is not known offline
        keys += [evaluation_key(config, f"{train_key}@6", plan_key(plan))
                 for plan in PLANS.values()]
        keys += _settings_hashes(config)
    return keys


class _StubTokenizer:
    """A tokenizer whose fingerprint does not depend on the installed `tokenizers`."""

    special_tokens_map: ClassVar[dict[str, str]] = {"eos_token": "</s>", "pad_token": "<pad>"}

    def get_vocab(self) -> dict[str, int]:
        return {"</s>": 1, "<pad>": 0, "▁a": 2, "▁b": 3}


def _tokenized_key(config: ExperimentConfig, monkeypatch: pytest.MonkeyPatch) -> str:
    # The code fingerprint changes with every edit of the rendering modules, by design.
    monkeypatch.setattr(tokenized, "_code_fingerprint", lambda: "code")
    encoder: Any = SimpleNamespace(
        tokenizer=_StubTokenizer(), architecture="seq2seq",
        context=build_context(config.data.context.name, config.data.context.num_exemplars),
        max_source_length=config.model.max_source_length,
        max_target_length=config.model.max_target_length,
        chat_template=config.model.chat_template,
    )
    entries = {name: SimpleNamespace(metadata=SimpleNamespace(name=name), sha256=f"sha-{name}")
               for name in ("task001_a", "task002_b")}
    index: Any = SimpleNamespace(get=entries.__getitem__)
    return tokenized.cache_key(encoder, index, list(entries), config.data.splits, config.seed)


def _resume_tree_hash(config: ExperimentConfig) -> str:
    # What the resume check compares: the training sections, less the checkpoint schedule.
    tree = resume_identity(config)
    text = json.dumps({section: tree[section] for section in TRAINING_SECTIONS},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def current_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    keys = {}
    for label, config in _configs().items():
        keys[label] = [*_stage_keys(label, config), _tokenized_key(config, monkeypatch),
                       _resume_tree_hash(config)]
    return keys


EXPECTED: dict[str, list[str]] = {
    "defaults": [
        "c7bd61cb9421", "e7c433134dbf", "147636abc734", "a9c96f83f394", "c6761bbe9da4",
        "1acb789edac4", "9082876afeab09cc12bf8d51", "5036e6402b29",
    ],
    "non_default": [
        "14e44f78d1e9", "a346aaf9883f", "86cc93ed6e60", "4a44b7cbd884", "7325e848dbc3",
        "af780ba4a33f", "7a58398c575208862a140328", "3bf43dd13b2d",
    ],
    "quickstart/it-proportional": [
        "bd56c59e97c9", "e44c0273711f", "76f5bb733f3e", "5f867a11946b", "f4e8ea76f1a3",
        "5a6f37b5be2d", "f3eb4a886e74f109626e50f2", "8a115c58527f",
    ],
    "quickstart/it-uniform": [
        "8cc1f8f6f69c", "da19ec5ae047", "c73e7d6ef024", "5f867a11946b", "f4e8ea76f1a3",
        "5a6f37b5be2d", "f3eb4a886e74f109626e50f2", "4bc665b79aee",
    ],
    "quickstart/it-mix3": [
        "38de4b3e6da5", "e8087e8d7e06", "355febf6c17a", "5f867a11946b", "f4e8ea76f1a3",
        "5a6f37b5be2d", "f3eb4a886e74f109626e50f2", "6593d1dded72",
    ],
    "quickstart/it-limit10": [
        "0254babee393", "53a3061fb2a9", "c70c2387e9ec", "63e490303909", "a2b988ec79f5",
        "40817a121c92", "f3eb4a886e74f109626e50f2", "47ae5c756d34",
    ],
    "sec4-tiny/it-proportional": [
        "caf1fa9a0564", "bdb67ecfe8a6", "4f5663c10155", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "315292dab884",
    ],
    "sec4-tiny/it-uniform": [
        "b8f9b181212d", "d77eb0abaa80", "4f7657714777", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "d75e24ef77bc",
    ],
    "sec4-tiny/it-ra100": [
        "6d5a05137c59", "3394237c64f0", "c41c872eb8a7", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "f4af4bdc28e6",
    ],
    "sec4-tiny/it-ra1000": [
        "6fbb84ab3a64", "a516b3be6392", "a0ca9b258faf", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "619d65eb2820",
    ],
    "sec4-tiny/it-ra10000": [
        "33c2155e9aad", "db04c399ac9c", "576c68081a2e", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "25b158c066db",
    ],
    "sec4-tiny/it-ra100000": [
        "e0c1b9a0f1e8", "3509f9d393c7", "f4e2e47ee460", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "e0a155c8958c",
    ],
    # The schedule readings of §4's sweep (added with them; no earlier run had these keys).
    "sec4-tiny/it-ra1000-inv": [
        "9b4c22356106", "e058d119282d", "9053aedb90a8", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "8b7a05987350",
    ],
    "sec4-tiny/it-ra1000-log": [
        "b98b42666809", "37a0eb7703e8", "b0323f01fcb9", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "f1a6bf238283",
    ],
    "sec4-tiny/it-dwa": [
        "bf183e71473b", "1d50298cccd8", "97d2f9f3037b", "80a06a4686fc", "f9e3a34ad1ea",
        "f04d851e319b", "731db99f5d8d8c2c9f5deddc", "e770d325a5f7",
    ],
    "sec3_2/it-limit10": [
        "d1504e987e42", "f652ed557a55dcc346e08753", "7448cfb5f2d7",
    ],
    "sec3_2/it-limit50": [
        "d94c52a499ad", "f652ed557a55dcc346e08753", "288c5430b65a",
    ],
    "sec3_2/it-limit100": [
        "85148c794621", "f652ed557a55dcc346e08753", "5eff92dfa7e7",
    ],
    "sec3_2/it-limit500": [
        "9b90553b4489", "f652ed557a55dcc346e08753", "c1a977e0b03a",
    ],
    "sec3_2/it-limit1000": [
        "ab25c96e7d13", "f652ed557a55dcc346e08753", "f1d422fac3d6",
    ],
    "sec3_2/it-limit5000": [
        "bed8b042a351", "f652ed557a55dcc346e08753", "c461b6b431ce",
    ],
}


def test_the_identity_keys_keep_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_keys(monkeypatch) == EXPECTED


if __name__ == "__main__":  # prints EXPECTED for review when a key is meant to change
    patcher = pytest.MonkeyPatch()
    print(json.dumps(current_keys(patcher), indent=1))
    patcher.undo()
