"""Decoder-only models (Llama, GPT-NeoX shapes): formatting, batched generation, both engines.

Every comparison runs in float64 so that only a real difference (a shifted position, a padded
token that leaks into attention, an adapter applied to the wrong row) can show, as in the T5
engine tests of test_multilora.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from causal_models import build_causal_model
from itransfer.config.schema import DataConfig, FewShotLoraConfig
from itransfer.data import build_context, open_benchmark
from itransfer.encoding.examples import IGNORE_INDEX, EncodedExample, ExampleEncoder, collate
from itransfer.errors import ConfigError
from itransfer.eval.inference import EvalItem, evaluate_items
from itransfer.eval.lora import TransferCell, _base_module_name, epoch_batches, train_cell_peft
from itransfer.eval.multilora import train_cells_batched
from itransfer.models.loading import LoadedModel, load_model_and_tokenizer

CPU = torch.device("cpu")
# A prompt 60x longer than the shortest one: the short rows of a batch are mostly padding.
LENGTHS = (2, 120, 9, 37, 4, 64, 17, 3)
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    # The bundled tokenizer with its pad token removed, as many causal tokenizers ship.
    folder = build_causal_model(tmp_path_factory.mktemp("llama") / "m", "llama", pad_token=False)
    return load_model_and_tokenizer(folder)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model_and_tokenizer(
        build_causal_model(tmp_path_factory.mktemp("gpt2") / "m", "gpt2")
    )


@pytest.fixture(scope="module")
def neox(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model_and_tokenizer(
        build_causal_model(tmp_path_factory.mktemp("neox") / "m", "gpt_neox")
    )


def _random_items(vocab: int, eos: int) -> list[EvalItem]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for length in LENGTHS:
        source = torch.randint(3, vocab, (length,), generator=generator).tolist()
        target = torch.randint(3, vocab, (1 + length % 3,), generator=generator).tolist()
        items.append(EvalItem(EncodedExample(tuple(source), (*target, eos)), ("reference",)))
    return items


def _greedy_alone(model: torch.nn.Module, source: tuple[int, ...], eos: int) -> list[int]:
    """Greedy decoding of one unpadded prompt, the whole sequence re-run at every step (no KV
    cache, no padding, positions 0..n-1): what batched cached generation must reproduce."""
    ids = list(source)
    for _ in range(NEW_TOKENS):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits
        ids.append(int(logits[0, -1].argmax()))
        if ids[-1] == eos:
            break
    return ids[len(source):]


def _loss_alone(model: torch.nn.Module, example: EncodedExample) -> float:
    """Mean NLL of the target tokens of unpadded source + target (in the logits' float64;
    the model's own ``loss`` would round to float32)."""
    ids = torch.tensor([example.source_ids + example.target_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    # Position t predicts token t + 1: the target is predicted from the source's last token on.
    start = len(example.source_ids)
    predicting = logits[start - 1 : start - 1 + len(example.target_ids)]
    return float(torch.nn.functional.cross_entropy(
        predicting, torch.tensor(example.target_ids)
    ))


@pytest.mark.parametrize("shape", ["llama", "neox", "gpt2"])
def test_batched_greedy_generation_equals_one_prompt_at_a_time(
    shape: str, request: pytest.FixtureRequest
) -> None:
    loaded: LoadedModel = request.getfixturevalue(shape)
    model = loaded.model.double().eval()
    tokenizer = loaded.tokenizer
    items = _random_items(len(tokenizer), tokenizer.eos_token_id)
    batched = evaluate_items(model, tokenizer, "causal", items, batch_size=len(items),
                             max_batch_tokens=None, max_new_tokens=NEW_TOKENS)
    for item, result in zip(items, batched, strict=True):
        expected = _greedy_alone(model, item.example.source_ids, tokenizer.eos_token_id)
        assert result.prediction == tokenizer.decode(expected, skip_special_tokens=True)
        assert result.loss == pytest.approx(_loss_alone(model, item.example), abs=1e-10)


def test_a_tokenizer_without_pad_token_pads_with_eos_and_keeps_the_vocabulary(
    llama: LoadedModel, tmp_path: Path
) -> None:
    tokenizer, model = llama.tokenizer, llama.model
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)  # nothing was added
    # Training batches pad on the right with EOS, yet labels never train on the padding.
    examples = [EncodedExample((5, 6, 7), (8, tokenizer.eos_token_id)), EncodedExample((5,), (9,))]
    batch = collate(examples, pad_token_id=tokenizer.pad_token_id, architecture="causal")
    assert batch["labels"].tolist()[1] == [IGNORE_INDEX, 9] + [IGNORE_INDEX] * 3
    assert batch["attention_mask"].tolist()[1] == [1, 1, 0, 0, 0]


def test_without_pad_and_eos_tokens_unk_pads_and_without_any_it_is_one_line(
    tmp_path: Path,
) -> None:
    folder = build_causal_model(tmp_path / "m", pad_token=False)
    settings_file = folder / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text())
    del settings["eos_token"]
    settings_file.write_text(json.dumps(settings))
    loaded = load_model_and_tokenizer(folder)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.unk_token == "<unk>"
    assert loaded.model.get_input_embeddings().num_embeddings == len(loaded.tokenizer)
    # No special token at all: an error naming the model, never a silently added token.
    del settings["unk_token"]
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=f"^{folder}: the tokenizer has no pad, eos, unk or bos"):
        load_model_and_tokenizer(folder)


def _encoder(tokenizer, **options) -> ExampleEncoder:
    return ExampleEncoder(tokenizer, "causal", build_context("none"), max_source_length=64,
                          max_target_length=8, **options)


def test_causal_source_and_target_layout(llama: LoadedModel) -> None:
    benchmark = open_benchmark(DataConfig(), 0)
    name = benchmark.selection.unseen[0]
    task, instance = benchmark.task(name), benchmark.split(name).test[0]
    tokenizer = llama.tokenizer
    example = _encoder(tokenizer).encode(task, instance)
    # The bundled (T5-style) tokenizer appends EOS to inputs; a causal source must not end
    # with it, or the model would read "end of text" before every answer.
    assert example.source_ids[-1] != tokenizer.eos_token_id
    assert example.target_ids[-1] == tokenizer.eos_token_id
    assert len(example.target_ids) <= 8
    answer = tokenizer(instance.outputs[0], add_special_tokens=False)["input_ids"]
    assert list(example.target_ids[:-1]) == answer[:7]


CHAT = ("{% for m in messages %}<extra_id_0>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<extra_id_0>assistant\n{% endif %}")


def test_chat_template_wraps_source_and_target_only_when_asked(tmp_path: Path) -> None:
    loaded = load_model_and_tokenizer(build_causal_model(tmp_path / "chat", chat_template=CHAT))
    tokenizer = loaded.tokenizer
    benchmark = open_benchmark(DataConfig(), 0)
    name = benchmark.selection.unseen[0]
    task, instance = benchmark.task(name), benchmark.split(name).test[0]
    plain = _encoder(tokenizer).encode(task, instance)
    chat = _encoder(tokenizer, chat_template=True).encode(task, instance)
    source_text = _encoder(tokenizer).source_text(task, instance.input)
    # Off (the default): the plain text, the template is not used.
    assert list(plain.source_ids) == tokenizer(source_text, add_special_tokens=False)["input_ids"]
    # On: the user turn and the assistant's prompt; the target is the assistant turn.
    rendered = f"<extra_id_0>user\n{source_text}</s><extra_id_0>assistant\n"
    assert list(chat.source_ids) == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert chat.target_ids == plain.target_ids  # this template's turn ends with EOS, as plain
    with pytest.raises(ConfigError, match=r"model\.chat_template.*no chat template"):
        _encoder(llama_tokenizer_without_template(tmp_path), chat_template=True)


def llama_tokenizer_without_template(tmp_path: Path):
    return load_model_and_tokenizer(build_causal_model(tmp_path / "plain")).tokenizer


def test_a_tokenizer_that_adds_bos_starts_every_source_with_it(tmp_path: Path) -> None:
    from tokenizers import processors

    tokenizer = load_model_and_tokenizer(build_causal_model(tmp_path / "m")).tokenizer
    tokenizer.add_special_tokens({"bos_token": "<extra_id_1>"})  # an existing token: no resize
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<extra_id_1> $A", special_tokens=[("<extra_id_1>", bos)]
    )
    assert tokenizer("a")["input_ids"][0] == bos  # as Llama's tokenizers do
    encoder = _encoder(tokenizer)
    source = encoder._source_ids("Answer: yes")
    assert source[0] == bos and source.count(bos) == 1
    assert encoder._target_ids("yes")[0] != bos


def _cells(loaded: LoadedModel) -> list[TransferCell]:
    benchmark = open_benchmark(DataConfig(), 0)
    encoder = ExampleEncoder(loaded.tokenizer, "causal", build_context("none"),
                             max_source_length=96, max_target_length=16)
    cells = []
    for name, shots in zip(sorted(benchmark.selection.groups()["unseen"])[:2], (5, 10),
                           strict=True):
        task = benchmark.task(name)
        pool = benchmark.split(name).few_shot_subset(shots, seed=0)
        cells.append(TransferCell(name, shots, "none", 0,
                                  tuple(encoder.encode(task, instance) for instance in pool)))
    return cells


# PEFT's defaults (what `auto` means): Llama's q_proj, v_proj; GPT-2's fused c_attn, a Conv1D.
AUTO_TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}


@pytest.mark.parametrize("shape", sorted(AUTO_TARGETS))
def test_batched_lora_engine_equals_peft_engine(shape: str, request: pytest.FixtureRequest) -> None:
    loaded: LoadedModel = request.getfixturevalue(shape)
    model, tokenizer = loaded.model.double(), loaded.tokenizer
    settings = FewShotLoraConfig(dropout=0.0, batch_size=4, epochs=2)  # target_modules: auto
    cells = _cells(loaded)
    common = {"pad_token_id": tokenizer.pad_token_id, "architecture": "causal", "device": CPU}
    # Each cell's first examples as test items: short and long prompts in one batch.
    tests = [EvalItem(example, ("r",)) for cell in cells for example in cell.train_examples[:3]]
    peft = {"losses": [], "weights": [], "results": []}
    for c, cell in enumerate(cells):
        peft_model, losses = train_cell_peft(model, cell, settings, **common)
        peft["losses"].append(losses)
        peft["weights"].append({
            (_base_module_name(name), part): getattr(module, f"lora_{part}")["default"].weight
            .detach().clone()
            for name, module in peft_model.named_modules()
            if hasattr(module, "lora_A") and "default" in module.lora_A for part in "AB"
        })
        peft["results"] += evaluate_items(
            peft_model, tokenizer, "causal", tests[3 * c: 3 * c + 3], max_new_tokens=NEW_TOKENS
        )
        model = peft_model.unload()

    result = train_cells_batched(model, cells, settings, max_examples_per_pass=3, **common)
    adapters = result.adapters
    try:
        assert adapters.target_modules == AUTO_TARGETS[shape]
        assert {name.rsplit(".", 1)[-1] for name in adapters.layers} == set(AUTO_TARGETS[shape])
        for c, cell in enumerate(cells):
            assert len(result.losses[c]) == len(epoch_batches(cell, settings))
            assert result.losses[c] == pytest.approx(peft["losses"][c], abs=1e-10)
            assert set(peft["weights"][c]) == {(n, p) for n in adapters.layers for p in "AB"}
            for (name, part), expected in peft["weights"][c].items():
                actual = getattr(adapters.layers[name], f"lora_{part}")[c]
                torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)
        # Evaluation with every row routed to its own adapter, generation through the KV cache.
        routed = [EvalItem(item.example, item.references, adapter=i // 3)
                  for i, item in enumerate(tests)]
        batched = evaluate_items(model, tokenizer, "causal", routed, router=adapters.route,
                                 max_new_tokens=NEW_TOKENS)
        assert model.generation_config.use_cache
    finally:
        adapters.remove()
    for ours, theirs in zip(batched, peft["results"], strict=True):
        assert ours.loss == pytest.approx(theirs.loss, abs=1e-10)
        assert ours.prediction == theirs.prediction
    # Training changed the predictions of at least one row (else equality proves little).
    base = evaluate_items(model, tokenizer, "causal", tests, max_new_tokens=NEW_TOKENS)
    assert [r.loss for r in base] != pytest.approx([r.loss for r in batched], abs=1e-6)
