"""The two renderings of a source: assembled from pieces tokenized apart, and the joined text.

For the bundled tokenizer (and T5's: both split words at whitespace) the fast, assembled path
must give exactly the ids, cuts and cut counts of the reference, which tokenizes the joined
text and searches for each cut by tokenizing candidates. Every bundled task, every context,
budgets that cut exemplars, instructions and inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from itransfer.data.contexts import CONTEXTS, build_context
from itransfer.data.sni import Task, parse_task
from itransfer.encoding.examples import ExampleEncoder
from itransfer.models.loading import bundled_model_dir, load_model_and_tokenizer

BUNDLED_TASKS = Path(__file__).resolve().parents[1] / "src/itransfer/bundled/sni/tasks"


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    """Every bundled task, each with its first instance and its longest input."""
    chosen = []
    for path in sorted(BUNDLED_TASKS.glob("*.json")):
        task = parse_task(path)
        longest = max(task.instances, key=lambda instance: len(instance.input))
        chosen.append(Task(**{**task.__dict__, "instances": (task.instances[0], longest)}))
    return chosen


@pytest.fixture(scope="module")
def bundled_tokenizer():
    return load_model_and_tokenizer(bundled_model_dir()).tokenizer


def _cuts(tasks: list[Task], encoded) -> dict[str, int]:
    """Each task's examples whose input was cut, as training and evaluation count them."""
    counts = {task.name: sum(example.input_cut for example in rows)
              for task, rows in zip(tasks, encoded, strict=True)}
    return {name: count for name, count in counts.items() if count}


def _both_paths(encoder: ExampleEncoder, tasks: list[Task]):
    assert encoder.rendering == "assembled"
    assembled = [list(encoder.encode_task(task, task.instances)) for task in tasks]
    encoder.assembles = False
    joined = [list(encoder.encode_task(task, task.instances)) for task in tasks]
    return assembled, _cuts(tasks, assembled), joined, _cuts(tasks, joined)


@pytest.mark.parametrize("context", sorted(CONTEXTS))
@pytest.mark.parametrize("budget", [40, 200])
def test_assembled_sources_equal_the_joined_texts_ids(
    tasks: list[Task], bundled_tokenizer, context: str, budget: int
) -> None:
    encoder = ExampleEncoder(bundled_tokenizer, "seq2seq", build_context(context, 3),
                             max_source_length=budget, max_target_length=16)
    assembled, assembled_cuts, joined, joined_cuts = _both_paths(encoder, tasks)
    for task, fast, reference in zip(tasks, assembled, joined, strict=True):
        assert fast == reference, task.name
    assert assembled_cuts == joined_cuts
    assert all(len(example.source_ids) <= budget for rows in assembled for example in rows)
    if budget == 40:  # the small budget cuts inputs too, not just contexts
        assert sum(example.input_cut for rows in assembled for example in rows) > 10


def test_a_decoder_source_starts_with_bos_in_both_paths(tasks: list[Task], bundled_tokenizer,
                                                       tmp_path: Path) -> None:
    from tokenizers import processors

    tokenizer = bundled_tokenizer.__class__.from_pretrained(bundled_model_dir())
    tokenizer.add_special_tokens({"bos_token": "<extra_id_1>"})
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<extra_id_1> $A", special_tokens=[("<extra_id_1>", bos)])
    encoder = ExampleEncoder(tokenizer, "causal", build_context("exemplars", 3),
                             max_source_length=64, max_target_length=16)
    assembled, assembled_cuts, joined, joined_cuts = _both_paths(encoder, tasks)
    assert assembled == joined and assembled_cuts == joined_cuts
    assert all(example.source_ids[0] == bos and example.source_ids.count(bos) == 1
               for rows in assembled for example in rows)


def _trained(pre_tokenizer, decoder, normalizer=None) -> PreTrainedTokenizerFast:
    texts = [instance.input for path in sorted(BUNDLED_TASKS.glob("*.json"))[:20]
             for instance in parse_task(path).instances[:30]]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoder
    if normalizer is not None:
        backend.normalizer = normalizer
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>")


def test_byte_level_bpe_assembles_and_keeps_the_joints_spaces(tasks: list[Task]) -> None:
    """GPT-2-style tokenizers keep a word's leading space in its token: the input piece carries
    the whitespace that joins it, so uncut sources equal the joined text's ids."""
    tokenizer = _trained(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel())
    for context in ("exemplars", "definition+exemplars"):
        encoder = ExampleEncoder(tokenizer, "causal", build_context(context, 3),
                                 max_source_length=100_000, max_target_length=16)
        assert encoder.rendering == "assembled"
        for task in tasks:
            for fast, instance in zip(encoder.encode_task(task, task.instances),
                                      task.instances, strict=True):
                assert not fast.input_cut
                assert fast == encoder.encode_joined(task, instance)
    # A cut input keeps its first words as written: the ids are those of that text.
    encoder = ExampleEncoder(tokenizer, "causal", build_context("none"), max_source_length=30,
                             max_target_length=16)
    task = tasks[0]
    for example, instance in zip(encoder.encode_task(task, task.instances),
                                 task.instances, strict=True):
        if example.input_cut:
            assert 0 < len(example.source_ids) <= 30
            text = tokenizer.decode(example.source_ids)
            assert instance.input.startswith(text)
            assert list(example.source_ids) == tokenizer(text)["input_ids"]


def test_a_tokenizer_whose_pieces_do_not_join_uses_the_joined_text(tasks: list[Task]) -> None:
    """SentencePiece-style BPE that marks only the text's first word (``prepend_scheme:
    first``): a piece tokenized alone would start with a marker the joined text lacks."""
    tokenizer = _trained(pre_tokenizers.Metaspace(prepend_scheme="first", split=False),
                         decoders.Metaspace(prepend_scheme="first", split=False),
                         normalizers.Replace(" ", "▁"))
    encoder = ExampleEncoder(tokenizer, "causal", build_context("exemplars", 3),
                             max_source_length=48, max_target_length=16)
    assert encoder.rendering == "joined"
    task = tasks[1]
    assert [example for example in encoder.encode_task(task, task.instances)] == [
        encoder.encode_joined(task, instance) for instance in task.instances]


def test_a_truncating_call_elsewhere_does_not_truncate_the_encoder(
    tasks: list[Task], bundled_tokenizer
) -> None:
    """The wrapper leaves truncation set on the shared backend after a truncating call; the
    encoder's direct backend calls must not inherit it."""
    tokenizer = bundled_tokenizer.__class__.from_pretrained(bundled_model_dir())
    encoder = ExampleEncoder(tokenizer, "seq2seq", build_context("exemplars", 3),
                             max_source_length=512, max_target_length=64)
    task = tasks[0]
    before = list(encoder.encode_task(task, task.instances))
    tokenizer(["a b c d e f g"], truncation=True, max_length=3)
    assert tokenizer.backend_tokenizer.truncation is not None
    assert list(encoder.encode_task(task, task.instances)) == before
    assert max(len(example.source_ids) for example in before) > 3
