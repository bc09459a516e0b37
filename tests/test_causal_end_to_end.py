"""A Llama-shaped model from a local config through instruction tuning, ICL, seen-task fit and
both transfer engines, with no setting changed for it (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from causal_models import build_causal_model
from itransfer.config.schema import load_config
from itransfer.eval.icl import evaluate_icl
from itransfer.eval.seen import evaluate_seen
from itransfer.eval.session import open_session
from itransfer.eval.transfer import evaluate_transfer
from itransfer.train.loop import instruction_tune

# Small, but no model-specific setting: target modules, padding and formatting are defaults.
SMALL = ["model.max_source_length=64", "model.max_target_length=12",
         "data.splits.unseen_test_size=4", "train.steps=4", "train.batch_size=8",
         "train.warmup_steps=1", "train.tensorboard=false", "eval.max_tasks=1",
         "eval.shots=[0, 5]", "eval.transfer_contexts=[none]", "eval.max_new_tokens=4",
         "eval.seen_max_instances=1", "eval.lora.epochs=1", "eval.lora.dropout=0.0"]


@pytest.mark.slow
def test_a_llama_shaped_model_runs_every_stage_without_overrides(tmp_path: Path) -> None:
    model_dir = build_causal_model(tmp_path / "llama", "llama", pad_token=False)
    config = load_config(None, [f"model.name_or_path={model_dir}", *SMALL])
    checkpoint = instruction_tune(config, tmp_path / "train").final_checkpoint

    session = open_session(config, checkpoint, tmp_path / "eval")
    assert evaluate_icl(session) > 0
    assert evaluate_seen(session) > 0
    recorded = yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())
    assert recorded["eval"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
    losses = {}
    for engine in ("peft", "batched"):
        session = open_session(config, checkpoint, tmp_path / engine)
        assert evaluate_transfer(session, engine=engine) > 0
        frame = session.table.read()
        rows = frame[frame["metric"].isin(["loss", "final_train_loss"])]
        losses[engine] = rows.set_index(["task", "shots", "split", "metric"])["value"]
        assert frame[frame["metric"] == "rougeL"]["value"].notna().all()
    assert len(losses["peft"]) == len(losses["batched"]) == 3  # k=0 and k=5 test, k=5 train
    for key, value in losses["peft"].items():
        assert losses["batched"][key] == pytest.approx(value, abs=2e-4), key
