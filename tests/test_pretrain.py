"""The recipe of the embedded default model: corpus streaming, objectives, a tiny run, and
whether the shipped checkpoint actually learned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from itransfer.cli.pretrain import pretrain as pretrain_command
from itransfer.data.corpus import BUNDLED_CORPUS, BUNDLED_HELDOUT, iter_corpus_documents
from itransfer.errors import ConfigError, DataError, ITransferError
from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer
from itransfer.pretraining.objectives import (
    apply_span_corruption,
    random_spans_noise_mask,
    span_corruption_raw_length,
    split_prefix_lm,
)
from itransfer.pretraining.seq2seq import (
    PretrainConfig,
    build_model,
    collate_pairs,
    phase_schedule,
    prefix_lm_loss,
    pretrain,
)

SENTINELS = [99, 98, 97, 96]


# --------------------------------------------------------------------------- corpus


def test_corpus_streams_non_blank_lines_of_a_file_or_folder(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("third\n\n  \nfourth\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first\n second \n", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not a corpus file\n", encoding="utf-8")
    assert list(iter_corpus_documents(tmp_path)) == ["first", "second", "third", "fourth"]
    assert list(iter_corpus_documents(tmp_path / "b.txt")) == ["third", "fourth"]


def test_shuffle_buffer_permutes_deterministically(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"doc {i}\n" for i in range(50)), encoding="utf-8")
    shuffled = list(iter_corpus_documents(corpus, shuffle_buffer=8, seed=3))
    assert sorted(shuffled) == sorted(f"doc {i}" for i in range(50))
    assert shuffled != [f"doc {i}" for i in range(50)]
    assert shuffled == list(iter_corpus_documents(corpus, shuffle_buffer=8, seed=3))


def test_empty_or_missing_corpus_is_a_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="corpus is empty"):
        iter_corpus_documents(empty)
    with pytest.raises(DataError, match="not found"):
        iter_corpus_documents(tmp_path / "missing.txt")
    (tmp_path / "no_txt").mkdir()
    with pytest.raises(DataError, match=r"no \*\.txt"):
        iter_corpus_documents(tmp_path / "no_txt")


def test_bundled_corpus_ships_with_the_package() -> None:
    assert BUNDLED_CORPUS.stat().st_size > 1_000_000
    held_out = list(iter_corpus_documents(BUNDLED_HELDOUT))
    assert len(held_out) >= 100


# --------------------------------------------------------------------------- objectives


def test_span_corruption_pairs_each_sentinel_with_its_span() -> None:
    tokens = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    inputs, targets = apply_span_corruption(tokens, mask, SENTINELS, eos_id=1)
    assert inputs == [10, 11, 99, 14, 15, 16, 98, 18, 19, 1]
    assert targets == [99, 12, 13, 98, 17, 1]


def test_noise_mask_has_t5_density_and_spans() -> None:
    rng = np.random.default_rng(0)
    length = span_corruption_raw_length(128, 0.15, 3.0)
    for _ in range(20):
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
        assert mask.sum() == round(length * 0.15)
        assert not mask[0]  # T5 masks start with a clean span
        starts = int(np.sum(mask[1:] & ~mask[:-1]))
        assert starts == round(round(length * 0.15) / 3.0)
        sentinels = list(range(1000, 1100))
        inputs, targets = apply_span_corruption(list(range(length)), mask, sentinels)
        # The raw length is the longest whose corrupted input fits the 128-token budget.
        assert len(inputs) == 128
        assert [t for t in inputs if t >= 1000] == [t for t in targets if t >= 1000]


def test_prefix_lm_split_keeps_text_order() -> None:
    window = list(range(100, 160))
    rng = np.random.default_rng(1)
    for _ in range(20):
        source, target = split_prefix_lm(window, rng, max_input=16, max_target=8)
        assert 1 <= len(source) <= 16 and 1 <= len(target) <= 8
        assert target[0] == source[-1] + 1


def test_pairs_are_padded_as_instruction_tuning_pads() -> None:
    batch = collate_pairs([([5, 6, 1], [7, 1]), ([8, 1], [9, 10, 11, 1])])
    assert batch["input_ids"].tolist() == [[5, 6, 1], [8, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [9, 10, 11, 1]]


def test_phase_schedule_is_the_shipped_checkpoints() -> None:
    factor = phase_schedule(warmup_steps=200, steps=2000)
    assert factor(0) == 1 / 200 and factor(99) == 0.5
    # The decay line starts at step 0, so the end of warm-up is already below the peak lr
    # (the instruction-tuning schedule is at 1.0 there and halfway, at step 1100, at 0.5).
    assert factor(199) == 1801 / 2000 and factor(1000) == 0.5 and factor(2000) == 0.0
    # Warm-up is capped at a tenth of the phase (+1): 20 steps warm up for 3, not 200.
    assert phase_schedule(warmup_steps=200, steps=20)(0) == 1 / 3


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        PretrainConfig(d_model=130, num_heads=4)
    with pytest.raises(ConfigError, match="noise_density"):
        PretrainConfig(noise_density=0.9)


# --------------------------------------------------------------------------- recipe


def _tiny_config(corpus: Path) -> PretrainConfig:
    return PretrainConfig(
        corpus=str(corpus), vocab_size=400, tokenizer_documents=400, d_model=32,
        num_layers=1, num_decoder_layers=1, num_heads=2, d_ff=64, span_input_length=32,
        prefix_input_length=24, prefix_target_length=8, steps_span=3, steps_prefix=3,
        batch_size=4, warmup_steps=1, shuffle_buffer=50, num_threads=1,
    )


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = []
    with BUNDLED_CORPUS.open(encoding="utf-8") as handle:
        for line, _ in zip(handle, range(400), strict=False):
            lines.append(line)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_recipe_runs_and_its_checkpoint_loads_and_generates(
    tmp_path: Path, small_corpus: Path
) -> None:
    out = pretrain(_tiny_config(small_corpus), tmp_path / "tiny")
    log = json.loads((out / "pretrain_log.json").read_text(encoding="utf-8"))
    assert [phase["phase"] for phase in log["phases"]] == ["span_corruption", "prefix_lm"]
    assert all(np.isfinite(phase["final_loss"]) for phase in log["phases"])

    loaded = load_model_and_tokenizer(out)
    assert loaded.architecture == "seq2seq"
    assert len(loaded.tokenizer) == log["vocab_size"] == loaded.model.config.vocab_size
    assert loaded.tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(loaded.tokenizer) - 1
    batch = loaded.tokenizer(["The story begins"], return_tensors="pt")
    generated = loaded.model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert generated.shape[0] == 1 and generated.shape[1] >= 2


def test_recipe_is_seeded(tmp_path: Path, small_corpus: Path) -> None:
    config = _tiny_config(small_corpus)
    first = json.loads((pretrain(config, tmp_path / "a") / "pretrain_log.json").read_text())
    second = json.loads((pretrain(config, tmp_path / "b") / "pretrain_log.json").read_text())
    assert [p["final_loss"] for p in first["phases"]] == [p["final_loss"] for p in second["phases"]]


def test_recipe_refuses_a_non_empty_output_folder(tmp_path: Path, small_corpus: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ITransferError, match="not empty"):
        pretrain(_tiny_config(small_corpus), tmp_path)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_shipped_model_learned_the_lm_adaptation_objective() -> None:
    """Held-out prefix-LM loss must beat a fresh model of the same shape by a wide margin."""
    shipped = load_model_and_tokenizer(DEFAULT_MODEL)
    held_out = list(iter_corpus_documents(BUNDLED_HELDOUT))[:100]
    trained_loss = prefix_lm_loss(shipped.model, shipped.tokenizer, held_out)

    torch.manual_seed(0)
    fresh = build_model(PretrainConfig(), len(shipped.tokenizer))
    fresh_loss = prefix_lm_loss(fresh, shipped.tokenizer, held_out)
    assert fresh_loss > np.log(len(shipped.tokenizer)) - 1.0  # near-uniform guessing
    assert trained_loss < fresh_loss - 3.0
    assert trained_loss < 6.5  # well below the corpus unigram entropy (7.37 nats)


def test_cli_reports_a_missing_corpus_as_a_data_error(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(pretrain_command)
    result = CliRunner().invoke(
        app, ["--out", str(tmp_path / "m"), "--corpus", str(tmp_path / "nope.txt")]
    )
    assert isinstance(result.exception, DataError)
    assert not (tmp_path / "m").exists()
