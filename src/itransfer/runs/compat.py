"""Files and keys written by earlier versions, read as this version writes them.

Everything that upgrades an old file on read lives here, so that what "old" means is said once:

* configs saved in checkpoints before sampler configs were typed (only the keys the user gave);
* settings added after runs were keyed (:class:`~itransfer.effect.AddedLater`): at the value
  every earlier run had, identity keys leave them out, as those runs' keys did;
* results tables written before a column existed;
* run manifests before ``version`` and the models' step budget existed.

This module reads plain trees (dumped configs, JSON mappings), so the classes that validate
those files can call it without import cycles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from itransfer.effect import AddedLater, marker

# Results columns added after the first tables were written: a row or a file without one reads
# as null (``task_group``: tables before it read as ``unseen`` in the analysis).
LATER_RESULT_COLUMNS = frozenset({"task_group"})


def omitted_from_older_keys(field: FieldInfo, value: Any) -> bool:
    """Whether ``value`` of ``field`` is what runs keyed before the setting existed had, so
    that keys leave it out (as theirs did, without the setting)."""
    added = marker(field, AddedLater)
    return added is not None and added.omitted(value)


def upgrade_saved_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A config a checkpoint saved, as this version dumps it: checkpoints written before
    sampler configs were typed saved only the sampler keys the user gave, so its defaults are
    filled in (the caller's mapping is left as it was)."""
    tree = dict(saved)
    if isinstance(tree.get("train"), dict):
        tree["train"] = {**tree["train"], "sampler": _with_sampler_defaults(
            tree["train"].get("sampler"))}
    return tree


def _with_sampler_defaults(saved_sampler: Any) -> Any:
    from itransfer.config.schema import TrainConfig  # config imports the markers this module reads

    if not isinstance(saved_sampler, dict):
        return saved_sampler
    try:
        typed = TrainConfig.model_validate({"sampler": saved_sampler}).sampler
    except ValidationError:
        return saved_sampler  # then reported as a differing train.sampler
    return typed.model_dump(mode="json")


def upgrade_result_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A results row with every :data:`LATER_RESULT_COLUMNS` it lacks as null."""
    return {**dict.fromkeys(LATER_RESULT_COLUMNS), **row}


def manifest_version(data: Any, newest: int) -> Any:
    """Check a manifest's format version before its fields (a newer format gets one line, not a
    list of field errors); manifests before the field existed are version 1, same shape."""
    version = data.get("version", 1) if isinstance(data, Mapping) else 1
    if not isinstance(version, int) or not 1 <= version <= newest:
        raise ValueError(
            f"manifest format version {version!r}; this itransfer reads versions 1 to "
            f"{newest} (re-run `itransfer run`, or use the itransfer that wrote it)"
        )
    return data


def upgrade_model_info(data: Any) -> Any:
    """A manifest's model entry: ``final_step`` defaults to its last trajectory checkpoint (a
    manifest's models before the field existed, and a null in any); ``sampler_spec`` (before
    version 4) is read as ``sampler_config``."""
    if isinstance(data, Mapping) and "sampler_spec" in data:
        data = {"sampler_config": data["sampler_spec"],
                **{key: value for key, value in data.items() if key != "sampler_spec"}}
    if isinstance(data, Mapping) and data.get("final_step") is None:
        steps = [int(step) for step in data.get("trajectory_steps") or ()]
        return {**data, "final_step": max(steps, default=0)}
    return data
