"""The pre-training recipes' settings, as every other command's: pydantic, YAML, ``--set``.

``itransfer pretrain --config FILE --set KEY=VALUE`` reads a YAML mapping whose optional
``architecture`` key (``seq2seq``, the default, or ``causal``) picks the recipe and whose other
keys are that recipe's fields below; with no file, the defaults rebuild the shipped model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, model_validator

from itransfer.config.schema import StrictModel, apply_overrides, read_yaml, validate_tree
from itransfer.data.corpus import BUNDLED_CORPUS
from itransfer.errors import ConfigError
from itransfer.pretraining.tokenizer import NUM_SENTINELS

Architecture = Literal["seq2seq", "causal"]
ARCHITECTURES: tuple[Architecture, ...] = ("seq2seq", "causal")


class _RecipeConfig(StrictModel):
    # A recipe's settings are written beside its weights (RECIPE.md, recipe.json): frozen, so
    # what ran is what was written.
    model_config = ConfigDict(extra="forbid", frozen=True)

    def _require_positive(self, names: Sequence[str]) -> None:
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(f"pretrain.{name} must be positive, got {getattr(self, name)}")


class PretrainConfig(_RecipeConfig):
    """Every knob of the seq2seq recipe; the defaults are the shipped checkpoint's settings."""

    corpus: str = str(BUNDLED_CORPUS)
    seed: int = 0
    # tokenizer
    vocab_size: int = 8192
    tokenizer_documents: int = 100_000
    # model: T5 v1.1 blocks (gated-GELU, no dropout in pre-training)
    d_model: int = 128
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    d_ff: int = 512
    # span corruption
    span_input_length: int = 128
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    # prefix LM: a window of prefix_input_length + prefix_target_length tokens, cut at random
    prefix_input_length: int = 128
    prefix_target_length: int = 64
    # optimisation (AdamW, linear warm-up then linear decay to 0, per phase)
    steps_span: int = 2000
    steps_prefix: int = 2500
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    shuffle_buffer: int = 10_000
    num_threads: int | None = None

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        self._require_positive(("vocab_size", "d_model", "num_layers", "num_decoder_layers",
                                "num_heads", "d_ff", "span_input_length",
                                "prefix_input_length", "prefix_target_length", "batch_size"))
        if self.d_model % self.num_heads:
            raise ConfigError("pretrain.d_model must be a multiple of pretrain.num_heads")
        if not 0.0 < self.noise_density < 0.5:
            raise ConfigError("pretrain.noise_density must lie in (0, 0.5)")
        if self.vocab_size <= NUM_SENTINELS + 3 + 50:
            raise ConfigError("pretrain.vocab_size is too small for T5's special tokens")
        if self.steps_span < 0 or self.steps_prefix < 0:
            raise ConfigError("pretrain.steps_span and steps_prefix must be >= 0")
        return self


class CausalPretrainConfig(_RecipeConfig):
    """Every knob of the causal recipe; the defaults are ``itransfer:tiny-llama``'s settings."""

    corpus: str = str(BUNDLED_CORPUS)
    # Where the tokenizer comes from: a model folder or a bundled name. Shared with tiny-t5 so
    # both families read text the same way; a new corpus may deserve its own (any HF folder).
    tokenizer: str = "itransfer:tiny-t5"
    seed: int = 0
    # model: Llama blocks (RMSNorm, SwiGLU, rotary, GQA), no dropout
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    rope_theta: float = 10_000.0
    # Rotary has no learned positions, so this only caps generation; training windows are
    # context_length long, which covers the tiny configs' source + target budgets (≤ 160).
    max_position_embeddings: int = 2048
    context_length: int = 192
    # optimisation (AdamW, the pre-training phase schedule of itransfer.pretraining.seq2seq)
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    shuffle_buffer: int = 10_000
    num_threads: int | None = None

    @model_validator(mode="after")
    def _check(self) -> CausalPretrainConfig:
        self._require_positive(("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                "intermediate_size", "max_position_embeddings",
                                "context_length", "batch_size"))
        if self.hidden_size % self.num_heads:
            raise ConfigError("pretrain.hidden_size must be a multiple of pretrain.num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("pretrain.num_heads must be a multiple of pretrain.num_kv_heads")
        if self.context_length > self.max_position_embeddings:
            raise ConfigError("pretrain.context_length exceeds pretrain.max_position_embeddings")
        if self.steps < 0:
            raise ConfigError(f"pretrain.steps must be >= 0, got {self.steps}")
        return self


RECIPES: dict[Architecture, type[_RecipeConfig]] = {
    "seq2seq": PretrainConfig, "causal": CausalPretrainConfig,
}


def load_pretrain_config(
    path: Path | None = None, overrides: Sequence[str] = (),
    architecture: Architecture | None = None,
) -> PretrainConfig | CausalPretrainConfig:
    """The YAML file (or the defaults) → ``--set`` overrides → ``architecture`` (a flag wins
    over the file's key), validated by that architecture's recipe."""
    tree = read_yaml(path) if path is not None else {}
    source = (str(path) if path is not None else "<defaults>") + apply_overrides(tree, overrides)
    chosen = tree.pop("architecture", "seq2seq")
    if architecture is not None:
        chosen = architecture
    if chosen not in RECIPES:
        raise ConfigError(f"{source}: architecture: must be one of {', '.join(ARCHITECTURES)} "
                          f"(got {chosen!r})")
    return validate_tree(tree, source, model=RECIPES[chosen])
