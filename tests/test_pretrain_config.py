"""`itransfer pretrain` reads its settings as every other command: YAML, --set, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from itransfer.cli import app
from itransfer.errors import ConfigError
from itransfer.pretraining.config import (
    CausalPretrainConfig,
    PretrainConfig,
    load_pretrain_config,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_the_shipped_seq2seq_recipe() -> None:
    assert load_pretrain_config() == PretrainConfig()


def test_the_file_picks_the_recipe_and_set_then_the_flag_win(tmp_path: Path) -> None:
    path = write(tmp_path / "recipe.yaml", "architecture: causal\nsteps: 7\nlr: 0.001\n")
    config = load_pretrain_config(path, ["steps=9"])
    assert isinstance(config, CausalPretrainConfig)
    assert (config.steps, config.lr, config.hidden_size) == (9, 0.001, 128)
    # --architecture beats the file's key; then `steps` is not a seq2seq field
    with pytest.raises(ConfigError, match=r"recipe.yaml with --set steps=9: steps: unknown key"):
        load_pretrain_config(path, ["steps=9"], "seq2seq")


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "d_model: 130\nnum_heads: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: pretrain.d_model must be a multiple"):
        load_pretrain_config(path)
    with pytest.raises(ConfigError, match=r"architecture: must be one of seq2seq, causal"):
        load_pretrain_config(write(tmp_path / "arch.yaml", "architecture: rnn\n"))
    with pytest.raises(ConfigError, match=r"<defaults> with --set lr=fast: lr: "):
        load_pretrain_config(None, ["lr=fast"])


def test_the_cli_refuses_a_bad_file_before_training(tmp_path: Path) -> None:
    path = write(tmp_path / "recipe.yaml", "architecture: causal\nd_ff: 64\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--set", "steps=1",
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "d_ff: unknown key" in result.output and "recipe.yaml" in result.output
    assert not (tmp_path / "m").exists()
