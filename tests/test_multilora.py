"""The batched multi-adapter LoRA engine against the sequential PEFT reference (§3.1)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from itransfer.config.schema import DataConfig, FewShotLoraConfig
from itransfer.data import build_context, open_benchmark
from itransfer.encoding.examples import ExampleEncoder, collate
from itransfer.eval.lora import (
    TransferCell,
    _base_module_name,
    epoch_batches,
    train_cell_peft,
)
from itransfer.eval.multilora import MultiLoraModel, train_cells_batched
from itransfer.models.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    load_model_and_tokenizer,
    resolve_model_source,
)

CPU = torch.device("cpu")
# Small batches and 2 epochs keep the run short; k = 5, 10, 20 give 4, 6 and 10 steps, and the
# k = 5 and k = 10 cells end each epoch with a partial batch.
SETTINGS = FewShotLoraConfig(dropout=0.0, batch_size=4, epochs=2)
SHOTS = (5, 10, 20)


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model_and_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def cells(loaded: LoadedModel) -> list[TransferCell]:
    benchmark = open_benchmark(DataConfig(), 0)
    encoder = ExampleEncoder(
        loaded.tokenizer, "seq2seq", build_context("none"),
        max_source_length=128, max_target_length=32,
    )
    unseen = sorted(benchmark.selection.groups()["unseen"])[:len(SHOTS)]
    built = []
    for name, shots in zip(unseen, SHOTS, strict=True):
        task = benchmark.task(name)
        pool = benchmark.split(name).few_shot_subset(shots, seed=0)
        examples = tuple(encoder.encode(task, instance) for instance in pool)
        built.append(TransferCell(name, shots, "none", 0, examples))
    return built


def _model_with_dropout(rate: float, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The bundled T5 built with its own dropout at ``rate`` (it was pre-trained with none)."""
    from transformers import AutoModelForSeq2SeqLM

    source, _ = resolve_model_source(DEFAULT_MODEL)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        source, dropout_rate=rate, use_safetensors=True, local_files_only=True
    )
    return model.to(dtype)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _eval_batch(cells: list[TransferCell], pad_token_id: int) -> dict[str, torch.Tensor]:
    examples = [cell.train_examples[0] for cell in cells]
    return collate(examples, pad_token_id=pad_token_id, architecture="seq2seq")


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    with torch.no_grad():
        return model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
        ).logits


def test_step_counts_differ(cells: list[TransferCell]) -> None:
    # The test below is only meaningful if cells end at different global steps and some
    # batches are partial.
    schedules = [epoch_batches(cell, SETTINGS) for cell in cells]
    assert [len(steps) for steps in schedules] == [4, 6, 10]
    assert any(len(batch) < SETTINGS.batch_size for steps in schedules for batch in steps)


def test_batched_training_matches_sequential_peft(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    # float64: in float32, rounding differences in a gradient element near zero flip the sign of
    # Adam's first normalised steps and leave ~1e-4 differences; in float64 only a real
    # difference in what a cell trains on (steps, batches, masking, clipping) shows.
    model = load_model_and_tokenizer(DEFAULT_MODEL).model.double()
    pad = loaded.tokenizer.pad_token_id
    common = {"pad_token_id": pad, "architecture": "seq2seq", "device": CPU}
    peft_losses, peft_weights = [], []
    for cell in cells:
        peft_model, losses = train_cell_peft(model, cell, SETTINGS, **common)
        weights = {}
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                base_name = _base_module_name(name)
                weights[base_name, "A"] = module.lora_A["default"].weight.detach().clone()
                weights[base_name, "B"] = module.lora_B["default"].weight.detach().clone()
        peft_losses.append(losses)
        peft_weights.append(weights)
        model = peft_model.unload()

    # Chunks of 7 examples: the 18-example first step needs three accumulated passes.
    result = train_cells_batched(model, cells, SETTINGS, max_examples_per_pass=7, **common)
    try:
        for c, cell in enumerate(cells):
            assert len(result.losses[c]) == len(epoch_batches(cell, SETTINGS))
            # The per-token cross-entropy runs in float32 (token_losses' logits.float()).
            assert result.losses[c] == pytest.approx(peft_losses[c], abs=1e-5)
            assert set(peft_weights[c]) == {
                (name, part) for name in result.adapters.layers for part in "AB"
            }
            for (name, part), expected in peft_weights[c].items():
                layer = result.adapters.layers[name]
                actual = (layer.lora_A if part == "A" else layer.lora_B)[c]
                torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)
    finally:
        result.adapters.remove()


def test_routing_matches_exported_peft_adapter_and_base(
    loaded: LoadedModel, cells: list[TransferCell], tmp_path: Path
) -> None:
    from peft import PeftModel

    model, pad = loaded.model, loaded.tokenizer.pad_token_id
    before = _snapshot(model)
    batch = _eval_batch(cells, pad)
    base_logits = _logits(model, batch)
    lora = FewShotLoraConfig(batch_size=4, epochs=1)  # dropout on: export must not depend on it
    # The last cell has k = 0: its adapter is never trained.
    untrained = TransferCell(cells[0].task, 0, "none", 0, ())
    result = train_cells_batched(
        model, [*cells[:2], untrained], lora,
        pad_token_id=pad, architecture="seq2seq", device=CPU,
    )
    adapters = result.adapters
    assert result.losses[2] == []
    with adapters.route([0, 1, 2]):
        mixed = _logits(model, batch)
    with adapters.route([0, 0, 0]):
        cell0 = _logits(model, batch)
    with adapters.route([2, 2, 2]):
        untrained_logits = _logits(model, batch)
    exported = adapters.export_peft_adapter(0, tmp_path / "cell0")
    adapters.export_peft_adapter(0, tmp_path / "cell0")  # overwriting an export is atomic too
    adapters.remove()

    assert not torch.allclose(cell0, base_logits, atol=1e-3)  # training changed something
    torch.testing.assert_close(mixed[0], cell0[0])
    torch.testing.assert_close(mixed[2], base_logits[2])
    torch.testing.assert_close(untrained_logits, base_logits)

    # The base model is back exactly: same modules, weights, flags.
    assert not any(type(m).__name__ == "MultiLoraLinear" for m in model.modules())
    after = _snapshot(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(_logits(model, batch), base_logits, atol=0, rtol=0)

    peft_model = PeftModel.from_pretrained(model, exported)
    peft_model.eval()
    try:
        torch.testing.assert_close(_logits(peft_model, batch), cell0, atol=1e-5, rtol=1e-5)
    finally:
        peft_model.unload()


def test_routed_greedy_generation_uses_each_rows_adapter(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    model, pad = loaded.model, loaded.tokenizer.pad_token_id
    batch = _eval_batch(cells, pad)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    adapters = MultiLoraModel(model, cells, SETTINGS, architecture="seq2seq")
    try:
        with torch.no_grad():
            for layer in adapters.layers.values():
                layer.lora_B.normal_(std=0.5)  # nonzero B so every adapter changes the model
        options = {"max_new_tokens": 6, "do_sample": False, "use_cache": True}
        with adapters.route([0, 1, 2]), torch.no_grad():
            together = model.generate(**inputs, **options)
        for c in range(len(cells)):
            with adapters.route([c]), torch.no_grad():
                alone = model.generate(
                    input_ids=inputs["input_ids"][c : c + 1],
                    attention_mask=inputs["attention_mask"][c : c + 1], **options,
                )
            width = alone.shape[1]
            assert torch.equal(together[c, :width], alone[0])
        with pytest.raises(RuntimeError, match="outside"):
            model(**inputs, decoder_input_ids=batch["labels"].clamp(min=0))
    finally:
        adapters.remove()


def test_lm_head_as_a_lora_target(loaded: LoadedModel, cells: list[TransferCell]) -> None:
    # The output layer routes each batch row to its own adapter, so the loss must not narrow
    # its input to the target positions (token_losses leaves such heads alone).
    lora = FewShotLoraConfig(dropout=0.0, batch_size=4, epochs=1, target_modules=["q", "lm_head"])
    model = load_model_and_tokenizer(DEFAULT_MODEL).model.double()
    common = {"pad_token_id": loaded.tokenizer.pad_token_id, "architecture": "seq2seq",
              "device": CPU}
    expected = []
    for cell in cells[:2]:
        peft_model, losses = train_cell_peft(model, cell, lora, **common)
        expected.append(losses)
        model = peft_model.unload()
    result = train_cells_batched(model, cells[:2], lora, **common)
    try:
        assert "lm_head" in result.adapters.layers
        for c in range(2):
            assert result.losses[c] == pytest.approx(expected[c], abs=1e-5)
    finally:
        result.adapters.remove()


def test_a_cells_dropout_does_not_depend_on_what_ran_before(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    # With dropout, a cell's result must be the same whether it runs first or after others
    # (a sharded evaluation gives each process different cells before it) and in either engine
    # must not move the caller's random state.
    lora = FewShotLoraConfig(dropout=0.3, batch_size=4, epochs=1)
    model = _model_with_dropout(0.1)
    common = {"pad_token_id": loaded.tokenizer.pad_token_id, "architecture": "seq2seq",
              "device": CPU}

    def peft_losses(cell: TransferCell) -> list[float]:
        nonlocal model
        peft_model, losses = train_cell_peft(model, cell, lora, **common)
        model = peft_model.unload()
        return losses

    torch.manual_seed(1)
    alone = peft_losses(cells[1])
    state = torch.random.get_rng_state()
    peft_losses(cells[0])
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(2)
    after_another = peft_losses(cells[1])
    assert after_another == alone
    assert peft_losses(cells[2]) != peft_losses(replace(cells[2], seed=1))

    def batched_losses() -> list[list[float]]:
        result = train_cells_batched(model, cells[:2], lora, **common)
        result.adapters.remove()
        return result.losses

    torch.manual_seed(3)
    first = batched_losses()
    torch.manual_seed(4)
    assert batched_losses() == first


def _adapter_weights(result, c: int) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{part}": (layer.lora_A if part == "A" else layer.lora_B)[c].detach().clone()
        for name, layer in result.adapters.layers.items() for part in "AB"
    }


def test_batched_equals_peft_with_dropout_on(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    # Both engines draw each example's masks from its key (keyed_dropout), so with the default
    # LoRA dropout and the model's own dropout on they still train the same adapters.
    lora = SETTINGS.model_copy(update={"dropout": FewShotLoraConfig().dropout, "epochs": 1})
    model = _model_with_dropout(0.1, torch.float64)
    common = {"pad_token_id": loaded.tokenizer.pad_token_id, "architecture": "seq2seq",
              "device": CPU}
    cells = cells[:2]
    peft_losses = []
    for cell in cells:
        peft_model, losses = train_cell_peft(model, cell, lora, **common)
        peft_losses.append(losses)
        model = peft_model.unload()
    no_dropout = train_cells_batched(
        model, cells, SETTINGS.model_copy(update={"epochs": 1}), **common
    )
    no_dropout.adapters.remove()
    result = train_cells_batched(model, cells, lora, max_examples_per_pass=7, **common)
    result.adapters.remove()
    for c in range(len(cells)):
        assert result.losses[c] == pytest.approx(peft_losses[c], abs=1e-5)
        # Dropout really is on: without it the losses are different.
        assert result.losses[c] != pytest.approx(no_dropout.losses[c], abs=1e-3)


def test_a_cell_trains_the_same_adapter_in_any_group_and_pass_size(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    # eval.cells_per_group, eval.max_examples_per_pass / max_tokens_per_pass and sharding over
    # processes only change which cells share a pass and how it is padded: at the default
    # dropout (LoRA and model) the cell's adapter must not move beyond float64 rounding.
    lora = SETTINGS.model_copy(update={"dropout": FewShotLoraConfig().dropout})
    model = _model_with_dropout(0.1, torch.float64)
    common = {"pad_token_id": loaded.tokenizer.pad_token_id, "architecture": "seq2seq",
              "device": CPU}
    lora = lora.model_copy(update={"epochs": 1})
    cell = cells[1]
    # Cheap company: the k = 5 cell under 39 other seeds.
    others = [replace(cells[0], seed=seed) for seed in range(1, 40)]
    forty = [*others[:20], cell, *others[20:]]
    runs = {
        "alone": ([cell], 0, {}),
        "group of 3, passes of <= 64 rows and 4,096 tokens": (
            [cells[0], cell, cells[2]], 1,
            {"max_examples_per_pass": 64, "max_tokens_per_pass": 4096},
        ),
        "group of 40, passes of 7 rows": (forty, 20, {"max_examples_per_pass": 7}),
    }
    weights, losses = {}, {}
    for label, (group, index, knobs) in runs.items():
        assert len(group) in (1, 3, 40)
        result = train_cells_batched(model, group, lora, **common, **knobs)
        weights[label] = _adapter_weights(result, index)
        losses[label] = result.losses[index]
        result.adapters.remove()
    reference = weights.pop("alone")
    for label, got in weights.items():
        assert losses[label] == pytest.approx(losses["alone"], abs=1e-12), label
        for name, expected in reference.items():
            # Pass splits reorder float64 sums (~1e-13); another mask would move it by ~1e-3.
            torch.testing.assert_close(got[name], expected, atol=1e-10, rtol=0, msg=label)


def test_a_causal_group_matches_sequential_peft_with_a_target_only_example(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decoder-only cells, one example without any source: a causal LM cannot predict its
    first token, so that example has one target token fewer, as PEFT's loss counts it."""
    import json

    from safetensors import safe_open

    from causal_models import build_causal_model
    from itransfer.encoding.examples import EncodedExample

    loaded = load_model_and_tokenizer(build_causal_model(tmp_path / "llama"))
    model = loaded.model.double()
    generator = torch.Generator().manual_seed(0)

    def example(source: int, target: int) -> EncodedExample:
        ids = torch.randint(5, 200, (source + target,), generator=generator).tolist()
        return EncodedExample(tuple(ids[:source]), tuple(ids[source:]))

    cells = [
        TransferCell("task_a", 3, "none", 0, (example(0, 4), example(6, 3), example(9, 2))),
        TransferCell("task_b", 2, "none", 0, (example(5, 5), example(3, 1))),
    ]
    lora = FewShotLoraConfig(dropout=0.0, batch_size=2, epochs=2, weight_decay=0.1,
                          target_modules=["q_proj", "v_proj"])
    common = {"pad_token_id": loaded.tokenizer.pad_token_id, "architecture": "causal",
              "device": CPU}
    expected = []
    for cell in cells:
        peft_model, losses = train_cell_peft(model, cell, lora, **common)
        expected.append(losses)
        model = peft_model.unload()
    steps: list[tuple[int, int]] = []
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    with caplog.at_level("INFO", logger="itransfer.eval.multilora"):
        result = train_cells_batched(model, cells, lora, max_tokens_per_pass=16,
                                     progress=lambda step, total: steps.append((step, total)),
                                     **common)
    try:
        # Only the adapters train: the base weights stay frozen while the group is wrapped.
        assert not any(p.requires_grad for n, p in model.named_parameters() if "lora" not in n)
        assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # k = 3 at batch 2: 2 steps an epoch
        assert "training 2 LoRA cells together in 4 global steps" in caplog.messages
        for c in range(len(cells)):
            assert result.losses[c] == pytest.approx(expected[c], abs=1e-6)
        exported = result.adapters.export_peft_adapter(1, tmp_path / "cell1")
        config = json.loads((exported / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["task_type"] == "CAUSAL_LM"
        with safe_open(str(exported / "adapter_model.safetensors"), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
        batch = collate([cells[0].train_examples[1]] * 2, pad_token_id=0, architecture="causal")
        with pytest.raises(RuntimeError, match=r"^MultiLoraLinear called outside "
                                               r"MultiLoraModel\.route\(indices\)$"):
            model(input_ids=batch["input_ids"])
        with pytest.raises(RuntimeError) as error, result.adapters.route([0]):
            model(input_ids=batch["input_ids"])
        assert str(error.value) == ("batch has 2 rows but route() got 1 indices (for beam "
                                    "search / num_return_sequences, repeat_interleave the "
                                    "indices)")
    finally:
        result.adapters.remove()
    assert result.adapters.remove() is model  # a second removal changes nothing
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def test_an_empty_group_trains_nothing(loaded: LoadedModel) -> None:
    model = loaded.model
    steps: list[tuple[int, int]] = []
    result = train_cells_batched(model, [], SETTINGS,
                                 pad_token_id=0, architecture="seq2seq", device=CPU,
                                 progress=lambda step, total: steps.append((step, total)))
    result.adapters.remove()
    assert result.losses == [] and steps == []


def test_a_target_that_is_not_linear_is_refused_by_name_and_type(
    loaded: LoadedModel, cells: list[TransferCell]
) -> None:
    """The engine adapts nn.Linear layers only; another kind of module named as a target is
    refused before the model is touched, naming the module and its type."""
    model = loaded.model
    lora = SETTINGS.model_copy(update={"target_modules": ["shared"]})
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    with pytest.raises(TypeError) as error:
        MultiLoraModel(model, cells, lora, architecture="seq2seq")
    assert str(error.value) == "target module shared is Embedding, not nn.Linear"
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
