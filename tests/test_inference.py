"""Evaluation batches: length-sorted, capped by rows and padded tokens, results in input order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from itransfer.encoding.examples import EncodedExample
from itransfer.eval.inference import EvalItem, evaluate_items, plan_batches
from itransfer.models.loading import load_model_and_tokenizer


def test_batches_respect_row_and_token_caps() -> None:
    lengths = [10, 50, 20, 40, 30]
    # Sorted: 10, 20, 30 fit (3 x 30 = 90 <= 100); 40 would make 4 x 40 = 160; 40 and 50: 100.
    assert plan_batches(lengths, max_rows=10, max_tokens=100) == [[0, 2, 4], [3, 1]]
    assert plan_batches(lengths, max_rows=2) == [[0, 2], [4, 3], [1]]
    # An item longer than the budget still gets a batch of its own.
    assert plan_batches([500, 5], max_rows=8, max_tokens=100) == [[1], [0]]
    # Source and target pad separately: 100+1 and 1+100 together pad to 2 x 200 tokens.
    assert plan_batches([(100, 1), (1, 100)], max_rows=8, max_tokens=202) == [[0], [1]]
    assert plan_batches([(100, 1), (90, 2)], max_rows=8, max_tokens=204) == [[1, 0]]
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches(lengths, max_rows=0)


def test_batched_evaluation_equals_one_item_at_a_time(tiny_model_dir: Path) -> None:
    loaded = load_model_and_tokenizer(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    items = []
    for length in [3, 17, 9, 30, 5, 12, 22, 7]:
        source = torch.randint(5, len(loaded.tokenizer) - 1, (length,), generator=generator)
        target = torch.randint(5, len(loaded.tokenizer) - 1, (1 + length % 4,), generator=generator)
        example = EncodedExample(tuple(source.tolist()), (*target.tolist(), 1))
        items.append(EvalItem(example, ("reference",)))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    batched = evaluate_items(model, tokenizer, "seq2seq", items, batch_size=8,
                             max_batch_tokens=64, max_new_tokens=6)
    for item, result in zip(items, batched, strict=True):
        # The plain way: the model's own loss and generate() on this item alone.
        source = torch.tensor([item.example.source_ids])
        with torch.no_grad():
            loss = model(input_ids=source, labels=torch.tensor([item.example.target_ids])).loss
            output = model.generate(input_ids=source, max_new_tokens=6, do_sample=False)
        assert result.loss == pytest.approx(float(loss), abs=1e-5)
        assert result.prediction == tokenizer.decode(output[0], skip_special_tokens=True)
