"""The embedded default's tokenizer: SentencePiece-style BPE with T5's special-token layout."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SENTINELS = 100


def train_tokenizer(documents: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE with T5's layout: pad/eos/unk first, the 100 sentinels last.

    Whitespace runs (newlines included) become one space, as T5's SentencePiece model does.
    BPE rather than T5's Unigram because the ``tokenizers`` Unigram trainer breaks score ties
    differently on every run (so token ids, and the whole recipe, would not be reproducible);
    its BPE trainer is deterministic.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - NUM_SENTINELS,
        special_tokens=["<pad>", "</s>", "<unk>"],
        # Rare scripts in the corpus would otherwise spend hundreds of ids on single characters.
        limit_alphabet=1000,
        min_frequency=2,
        max_token_length=16,
    )
    tokenizer.train_from_iterator(documents, trainer)
    # Added in reverse so <extra_id_0> gets the highest id, as in T5's vocabulary.
    sentinels = [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in reversed(sentinels)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=sentinels,
    )
    assert (wrapped.pad_token_id, wrapped.eos_token_id, wrapped.unk_token_id) == (
        PAD_ID, EOS_ID, UNK_ID,
    ), "trainer did not put the special tokens first"
    return wrapped


def sentinel_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(NUM_SENTINELS)]
