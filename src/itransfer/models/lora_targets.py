"""Which modules a few-shot LoRA adapts: ``eval.lora.target_modules``, ``auto`` resolved.

``auto`` is the paper's choice for T5 (``q`` and ``v``, §3.1 / Appendix B) and PEFT's own
per-architecture default for any other model (PEFT's
``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``: ``q_proj``, ``v_proj`` for Llama,
``query_key_value`` for GPT-NeoX, …), so that a decoder-only model needs no override. Both
transfer engines and the results' keys use :func:`resolve_target_modules`, so ``auto`` and the
list it stands for are the same setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from itransfer.errors import ConfigError

AUTO = "auto"
FIELD = "eval.lora.target_modules"
# §3.1 / Appendix B: the paper's LoRA adapts the query and value projections of T5 LM-adapt.
PAPER_T5_TARGETS = ("q", "v")
_T5_FAMILY = frozenset({"t5", "mt5", "umt5"})


def default_targets(model_type: str | None) -> list[str] | str | None:
    """What ``auto`` means for a model type: a list of names, PEFT's regex, or None (no
    default known)."""
    if model_type is None:
        return None
    if model_type in _T5_FAMILY:
        return list(PAPER_T5_TARGETS)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    found = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    return found if isinstance(found, str) or found is None else list(found)


def targets_for_key(setting: Sequence[str] | str, model_type: str | None) -> list[str] | str:
    """The setting as results and stage keys hash it: ``auto`` replaced by what it resolves
    to for ``model_type`` (kept as ``auto`` when the type is unknown or has no default)."""
    if setting != AUTO:
        return list(setting)
    resolved = default_targets(model_type)
    return AUTO if resolved is None else resolved


def is_adaptable(module: nn.Module) -> bool:
    """A layer both engines can put a LoRA on: ``nn.Linear`` or GPT-2's ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D)


def matches(name: str, targets: Sequence[str]) -> bool:
    """PEFT's rule for a list of ``target_modules``: the full name, or its last components."""
    return any(name == target or name.endswith("." + target) for target in targets)


def linear_module_names(model: nn.Module) -> list[str]:
    """The short names of the model's adaptable layers, each once, in model order."""
    names = [name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if name and is_adaptable(module)]
    return list(dict.fromkeys(names))


def resolve_target_modules(setting: Sequence[str] | str, model: nn.Module) -> list[str]:
    """The module names a LoRA on ``model`` adapts, for ``setting`` (a list, or ``auto``).

    Raises a one-line :class:`ConfigError` naming the field and the model's linear modules
    when ``auto`` has no default for this architecture or the list matches no module.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if setting == AUTO:
        resolved = default_targets(model_type)
        if resolved is None:
            raise ConfigError(
                f"{FIELD}: auto has no default for model type {model_type!r}; set a list of "
                f"its linear modules: {', '.join(linear_module_names(model))}"
            )
        if isinstance(resolved, str):  # PEFT keeps a regex for a few multimodal models
            pattern = re.compile(resolved)
            resolved = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    else:
        resolved = list(setting)
    if not any(matches(name, resolved) for name, _ in model.named_modules() if name):
        raise ConfigError(
            f"{FIELD}: {resolved} matches no module of {type(model).__name__}; its linear "
            f"modules are {', '.join(linear_module_names(model))}"
        )
    return resolved
