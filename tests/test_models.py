"""Loading and saving models: the bundled tiny T5, hub names offline, causal pad tokens."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from itransfer.errors import ConfigError, ITransferError
from itransfer.models.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    bundled_model_dir,
    load_model_and_tokenizer,
    model_facts,
    save_model,
)


@pytest.fixture(scope="module")
def tiny_t5() -> LoadedModel:
    return load_model_and_tokenizer(DEFAULT_MODEL)


def test_default_model_is_the_bundled_seq2seq_checkpoint(tiny_t5: LoadedModel) -> None:
    assert tiny_t5.architecture == "seq2seq"
    assert Path(tiny_t5.source) == bundled_model_dir()
    assert (Path(tiny_t5.source) / "model.safetensors").is_file()
    assert type(tiny_t5.model).__name__ == "T5ForConditionalGeneration"
    assert next(tiny_t5.model.parameters()).dtype == torch.float32


def test_bundled_checkpoint_is_small() -> None:
    size = sum(p.stat().st_size for p in bundled_model_dir().iterdir())
    assert size <= 15 * 2**20


def test_tokenizer_round_trips_a_sentence_and_has_t5_special_tokens(
    tiny_t5: LoadedModel,
) -> None:
    tokenizer = tiny_t5.tokenizer
    sentence = "Question: Who wrote the report about 42 endangered species in 2019?"
    ids = tokenizer(sentence).input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 2)
    sentinels = [tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)]
    assert sentinels[0] == len(tokenizer) - 1
    assert len(set(sentinels)) == 100 and tokenizer.unk_token_id not in sentinels
    # A sentinel in text is one token, as span-corruption inputs need.
    assert tokenizer("a <extra_id_7> b").input_ids.count(sentinels[7]) == 1


def test_bundled_model_generates_text(tiny_t5: LoadedModel) -> None:
    batch = tiny_t5.tokenizer(["Sentence 1: The man walked to the"], return_tensors="pt")
    output = tiny_t5.model.generate(**batch, max_new_tokens=8, do_sample=False)
    text = tiny_t5.tokenizer.decode(output[0], skip_special_tokens=True)
    assert text.strip()


def test_unknown_hub_name_offline_raises_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ITransferError, match="HF_HUB_OFFLINE"):
        load_model_and_tokenizer("itransfer-test-org/no-such-model-xyz")


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "a/b/c"])
def test_missing_local_folder_is_not_looked_up_on_the_hub(name: str) -> None:
    with pytest.raises(ITransferError, match="does not exist"):
        load_model_and_tokenizer(name)


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ITransferError, match=r"no config\.json"):
        load_model_and_tokenizer(tmp_path)


def test_bad_dtype_and_wrong_architecture_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="dtype"):
        load_model_and_tokenizer(DEFAULT_MODEL, dtype="float8")
    with pytest.raises(ConfigError, match="seq2seq"):
        load_model_and_tokenizer(DEFAULT_MODEL, architecture="causal")


def _tiny_causal_model(folder: Path) -> None:
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(30)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>"
    )
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    save_model(GPT2LMHeadModel(config), tokenizer, folder)


def test_causal_model_gets_a_pad_token(tmp_path: Path) -> None:
    _tiny_causal_model(tmp_path / "gpt")
    loaded = load_model_and_tokenizer(tmp_path / "gpt")
    assert loaded.architecture == "causal"
    assert loaded.tokenizer.pad_token == "<eos>"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id == 1
    batch = loaded.tokenizer(["w1 w2 w3", "w4"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 3)


def test_save_model_round_trips(tmp_path: Path, tiny_t5: LoadedModel) -> None:
    target = save_model(tiny_t5.model, tiny_t5.tokenizer, tmp_path / "copy")
    assert (target / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".copy.*"))
    reloaded = load_model_and_tokenizer(target)
    for (name, a), (_, b) in zip(
        tiny_t5.model.state_dict().items(), reloaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(ITransferError, match="already exists"):
        save_model(tiny_t5.model, tiny_t5.tokenizer, target)


def test_save_model_is_atomic_when_writing_fails(
    tmp_path: Path, tiny_t5: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    # The weights are written, then the tokenizer fails: nothing may appear at the target.
    monkeypatch.setattr(type(tiny_t5.tokenizer), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_t5.model, tiny_t5.tokenizer, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    save_model(tiny_t5.model, tiny_t5.tokenizer, tmp_path / "ckpt")
    before = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    monkeypatch.setattr(type(tiny_t5.tokenizer), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_t5.model, tiny_t5.tokenizer, tmp_path / "ckpt", overwrite=True)
    # A failed overwrite keeps the previous complete checkpoint.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_model_facts_count_parameters_without_loading_weights(tiny_t5: LoadedModel,
                                                              tmp_path: Path) -> None:
    facts = model_facts(DEFAULT_MODEL)
    assert facts is not None
    # tied input/output embeddings count once, as in the loaded model
    assert facts.num_parameters == sum(p.numel() for p in tiny_t5.model.parameters())
    assert facts.vocab_size == tiny_t5.model.config.vocab_size
    _tiny_causal_model(tmp_path / "gpt")
    causal = model_facts(tmp_path / "gpt")
    assert causal is not None
    loaded = load_model_and_tokenizer(tmp_path / "gpt").model
    assert causal.num_parameters == loaded.num_parameters()
    assert model_facts(tmp_path / "missing") is None  # a report never fails on its header


def test_weights_that_are_not_safetensors_are_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundled_model_dir(), broken)
    (broken / "model.safetensors").write_text("<html>a proxy's error page</html>")
    with pytest.raises(ITransferError, match=rf"cannot load model from {broken}: a "
                                             r"\*\.safetensors file there is not a valid"):
        load_model_and_tokenizer(broken)
