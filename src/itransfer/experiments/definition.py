"""Experiment specs: a base config, named model variants, and the paper sections to analyse.

An experiment YAML (the shipped ``src/itransfer/configs/paper/*.yaml`` and ``quickstart.yaml``,
run by name as ``paper/sec3_1_transfer``; see :mod:`itransfer.config.packaged`)::

    name: sec3_1_transfer
    title: "§3.1 Instruction tuning harms transfer"
    base: {model: {...}, data: {...}, train: {...}, eval: {...}}   # an ExperimentConfig
    variants:                                                       # label → overrides of base
      it-proportional: {}
      it-uniform: {train: {sampler: {name: uniform}}}
    sections:                                                       # which analyses to run
      transfer: {pretrained: pretrained, instruction_tuned: it-proportional}
    scales:                                                         # named override sets
      tiny: {base: {...}, variants: {...}, sections: {...}}

``pretrained`` is always available: the base model before instruction tuning. Each key of
``sections`` is a registered section class (:mod:`itransfer.analysis.sections`), which
validates its settings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from itransfer.analysis.registry import Sections
from itransfer.config.schema import (
    ExperimentConfig,
    StrictModel,
    apply_overrides,
    read_yaml,
    validate_tree,
)
from itransfer.errors import ConfigError
from itransfer.runs.eval_plan import PRETRAINED


class ExperimentSpec(StrictModel):
    name: str
    title: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sections: Sections = Field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sections_name_known_models(self) -> ExperimentSpec:
        known = {PRETRAINED, *self.variants}
        for key, section in self.sections.items():
            missing = [label for label in section.model_labels() if label not in known]
            if missing:
                raise ValueError(
                    f"sections.{key} names {missing}, which are not variants "
                    f"(known: {sorted(known)})"
                )
        return self


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "sampler":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Experiment:
    """A validated spec with every variant's resolved :class:`ExperimentConfig`."""

    spec: ExperimentSpec
    source: str
    base: ExperimentConfig
    variants: dict[str, ExperimentConfig]

    @property
    def name(self) -> str:
        return self.spec.name


def load_experiment(
    path: Path, *, scale: str | None = None, overrides: list[str] | None = None
) -> Experiment:
    """Read an experiment YAML, apply a named scale and ``--set`` overrides (to ``base``)."""
    raw = read_yaml(path)
    source = str(path)
    spec = validate_tree(raw, source, model=ExperimentSpec)
    if scale is not None:
        if scale not in spec.scales:
            known = sorted(spec.scales) or "none"
            raise ConfigError(f"{path}: no scale '{scale}' (known: {known})")
        scaled = spec.scales[scale] or {}
        unknown = set(scaled) - {"base", "variants", "sections"}
        if unknown:
            raise ConfigError(
                f"{path}: scales.{scale} may set base, variants and sections, not {unknown}")
        # Merged on the YAML tree and validated again, so a scale's section settings (e.g. a
        # phase split that matches its shorter training) get the same checks as the spec's.
        raw = {
            **raw,
            "base": _merge(raw.get("base") or {}, scaled.get("base") or {}),
            "variants": {
                label: _merge(values or {}, (scaled.get("variants") or {}).get(label) or {})
                for label, values in (raw.get("variants") or {}).items()
            },
            "sections": _merge(raw.get("sections") or {}, scaled.get("sections") or {}),
        }
        source += f" (scale {scale})"
        spec = validate_tree(raw, source, model=ExperimentSpec)
    base_tree = copy.deepcopy(spec.base)
    source += apply_overrides(base_tree, overrides or [])
    base = validate_tree(base_tree, f"{source}: base")
    variants = {
        label: validate_tree(_merge(base_tree, values), f"{source}: variants.{label}")
        for label, values in spec.variants.items()
    }
    return Experiment(spec=spec, source=source, base=base, variants=variants)
