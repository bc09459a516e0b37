"""FSDP through accelerate's FSDP plugin (``docs/accelerate/fsdp2.yaml``: FSDP2's
``fully_shard``), on two CPU processes joined by gloo: ``itransfer train`` runs, a run stopped
by a signal resumes to the uninterrupted run's losses and weights, the losses are DDP's, and a
trajectory checkpoint is a plain Hugging Face model folder. The fast tests reach the FSDP code
paths one process can reach."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from distributed_resume import overrides
from itransfer.errors import ConfigError
from itransfer.models.loading import load_model_and_tokenizer
from itransfer.runtime.launch import FSDP1_ON_CPU, check_fsdp, make_accelerator
from itransfer.train.fsdp import share_tied_embeddings, tie_gathered_weights
from test_train_distributed import RESUME_SCRIPT
from two_processes import launch_two

FSDP_CONFIG = REPO_ROOT / "docs" / "accelerate" / "fsdp2.yaml"
# FSDP2 clips the gradients by a norm summed from the shards' norms, in another order than
# DDP's: measured over these 8 steps of the bundled tiny T5, losses 5.0e-7 and weights 1.2e-6
# apart at most (identical with the smaller tiny_model_dir model, whose gradients are not
# clipped).
DDP_TOLERANCE = 1e-5
# The README's model: the test runs the README's command.
MODEL = "itransfer:tiny-t5"


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows]


def _written_by(checkpoint: Path) -> str:
    return json.loads((checkpoint / "trainer_state.json").read_text())["distributed_type"]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


@pytest.mark.slow
def test_fsdp_trains_resumes_exactly_and_matches_ddp(tmp_path: Path) -> None:
    model = MODEL
    fsdp = partial(launch_two, config_file=FSDP_CONFIG)
    whole, split, ddp = tmp_path / "whole", tmp_path / "split" / "run", tmp_path / "ddp" / "run"
    # (a) the README's command: `itransfer train` under the FSDP config
    fsdp("-m", "itransfer", "train", "--out", str(whole),
         *[part for item in overrides(model) for part in ("--set", item)])
    # (b) SIGTERM to rank 1 after step 3: both stop after the same step with a resumable
    # checkpoint (optimizer state gathered from the shards); --resume re-shards it
    fsdp(RESUME_SCRIPT, model, str(split), "first", "sigterm")
    stopped = [json.loads((split.parent / f"stopped-rank{r}.json").read_text()) for r in (0, 1)]
    assert stopped[0] == stopped[1]
    assert re.search(r"SIGTERM: stopped at step [45] and saved", stopped[0]["message"])
    resumable = max((split / "resume").glob("step-*"))
    assert (resumable / "optimizer.safetensors").is_file()
    assert json.loads((resumable / "trainer_state.json").read_text())["world_size"] == 2
    fsdp(RESUME_SCRIPT, model, str(split), "resumed")
    final = Path("checkpoints") / "step-0000008"
    assert _written_by(whole / final) == _written_by(split / final) == "FSDP"
    assert len(_losses(whole)) == 8
    assert _losses(split) == pytest.approx(_losses(whole), abs=1e-6)
    resumed_weights, whole_weights = _weights(split / final), _weights(whole / final)
    assert all(torch.equal(resumed_weights[name], whole_weights[name]) for name in whole_weights)
    # (c) the same run under DDP
    launch_two(RESUME_SCRIPT, model, str(ddp), "whole")
    ddp_difference = max(abs(a - b) for a, b in zip(_losses(ddp), _losses(whole), strict=True))
    assert ddp_difference <= DDP_TOLERANCE
    assert _written_by(ddp / final) == "MULTI_CPU"
    ddp_weights = _weights(ddp / final)
    assert ddp_weights.keys() == whole_weights.keys()  # tied names written once, as by DDP
    assert all(torch.allclose(ddp_weights[name], whole_weights[name], atol=DDP_TOLERANCE)
               for name in ddp_weights)
    _assert_loads_with_transformers(whole / "checkpoints" / "step-0000004")


def _assert_loads_with_transformers(checkpoint: Path) -> None:
    """(d) A trajectory checkpoint written under FSDP: full, unsharded safetensors weights
    that plain ``transformers`` loads, every weight as written."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert not list(checkpoint.glob("*.bin")) and not list(checkpoint.glob("*distcp*"))
    loaded = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    written = _weights(checkpoint)
    state = loaded.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in written.items())
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer("input: hello", return_tensors="pt").input_ids
    assert loaded.generate(ids, max_new_tokens=3).shape[0] == 1


# --- what one process can reach ------------------------------------------------------------


def test_fsdp1_on_cpu_processes_is_refused_before_anything_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FSDP1 fails inside torch on CPUs ("Inconsistent compute device and `device_id` on rank
    0: cpu vs cpu:0"), after every process loaded the model: refused first, with the fix."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    monkeypatch.setattr("itransfer.runtime.launch._has_gpu", lambda: False)
    with pytest.raises(ConfigError, match="set fsdp_version: 2") as raised:
        make_accelerator()
    assert str(raised.value) == FSDP1_ON_CPU


def test_an_fsdp_launch_is_not_trained_under_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate's own ``Accelerator(cpu=True)`` ignores the FSDP config: each process would
    hold the whole model under DDP. Training refuses such an accelerator."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="asks for FSDP but the accelerator runs MULTI_CPU"):
        check_fsdp(SimpleNamespace(distributed_type="MULTI_CPU"))  # type: ignore[arg-type]
    check_fsdp(SimpleNamespace(distributed_type="FSDP"))  # type: ignore[arg-type]
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_fsdp(SimpleNamespace(distributed_type="MULTI_CPU"))  # type: ignore[arg-type]


def test_t5_embeddings_become_one_module_with_the_same_outputs(tiny_model_dir: Path) -> None:
    """FSDP2 needs each tied weight in one group: T5's three embedding modules (one weight)
    become one module, which changes neither the outputs nor the state dict's names."""
    model = load_model_and_tokenizer(str(tiny_model_dir)).model.eval()
    ids = torch.tensor([[5, 6, 7, 1]])
    before = model(input_ids=ids, labels=ids).logits
    names = list(model.state_dict())
    assert share_tied_embeddings(model) == ["encoder.embed_tokens", "decoder.embed_tokens"]
    assert model.encoder.embed_tokens is model.shared is model.decoder.embed_tokens
    assert torch.equal(model(input_ids=ids, labels=ids).logits, before)
    assert list(model.state_dict()) == names
    assert share_tied_embeddings(model) == []  # nothing left to share


def test_gathered_tied_weights_are_written_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """FSDP gathers each name of a tied weight into its own tensor; tied again, save_pretrained
    writes the names a DDP run writes."""
    model = load_model_and_tokenizer(str(tiny_model_dir)).model
    gathered = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tie_gathered_weights(model, gathered)
    assert gathered["lm_head.weight"] is gathered["shared.weight"]
    assert gathered["encoder.embed_tokens.weight"] is gathered["shared.weight"]
    model.save_pretrained(tmp_path / "tied", state_dict=gathered)
    model.save_pretrained(tmp_path / "plain")
    assert _weights(tmp_path / "tied").keys() == _weights(tmp_path / "plain").keys()
