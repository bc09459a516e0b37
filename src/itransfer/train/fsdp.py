"""What a model needs before accelerate's FSDP2 shards it (``distributed_type: FSDP``,
``fsdp_version: 2`` in the accelerate config; on CPU processes :mod:`itransfer.runtime.launch` makes
accelerate take that path)."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator


def share_tied_embeddings(model: torch.nn.Module) -> list[str]:
    """Make every embedding module that holds the input embeddings' weight that very module;
    returns the names replaced.

    transformers 5's T5 ties ``encoder.embed_tokens`` and ``decoder.embed_tokens`` to ``shared``
    by parameter: three modules, one weight. accelerate's FSDP2 puts the input embeddings (with
    a tied ``lm_head``) in a group of their own, and torch then refuses the root group, which
    still reaches the weight through the other two modules ("Parameter 'shared.weight' is shared
    with a parameter already managed by another FSDP group"). One module under three names is in
    one group only. The forward is unchanged (the same weight is looked up), and so are the
    parameters and the state dict's names.
    """
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if get_embeddings is not None else None
    weight = getattr(embeddings, "weight", None)
    if embeddings is None or weight is None:
        return []
    holders = [
        name for name, module in model.named_modules(remove_duplicate=False)
        if module is not embeddings and isinstance(module, type(embeddings))
        and getattr(module, "weight", None) is weight
    ]
    for name in holders:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, embeddings)
    return holders


def tie_gathered_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Point every name of a tied parameter at one gathered tensor, in place.

    FSDP2 gathers each name of a tied weight into a tensor of its own, and ``save_pretrained``
    only drops tied copies that share storage: the trajectory checkpoint would hold the T5
    embeddings four times (``shared``, both ``embed_tokens``, ``lm_head``). Tied, it holds the
    names a DDP or one-process run writes.
    """
    first_name: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        source = first_name.setdefault(id(parameter), name)
        if source != name and name in state_dict and source in state_dict:
            state_dict[name] = state_dict[source]


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Any]:
    """The whole model's weights, on the main process at least (a collective under FSDP: every
    process calls it), tied names sharing one tensor."""
    state_dict = accelerator.get_state_dict(model)
    tie_gathered_weights(accelerator.unwrap_model(model), state_dict)
    return state_dict
