"""Load a Hugging Face model + tokenizer (seq2seq or causal) and save checkpoints atomically.

``DEFAULT_MODEL`` (``"itransfer:tiny-t5"``) names the tiny LM-adapted T5 shipped in the package
(built by :mod:`itransfer.pretraining.seq2seq`, see ``bundled/tiny-t5/RECIPE.md``), and
``DEFAULT_CAUSAL_MODEL`` (``"itransfer:tiny-llama"``) its decoder-only counterpart, a tiny
Llama-shaped LM with the same tokenizer (:mod:`itransfer.pretraining.causal`,
``bundled/tiny-llama/RECIPE.md``). ``itransfer:NAME`` is the folder ``bundled/NAME``. A local
folder is always read with ``local_files_only=True``; only a name that is not a path reaches the
hub, and with ``HF_HUB_OFFLINE=1`` not even that.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from itransfer.errors import ConfigError, ITransferError
from itransfer.runtime.atomic_files import staged_dir

logger = logging.getLogger(__name__)

Architecture = Literal["seq2seq", "causal"]

DEFAULT_MODEL = "itransfer:tiny-t5"
DEFAULT_CAUSAL_MODEL = "itransfer:tiny-llama"
_BUNDLED_PREFIX = "itransfer:"

_DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A model with its tokenizer, its family, and where it came from (for provenance)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    architecture: Architecture
    source: str


def bundled_model_dir(name: str = "tiny-t5") -> Path:
    """Folder of a checkpoint shipped inside the package (works from a wheel install too)."""
    bundled = Path(str(resources.files("itransfer") / "bundled"))
    folder = bundled / name
    if not (folder / "config.json").is_file():
        shipped = sorted(f"{_BUNDLED_PREFIX}{path.parent.name}"
                         for path in bundled.glob("*/config.json"))
        raise ITransferError(
            f"bundled model {_BUNDLED_PREFIX}{name} not found at {folder} (shipped: "
            f"{', '.join(shipped) or 'none'}); rebuild it with `itransfer pretrain --out` "
            "or reinstall itransfer"
        )
    return folder


def hub_offline() -> bool:
    """True when the user asked for no network (the same switch huggingface_hub reads)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model_source(name_or_path: str | Path) -> tuple[str, bool]:
    """Map a model argument to ``(what from_pretrained gets, whether it is a local folder)``."""
    text = str(name_or_path)
    if text.startswith(_BUNDLED_PREFIX):
        return str(bundled_model_dir(text[len(_BUNDLED_PREFIX):])), True
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or path.exists() or _looks_like_path(text):
        if not path.is_dir():
            raise ITransferError(f"model folder {path} does not exist")
        if not (path / "config.json").is_file():
            raise ITransferError(f"{path} is not a model folder (it has no config.json)")
        return str(path), True
    return text, False


def _looks_like_path(text: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else was meant as a local folder, and must not
    # silently turn into a hub lookup when it is misspelt.
    return (
        text.startswith(("/", ".", "~"))
        or text.endswith("/")
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def load_model_and_tokenizer(
    name_or_path: str | Path,
    *,
    architecture: Literal["auto", "seq2seq", "causal"] = "auto",
    trust_remote_code: bool = False,
    dtype: str | None = None,
) -> LoadedModel:
    """Load safetensors weights and the tokenizer of a local folder, a hub id or a bundled alias.

    ``architecture="auto"`` follows ``config.is_encoder_decoder``. Causal tokenizers without a
    pad token pad with an existing token (see :func:`_ensure_pad_token`), since batching needs
    one; no token is ever added, so the embedding matrix keeps its size.
    """
    source, local = resolve_model_source(name_or_path)
    local_only = local or hub_offline()
    common: dict[str, Any] = {
        "local_files_only": local_only,
        "trust_remote_code": trust_remote_code,
    }
    try:
        config = AutoConfig.from_pretrained(source, **common)
        chosen = _choose_architecture(config, architecture, source)
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model_class = AutoModelForSeq2SeqLM if chosen == "seq2seq" else AutoModelForCausalLM
        model = model_class.from_pretrained(
            source, config=config, use_safetensors=True, dtype=_torch_dtype(dtype), **common
        )
    except OSError as exc:
        raise ITransferError(_load_failure_message(str(name_or_path), local, exc)) from exc
    except SafetensorError as exc:  # a truncated download, a text file saved as weights, …
        raise ITransferError(
            f"cannot load model from {source}: a *.safetensors file there is not a valid "
            f"safetensors file ({exc}); re-download or re-save it"
        ) from exc
    if chosen == "causal":
        _ensure_pad_token(model, tokenizer, source)
    logger.info("loaded %s (%s) from %s", type(model).__name__, chosen, source)
    return LoadedModel(model=model, tokenizer=tokenizer, architecture=chosen, source=source)


@dataclass(frozen=True)
class ModelFacts:
    """What a report says about a model's scale, read without loading its weights."""

    num_parameters: int
    vocab_size: int


def model_facts(name_or_path: str | Path, *, trust_remote_code: bool = False
                ) -> ModelFacts | None:
    """Parameter count and output vocabulary of a model, from its config alone.

    The model is built on the meta device (no memory, no weights read) and its distinct
    parameters counted, so tied embeddings count once. Never downloads: a hub model that is not
    in the local cache, or a config this transformers cannot build, gives None.
    """
    try:
        source, _ = resolve_model_source(name_or_path)
        config = AutoConfig.from_pretrained(source, local_files_only=True,
                                            trust_remote_code=trust_remote_code)
        model_class = (AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False)
                       else AutoModelForCausalLM)
        with torch.device("meta"):
            model = model_class.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ITransferError) as exc:
        logger.info("no scale facts for %s: %s", name_or_path, exc)
        return None
    vocab_size = int(model.get_output_embeddings().weight.shape[0])
    return ModelFacts(num_parameters=sum(p.numel() for p in model.parameters()),
                      vocab_size=vocab_size)


def model_type_of(name_or_path: str | Path, *, trust_remote_code: bool = False) -> str | None:
    """``config.model_type`` of a model (``t5``, ``llama``, …) from its config alone (a hub
    model's config.json is fetched unless ``HF_HUB_OFFLINE=1``, as loading it would); None when
    it cannot be read."""
    try:
        source, local = resolve_model_source(name_or_path)
        config = AutoConfig.from_pretrained(source, local_files_only=local or hub_offline(),
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ITransferError) as exc:
        logger.info("no model type for %s: %s", name_or_path, exc)
        return None
    return getattr(config, "model_type", None)


def _choose_architecture(
    config: PretrainedConfig, requested: str, source: str
) -> Architecture:
    detected: Architecture = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if requested == "auto":
        return detected
    if requested not in ("seq2seq", "causal"):
        raise ConfigError(f"architecture must be auto, seq2seq or causal, not {requested!r}")
    if requested != detected:
        raise ConfigError(
            f"model {source} is {detected} (config.is_encoder_decoder="
            f"{getattr(config, 'is_encoder_decoder', False)}), but architecture={requested}"
        )
    return requested


def _torch_dtype(dtype: str | None) -> torch.dtype | str | None:
    if dtype is None:
        return None
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(
            f"dtype must be one of {', '.join(sorted(_DTYPES))}, not {dtype!r}"
        ) from None


def _load_failure_message(name: str, local: bool, exc: OSError) -> str:
    if local:
        return f"cannot load model from {name}: {exc}"
    if hub_offline():
        return (
            f"model {name!r} is not a local folder and is not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE=1 forbids downloading it; download it once online or pass a folder"
        )
    return f"cannot load model {name!r} from the Hugging Face hub: {exc}"


def _ensure_pad_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str
) -> None:
    """Pad with EOS, else UNK, else BOS when the tokenizer has no pad token.

    Padding positions are masked out of attention and loss (and generation pads on the left,
    with position ids counted from the first real token), so any existing token will do;
    adding a new one would silently grow the embedding matrix with an untrained row.
    """
    if tokenizer.pad_token is None:
        for role in ("eos_token", "unk_token", "bos_token"):
            if getattr(tokenizer, role) is not None:
                tokenizer.pad_token = getattr(tokenizer, role)
                break
        else:
            raise ConfigError(
                f"{source}: the tokenizer has no pad, eos, unk or bos token to pad batches "
                "with; add a pad token to the tokenizer (and resize the model) before using it"
            )
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Write safetensors weights, config and tokenizer to ``out_dir`` atomically.

    Everything is written to a sibling temporary folder that is renamed into place, so a crash
    leaves ``out_dir`` either absent (or its previous version) or complete, never half-written.
    """
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise ITransferError(f"{target} already exists (pass overwrite=True to replace it)")
    with staged_dir(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if not any(staging.glob("*.safetensors")):
            raise ITransferError(f"saving {type(model).__name__} wrote no safetensors file")
    return target
