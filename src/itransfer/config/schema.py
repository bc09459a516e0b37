"""Typed experiment configs: YAML in, ``--set key=value`` overrides, errors that name the field.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error rather
than a silently ignored setting. :func:`load_config` reports each problem as
``<file>: <dotted.key>: <what is wrong> (got <value>)``.

A setting that changes no result, or was added after runs were keyed, says so where it is
declared (:mod:`itransfer.effect`); :mod:`itransfer.runs.identity` derives every
identity key from those marks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from itransfer.config import paper_constants as paper
from itransfer.effect import AddedLater, CheckpointSchedule, KeyedOnlyWhen, NoEffect
from itransfer.errors import ConfigError
from itransfer.sampling import SAMPLERS, ProportionalConfig, SamplerConfig, sampler_config_union

if TYPE_CHECKING:
    SamplerSpec = SamplerConfig
else:
    # Built from the registry: one member per registered sampler, chosen by `name`.
    SamplerSpec = sampler_config_union()


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SelectionConfig(StrictModel):
    """Which tasks are seen (training), unseen (transfer) or held out (§2.4, Appendix A)."""

    languages: list[str] = Field(default_factory=lambda: list(paper.LANGUAGES))
    seen_categories: list[str] = Field(default_factory=lambda: list(paper.SEEN_CATEGORIES))
    unseen_categories: list[str] = Field(default_factory=lambda: list(paper.UNSEEN_CATEGORIES))
    evaluation_domains: list[str] = Field(default_factory=lambda: list(paper.EVALUATION_DOMAINS))
    adversarial_sources: list[str] = Field(
        default_factory=lambda: list(paper.ADVERSARIAL_SOURCES)
    )
    synthetic_sources: list[str] = Field(default_factory=lambda: list(paper.SYNTHETIC_SOURCES))
    min_eval_instances: int = Field(default=paper.MIN_EVAL_INSTANCES, ge=1)

    @field_validator("unseen_categories")
    @classmethod
    def _disjoint(cls, unseen: list[str], info: Any) -> list[str]:
        overlap = set(unseen) & set(info.data.get("seen_categories", []))
        if overlap:
            raise ValueError(f"categories both seen and unseen: {sorted(overlap)}")
        return unseen


class SplitConfig(StrictModel):
    """Per-task instance splits (§2.4) and the per-task data limit (§3.2)."""

    seen_validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seen_test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    unseen_test_size: int = Field(default=100, ge=1)
    few_shot_pool_size: int = Field(default=40, ge=0)
    max_train_instances_per_task: int | None = Field(default=None, ge=1)

    @field_validator("seen_test_fraction")
    @classmethod
    def _fractions_leave_training_data(cls, test: float, info: Any) -> float:
        if test + info.data.get("seen_validation_fraction", 0.0) >= 1.0:
            raise ValueError("validation + test fractions must leave some training data (< 1)")
        return test


# The task contexts r_k a config may name: Figure 5's, each a class that itransfer.data.contexts
# registers under its name (a context registered there later adds its own).
CONTEXT_NAMES: set[str] = {"none", "task_id", "definition", "exemplars", "definition+exemplars"}


class ContextConfig(StrictModel):
    """The task context r_k placed before each instance input (Figure 5)."""

    name: str = "exemplars"
    num_exemplars: int = Field(default=3, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=8)

    @field_validator("name")
    @classmethod
    def _known_context(cls, name: str) -> str:
        if name not in CONTEXT_NAMES:
            raise ValueError(
                f"unknown context '{name}'; known: {', '.join(sorted(CONTEXT_NAMES))}")
        return name


class DataConfig(StrictModel):
    sni_dir: Path | None = None  # None: the SNI slice bundled with the package
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)


class ModelConfig(StrictModel):
    """Which model to instruction-tune: a hub name, a local directory or the bundled default."""

    name_or_path: str = "itransfer:tiny-t5"
    architecture: Literal["auto", "seq2seq", "causal"] = "auto"
    trust_remote_code: bool = False
    max_source_length: int = Field(default=512, ge=8)
    max_target_length: int = Field(default=128, ge=1)
    # Decoder-only models: wrap source and target in the tokenizer's chat template (user turn,
    # assistant turn); off, they are plain text (itransfer.encoding.examples), as every run was
    # before the setting existed.
    chat_template: Annotated[bool, AddedLater(False)] = False


class MixingConfig(StrictModel):
    """Unsupervised-data mixing (§5.2): one step on raw text after every ``every`` IT steps."""

    every: int | None = Field(default=None, ge=1)  # the paper uses 3; None turns mixing off
    source: str = "bundled"  # "bundled", a .txt file or folder, or "hf:<dataset>[:<config>]"
    max_length: int = Field(default=256, ge=8)  # tokens of text per unsupervised example

    @field_validator("every", mode="before")
    @classmethod
    def _zero_is_not_off(cls, every: Any) -> Any:
        if every == 0:
            raise ValueError("must be >= 1 (one unsupervised step every N steps); use null for off")
        return every


class MonitorConfig(StrictModel):
    """Few-shot transfer and ICL measured on probe tasks while training runs (``train.monitor``).

    Every setting is marked :data:`~itransfer.effect.NoEffect`: a probe runs on the current
    weights without touching the training run (its RNGs are forked, its adapters removed), so
    turning the monitor on changes no stage key and may resume a run trained without it.
    """

    # A probe after every `every_steps` steps and/or once `every_minutes` have passed since the
    # last one (either fires; None switches one off), and once at step 0 of a fresh run. A
    # probe at the defaults costs about 8 training steps (the bundled model's, and T5-large's
    # shape), so 160 keeps a long run's cost near 5 % (bench/monitor_overhead.py).
    every_steps: Annotated[int | None, NoEffect] = Field(default=160, ge=1)
    every_minutes: Annotated[float | None, NoEffect] = Field(default=None, gt=0)
    # None: `tasks` tasks drawn by the run's seed from the evaluation groups that the run's
    # evaluation (eval.task_groups, eval.tasks) does not use; or these names, which must be
    # neither seen nor evaluated.
    probe_tasks: Annotated[list[str] | None, NoEffect] = None
    tasks: Annotated[int, NoEffect] = Field(default=4, ge=2)  # Spearman needs two
    test_items: Annotated[int, NoEffect] = Field(default=10, ge=1)  # per probe task
    # k = 5: the k of the paper's transfer-ICL correlation (Figure 1, right) and of the bundled
    # sections, so the report sets the probe beside the grid at the same k.
    shots: Annotated[list[int], NoEffect] = Field(default_factory=lambda: [5], min_length=1)
    context: Annotated[str, NoEffect] = "none"  # the LoRAs' fine-tuning context
    # eval.lora's settings, but this many epochs (k <= 32 at batch 32: one LoRA step an epoch).
    lora_epochs: Annotated[int, NoEffect] = Field(default=5, ge=1)
    # Log once when the transfer loss rises above its step-0 value by more than this, and once
    # when it comes back within it.
    forgetting_margin: Annotated[float, NoEffect] = Field(default=0.05, ge=0.0)

    @field_validator("context")
    @classmethod
    def _known_probe_context(cls, name: str) -> str:
        return ContextConfig._known_context(name)

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, shots: list[int]) -> list[int]:
        if any(k < 1 for k in shots):
            raise ValueError("probe shot counts must be >= 1 (k = 0 trains no adapter)")
        return sorted(set(shots))

    @field_validator("every_minutes")
    @classmethod
    def _some_schedule(cls, minutes: float | None, info: Any) -> float | None:
        if minutes is None and info.data.get("every_steps") is None:
            raise ValueError("every_steps and every_minutes are both off; set one of them")
        return minutes


def budget_sets_steps(train: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether ``train.budget`` decides the step count of a run (dumped ``train``/``data``):
    only without an explicit ``train.steps`` and with a per-task data limit; otherwise the
    two budgets count the same examples."""
    splits = data.get("splits") if isinstance(data.get("splits"), Mapping) else {}
    return train.get("steps") is None and splits.get("max_train_instances_per_task") is not None


def _budget_sets_steps_in(tree: Mapping[str, Any]) -> bool:
    train, data = tree.get("train"), tree.get("data")
    return isinstance(train, Mapping) and budget_sets_steps(
        train, data if isinstance(data, Mapping) else {})


class TrainConfig(StrictModel):
    """Instruction tuning (§2.4, Appendix B): AdamW, 500 warm-up steps to 5e-4, batch 16."""

    steps: int | None = Field(default=None, ge=1)  # instruction-tuning steps; None: the budget's
    epochs: float = Field(default=3.0, gt=0)
    # What `epochs` counts when `steps` is None (see `itransfer.train.recipe.planned_steps`):
    # "epochs" passes over the run's own training data (after the per-task data limit), or
    # "steps": as many steps as `epochs` passes over the same tasks without the limit would
    # take (the unlimited model's step count), drawn from the limited data. §3.2 does not say
    # which one the paper's limited models had. "epochs" is what every run did before the
    # setting existed, and a run it does not change is one training stage under either value.
    budget: Annotated[
        Literal["epochs", "steps"], AddedLater("epochs"), KeyedOnlyWhen(_budget_sets_steps_in)
    ] = "epochs"
    batch_size: int = Field(default=16, ge=1)  # global batch, across processes and accumulation
    gradient_accumulation: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=500, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    weight_decay: float = Field(default=0.0, ge=0.0)  # AdamW's; the paper states none
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sampler: SamplerSpec = Field(default_factory=ProportionalConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)
    # 0: only the final checkpoint
    checkpoint_every: Annotated[int, CheckpointSchedule] = Field(default=0, ge=0)
    # None keeps the whole trajectory
    keep_checkpoints: Annotated[int | None, CheckpointSchedule] = Field(default=None, ge=1)
    # The trajectory keeps weights only; what resuming needs (optimizer, data positions, RNGs)
    # goes into a rolling resumable checkpoint, written when either of these fires (and when a
    # signal stops the run). None switches one off. Resuming is exact, so neither moves a
    # number.
    save_every_minutes: Annotated[float | None, NoEffect] = Field(default=30, gt=0)
    save_every_steps: Annotated[int | None, NoEffect] = Field(default=None, ge=1)
    log_every: Annotated[int, NoEffect] = Field(default=10, ge=1)
    length_window_batches: int = Field(default=16, ge=1)
    tensorboard: Annotated[bool, NoEffect] = True
    # log to Weights & Biases too (needs `wandb`)
    wandb_project: Annotated[str | None, NoEffect] = None
    # Probe transfer and ICL during training (itransfer.eval.monitor); None: off.
    monitor: Annotated[MonitorConfig | None, NoEffect] = None


EVALUATION_TASK_GROUPS = ("unseen", "unseen_synthetic", "heldout_domain", "heldout_adversarial")
"""Selection groups of evaluation tasks: split into test + few-shot pool, never trained on."""

EVAL_TASK_GROUP_CHOICES = (*EVALUATION_TASK_GROUPS, "heldout_generalization")
"""What ``eval.task_groups`` accepts: an evaluation group, or held-out domain + adversarial."""


class FewShotLoraConfig(StrictModel):
    """Few-shot LoRA fine-tuning (§3.1, Appendix B)."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=5, ge=1)
    # "auto": q, v for T5 (the paper's), PEFT's per-architecture default for any other model
    # (itransfer.models.lora_targets); or a list of module names, matched as PEFT matches them.
    target_modules: Literal["auto"] | list[str] = "auto"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    weight_decay: float = Field(default=0.0, ge=0.0)  # AdamW's; the paper states none

    @field_validator("target_modules", mode="before")
    @classmethod
    def _auto_or_names(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            raise ValueError("must be auto or a list of module names (e.g. [q_proj, v_proj])")
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module (or be auto)")
        return value


def _seen_budget_in(tree: Mapping[str, Any]) -> bool:
    """Whether a dumped config samples seen tasks by budget (the floor matters only then)."""
    evaluation = tree.get("eval")
    return isinstance(evaluation, Mapping) and evaluation.get("seen_budget") is not None


class EvalConfig(StrictModel):
    """What the evaluations measure: ICL, few-shot LoRA transfer and seen-task fit."""

    task_groups: list[str] = Field(default_factory=lambda: ["unseen"], min_length=1)
    tasks: list[str] | None = None  # explicit task names instead of the groups
    max_tasks: int | None = Field(default=None, ge=1)  # first N of each group (quick runs)
    icl_context: str = "exemplars"
    shots: list[int] = Field(default_factory=lambda: [0, 5, 10, 20, 40], min_length=1)
    transfer_contexts: list[str] = Field(default_factory=lambda: ["none", "exemplars"])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    engine: Literal["batched", "peft"] = "batched"
    lora: FewShotLoraConfig = Field(default_factory=FewShotLoraConfig)
    # The speed knobs below regroup the same computations (tests match the adapters and losses
    # across them), so they change no result.
    # Batched engine: adapters trained together.
    cells_per_group: Annotated[int, NoEffect] = Field(default=64, ge=1)
    # Batched engine: one forward/backward pass holds at most this many examples and padded
    # tokens (a global step's examples, sorted by length, take several passes). CPU: the
    # defaults (bench/transfer_grid.py); a GPU wants far more of both.
    max_examples_per_pass: Annotated[int | None, NoEffect] = Field(default=64, ge=1)
    max_tokens_per_pass: Annotated[int | None, NoEffect] = Field(default=4096, ge=1)
    # An evaluation batch: at most batch_size rows and max_batch_tokens padded tokens (short
    # items share big batches). bench/transfer_grid.py measures both; GPUs want more of each.
    batch_size: Annotated[int, NoEffect] = Field(default=64, ge=1)
    max_batch_tokens: Annotated[int | None, NoEffect] = Field(default=16384, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    generate: bool = True
    seen_max_instances: int | None = Field(default=100, ge=1)  # per task and split
    # §4 compares samplers on an example-weighted (pooled) seen loss as well as the per-task
    # mean, and proportional sampling minimises the first, uniform the second: a per-task cap
    # weights every task alike. A budget scores, per split, about this many instances across
    # all seen tasks, each task's share proportional to its split size (at least
    # seen_min_instances, so every task keeps a per-task mean; seen_max_instances still caps
    # it). None: the cap alone, what runs did before the setting existed.
    seen_budget: Annotated[int | None, AddedLater(None)] = Field(default=None, ge=1)
    seen_min_instances: Annotated[int, KeyedOnlyWhen(_seen_budget_in)] = Field(default=10, ge=1)
    save_adapters: bool = False

    @field_validator("task_groups")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        unknown = [group for group in groups if group not in EVAL_TASK_GROUP_CHOICES]
        if unknown:
            raise ValueError(
                f"unknown task groups {unknown}; known: {list(EVAL_TASK_GROUP_CHOICES)}"
            )
        return groups

    @field_validator("icl_context")
    @classmethod
    def _known_icl_context(cls, name: str) -> str:
        return ContextConfig._known_context(name)

    @field_validator("transfer_contexts")
    @classmethod
    def _known_transfer_contexts(cls, names: list[str]) -> list[str]:
        return [ContextConfig._known_context(name) for name in names]

    @field_validator("shots")
    @classmethod
    def _non_negative_shots(cls, shots: list[int]) -> list[int]:
        if any(k < 0 for k in shots):
            raise ValueError("shot counts must be >= 0")
        return sorted(set(shots))


class ExperimentConfig(StrictModel):
    name: Annotated[str, NoEffect] = "itransfer"  # labels the results rows, measures nothing
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _shots_fit_the_pool(self) -> ExperimentConfig:
        pool = self.data.splits.few_shot_pool_size
        too_many = [k for k in self.eval.shots if k > pool]
        if too_many:
            raise ValueError(
                f"eval.shots {too_many} exceed data.splits.few_shot_pool_size={pool}"
            )
        monitor = self.train.monitor
        if monitor is not None and max(monitor.shots) > pool:
            raise ValueError(
                f"train.monitor.shots {monitor.shots} exceed "
                f"data.splits.few_shot_pool_size={pool}"
            )
        return self


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        key = _dotted_key(error["loc"]) or "<top level>"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message} (got {error.get('input')!r})")
    return "\n".join(lines)


def _dotted_key(location: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in location:
        # Pydantic puts the chosen member of the sampler union (its name) in the location;
        # the YAML has no such level: `train.sampler.reverse_annealing.x` is `train.sampler.x`.
        if parts and parts[-1] == "sampler" and part in SAMPLERS:
            continue
        parts.append(str(part))
    return ".".join(parts)


def parse_override(override: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` → (["train", "lr"], 1e-4); the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(
            f"--set {override}: expected KEY=VALUE (e.g. data.splits.unseen_test_size=50)"
        )
    key, raw_value = override.split("=", 1)
    parts = [part for part in key.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"--set {override}: empty key")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override}: value is not valid YAML ({exc})") from exc
    return parts, value


def _apply_override(tree: dict[str, Any], parts: Sequence[str], value: Any, override: str) -> None:
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {override}: '{prefix}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(
    path: Path | None = None,
    overrides: Sequence[str] = (),
    *,
    model: type[StrictModel] = ExperimentConfig,
) -> Any:
    """Load a YAML config (or the defaults), apply ``--set`` overrides, validate."""
    tree = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    source += apply_overrides(tree, overrides)
    return validate_tree(tree, source, model=model)


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> str:
    """Apply ``--set key=value`` overrides to a raw config tree; returns a note for messages."""
    for override in overrides:
        parts, value = parse_override(override)
        _apply_override(tree, parts, value, override)
    return f" with --set {' '.join(overrides)}" if overrides else ""


def validate_tree(
    tree: dict[str, Any], source: str, *, model: type[StrictModel] = ExperimentConfig
) -> Any:
    """Validate a raw config tree; every problem is reported against ``source``."""
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def config_to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
