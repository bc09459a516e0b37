"""`itransfer quickstart --family causal`: the same experiment on the decoder-only default."""

from __future__ import annotations

import pytest
import typer

from itransfer.cli.run import quickstart_config, quickstart_overrides
from itransfer.experiments.definition import load_experiment
from itransfer.models.loading import load_model_and_tokenizer
from itransfer.models.lora_targets import resolve_target_modules


def test_causal_family_runs_every_model_of_the_quickstart_on_tiny_llama() -> None:
    experiment = load_experiment(quickstart_config(),
                                 overrides=quickstart_overrides("causal", None))
    configs = [experiment.base, *experiment.variants.values()]
    assert {config.model.name_or_path for config in configs} == {"itransfer:tiny-llama"}
    # Nothing else moves: the seq2seq family's experiment differs only in the model.
    reference = load_experiment(quickstart_config(),
                                overrides=quickstart_overrides("seq2seq", None))
    assert reference.base.model.name_or_path == "itransfer:tiny-t5"
    expected = reference.base.model_copy(deep=True)
    expected.model.name_or_path = "itransfer:tiny-llama"
    assert experiment.base == expected
    assert experiment.spec.sections == reference.spec.sections


def test_the_users_set_wins_over_the_family() -> None:
    overrides = quickstart_overrides("causal", ["eval.lora.target_modules=[q_proj,k_proj,v_proj]"])
    experiment = load_experiment(quickstart_config(), scale="small", overrides=overrides)
    assert experiment.base.eval.lora.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert experiment.base.train.steps == 2000  # the scale still applies


def test_the_lora_targets_resolve_to_tiny_llamas_projections() -> None:
    model = load_model_and_tokenizer("itransfer:tiny-llama").model
    setting = load_experiment(quickstart_config(), overrides=quickstart_overrides(
        "causal", None)).base.eval.lora.target_modules
    assert resolve_target_modules(setting, model) == ["q_proj", "v_proj"]


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="seq2seq, causal"):
        quickstart_overrides("encoder", None)
