"""``eval.lora.target_modules``: ``auto`` per architecture, one-line errors, the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from causal_models import build_causal_model
from itransfer.config.schema import load_config
from itransfer.errors import ConfigError
from itransfer.eval.multilora import MultiLoraModel
from itransfer.eval.session import open_session
from itransfer.eval.transfer import plan_cells
from itransfer.models.loading import DEFAULT_MODEL, load_model_and_tokenizer
from itransfer.models.lora_targets import linear_module_names, resolve_target_modules
from itransfer.runs.identity import evaluation_key as _eval_key
from itransfer.runs.identity import result_relevant
from itransfer.runs.identity import training_key as _train_key

PLAN = [True, False, [0, 5], ["none"]]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_causal_model(tmp_path_factory.mktemp("llama") / "m", "llama")


def test_auto_is_the_papers_choice_on_t5_and_pefts_default_elsewhere(
    llama_dir: Path, tmp_path: Path
) -> None:
    assert load_config(None, []).eval.lora.target_modules == "auto"  # the default
    t5 = load_model_and_tokenizer(DEFAULT_MODEL).model
    assert resolve_target_modules("auto", t5) == ["q", "v"]
    llama = load_model_and_tokenizer(llama_dir).model
    assert resolve_target_modules("auto", llama) == ["q_proj", "v_proj"]
    neox = load_model_and_tokenizer(build_causal_model(tmp_path / "neox", "gpt_neox")).model
    assert resolve_target_modules("auto", neox) == ["query_key_value"]
    # A list is kept as written when it matches.
    assert resolve_target_modules(["k_proj", "o_proj"], llama) == ["k_proj", "o_proj"]


def test_a_list_matching_nothing_names_the_models_linear_modules(llama_dir: Path) -> None:
    llama = load_model_and_tokenizer(llama_dir).model
    assert linear_module_names(llama) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"
    ]
    # T5's names on a Llama: the old default's failure, now one line naming what exists.
    with pytest.raises(ConfigError) as error:
        resolve_target_modules(["q", "v"], llama)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("eval.lora.target_modules: ['q', 'v'] matches no module")
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in message
    # The batched engine resolves the same way (and leaves the model untouched on error).
    with pytest.raises(ConfigError, match=r"eval\.lora\.target_modules"):
        MultiLoraModel(llama, [], load_config(None, ["eval.lora.target_modules=[q]"]).eval.lora,
                       architecture="causal")
    assert all(p.requires_grad for p in llama.parameters())


def test_auto_without_a_default_for_the_architecture_is_one_line(llama_dir: Path) -> None:
    llama = load_model_and_tokenizer(llama_dir).model
    llama.config.model_type = "not_a_known_architecture"
    with pytest.raises(ConfigError, match=r"^eval\.lora\.target_modules: auto has no default .*"
                                          r"q_proj, k_proj"):
        resolve_target_modules("auto", llama)


def test_a_single_name_is_not_silently_taken_as_a_list() -> None:
    with pytest.raises(ConfigError, match=r"eval\.lora\.target_modules: must be auto or a list"):
        load_config(None, ["eval.lora.target_modules=q_proj"])


def test_auto_keeps_the_keys_of_the_old_t5_default() -> None:
    auto = load_config(None, [])
    spelled = load_config(None, ["eval.lora.target_modules=[q, v]"])  # the former default
    assert _eval_key(auto, "ckpt@6", PLAN) == _eval_key(spelled, "ckpt@6", PLAN)
    other = load_config(None, ["eval.lora.target_modules=[q, k, v]"])
    assert _eval_key(other, "ckpt@6", PLAN) != _eval_key(auto, "ckpt@6", PLAN)
    # chat_template: false is what every run before the setting was: the keys stay.
    dumped = auto.model_dump(mode="json")
    del dumped["model"]["chat_template"]
    assert result_relevant(dumped) == result_relevant(auto)
    chat = load_config(None, ["model.chat_template=true"])
    assert _train_key(chat) != _train_key(auto)


def test_auto_on_a_llama_keys_and_records_the_resolved_modules(
    llama_dir: Path, tmp_path: Path
) -> None:
    common = ["eval.max_tasks=1", "eval.shots=[0, 5]", "eval.transfer_contexts=[none]",
              "data.splits.unseen_test_size=4"]
    auto = load_config(None, [f"model.name_or_path={llama_dir}", *common])
    spelled = load_config(None, [f"model.name_or_path={llama_dir}", *common,
                                 "eval.lora.target_modules=[q_proj, v_proj]"])
    assert _eval_key(auto, "ckpt@6", PLAN) == _eval_key(spelled, "ckpt@6", PLAN)
    session = open_session(auto, llama_dir, tmp_path / "auto")
    # The run record states the modules the LoRAs adapt, not "auto".
    assert "target_modules:\n    - q_proj\n    - v_proj\n" in (
        tmp_path / "auto" / "config.yaml"
    ).read_text()
    _, auto_hash = plan_cells(session)
    _, spelled_hash = plan_cells(open_session(spelled, llama_dir, tmp_path / "spelled"))
    assert auto_hash == spelled_hash  # the results' cells are the same cells
