"""Tiny instruction-tuning configs shared by the training tests: every path runs in seconds."""

from __future__ import annotations

from pathlib import Path

from itransfer.config.schema import ExperimentConfig, load_config


def tiny_train_config(model_dir: Path, *overrides: str) -> ExperimentConfig:
    return load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            "model.max_source_length=96",
            "model.max_target_length=32",
            "train.batch_size=8",
            "train.warmup_steps=2",
            "train.learning_rate=3e-3",
            "train.log_every=1",
            "train.tensorboard=false",
            "train.length_window_batches=4",
            *overrides,
        ],
    )
