"""ICL, few-shot transfer (PEFT engine) and seen-task evaluations on a tiny model."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from itransfer.config.schema import load_config
from itransfer.encoding.cache import open_training_set
from itransfer.errors import ITransferError
from itransfer.eval.icl import evaluate_icl
from itransfer.eval.inference import evaluate_items
from itransfer.eval.scoring_files import score_files
from itransfer.eval.seen import evaluate_seen, seen_allocation
from itransfer.eval.session import evaluation_tasks, open_session
from itransfer.eval.transfer import CellWork, HeldTestItems, evaluate_transfer, plan_cells
from itransfer.models.loading import DEFAULT_MODEL, bundled_model_dir
from itransfer.runs import identity


def _config(*overrides: str):
    return load_config(
        None,
        [
            "model.max_source_length=96", "model.max_target_length=16",
            "data.splits.unseen_test_size=8", "eval.max_tasks=2", "eval.max_new_tokens=6",
            "eval.batch_size=8", "eval.lora.epochs=2", "eval.lora.batch_size=8",
            *overrides,
        ],
    )


def test_icl_rows_predictions_and_skip_on_rerun(tiny_model_dir: Path, tmp_path: Path) -> None:
    session = open_session(_config(), tiny_model_dir, tmp_path)
    assert evaluate_icl(session) == 2 * 4  # loss, rougeL, rougeL_recall, exact_match per task
    frame = session.table.read()
    assert set(frame["metric"]) == {"loss", "rougeL", "rougeL_recall", "exact_match"}
    assert set(frame["method"]) == {"icl"} and set(frame["shots"]) == {3}
    assert (frame[frame["metric"] == "loss"]["n"] == 8).all()
    assert frame[frame["metric"] == "loss"]["value"].between(0, 20).all()
    # The predictions file is in the benchmark's format: `itransfer score` re-scores it.
    predictions = sorted((tmp_path / "predictions").glob("icl-*.jsonl"))
    assert len(predictions) == 2
    rescored = score_files(predictions[0], predictions[0])
    task = predictions[0].stem.removeprefix("icl-exemplars-")
    stored = frame[(frame["task"] == task) & (frame["metric"] == "rougeL")]["value"].item()
    assert rescored.overall.rougeL == pytest.approx(stored)
    # Re-running skips finished tasks; forcing appends newer rows.
    assert evaluate_icl(session) == 0
    assert evaluate_icl(session, force=True) == 8
    assert len(session.table.read()) == 8


def test_transfer_k0_is_the_untouched_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config("eval.shots=[0, 5]", "eval.transfer_contexts=[none]", "eval.max_tasks=1")
    session = open_session(config, tiny_model_dir, tmp_path)
    assert evaluate_transfer(session, engine="peft") > 0
    frame = session.table.read()
    losses = frame[(frame["metric"] == "loss") & (frame["split"] == "test")]
    by_shots = dict(zip(losses["shots"], losses["value"], strict=True))
    # k = 0 evaluates the model as is, with the `none` context.
    task = frame["task"].iloc[0]
    items = session.items(session.benchmark.task(task), session.benchmark.split(task).test, "none")
    base = evaluate_items(session.loaded.model, session.loaded.tokenizer, "seq2seq", items,
                          generate=False)
    assert by_shots[0] == pytest.approx(sum(r.loss for r in base) / len(base), abs=1e-5)
    assert by_shots[5] != pytest.approx(by_shots[0], abs=1e-4)  # the adapter changed something
    trained = frame[frame["metric"] == "final_train_loss"]
    assert trained["shots"].tolist() == [5]
    # The LoRA layers were removed again: the base model is what it was.
    assert not any("lora" in name for name, _ in session.loaded.model.named_parameters())


def test_cells_use_nested_few_shot_subsets(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config("eval.shots=[0, 5, 10, 40]", "eval.max_tasks=1")
    session = open_session(config, tiny_model_dir, tmp_path)
    work, _ = plan_cells(session)
    for context in ("none", "exemplars"):
        cells = {w.cell.shots: w.cell for w in work if w.cell.context == context}
        assert [len(cells[k].train_examples) for k in (0, 5, 10, 40)] == [0, 5, 10, 40]
        assert cells[10].train_examples[:5] == cells[5].train_examples
        assert cells[40].train_examples[:10] == cells[10].train_examples
    task = work[0].task.name
    split = session.benchmark.split(task)
    assert not {i.id for i in split.few_shot_pool} & {i.id for i in split.test}
    # Planned cells live until the grid ends: they keep no task's instances, only its test set.
    assert all(w.task.instances == () and w.task.definition for w in work)
    instances = session.benchmark.task(task).instances
    assert len(work[0].test_instances) == len(split.test) < len(instances)


# Three seeds over a pool of 100: two seeds draw the same 20-shot set with probability
# 1 / C(100, 20) ~ 2e-21, so equal sets would be a bug.
SEEDED_GRID = ("eval.shots=[0, 5, 10, 20]", "eval.seeds=[2, 0, 1]", "eval.max_tasks=3",
               "data.splits.few_shot_pool_size=100")
Cells = dict[tuple[str, int, str, int], CellWork]


def _by_cell(work: list[CellWork]) -> Cells:
    return {(w.cell.task, w.cell.shots, w.cell.context, w.cell.seed): w for w in work}


@pytest.mark.parametrize("engine", ["peft", "batched"])
def test_grid_encodes_each_task_and_context_once_when_its_cells_run(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Test items are not held by the planned grid (GBs at full size) but encoded when their
    cells run, once per task and context: a group of 3 cells straddles tasks and contexts."""
    config = _config("eval.shots=[0, 5]", "eval.cells_per_group=3", "eval.lora.epochs=1")
    session = open_session(config, tiny_model_dir, tmp_path)
    encoded: list[tuple[str, str]] = []
    items = session.items

    def counting(task, instances, context):
        encoded.append((task.name, context))
        return items(task, instances, context)

    monkeypatch.setattr(session, "items", counting)
    work, _ = plan_cells(session)
    assert encoded == [] and len(work) == 2 * 2 * 2
    assert evaluate_transfer(session, engine=engine) > 0
    assert sorted(encoded) == sorted({(w.task.name, w.cell.context) for w in work})


def test_each_seed_trains_on_its_own_nested_draw(tiny_model_dir: Path, tmp_path: Path) -> None:
    session = open_session(_config(*SEEDED_GRID), tiny_model_dir, tmp_path)
    cells = _by_cell(plan_cells(session)[0])
    tasks = sorted({task for task, *_ in cells})
    assert len(tasks) == 3
    for task in tasks:
        split = session.benchmark.split(task)
        for context in ("none", "exemplars"):
            # k = 0 trains nothing, so it runs once, under the smallest seed.
            assert [key[3] for key in cells if key[:3] == (task, 0, context)] == [0]
            for seed in (0, 1, 2):
                tuned = {k: cells[(task, k, context, seed)].cell.train_examples
                         for k in (5, 10, 20)}
                expected = tuple(session.items(session.benchmark.task(task),
                                               split.few_shot_subset(20, seed=seed), context))
                assert tuned[20] == tuple(item.example for item in expected)
                assert tuned[10][:5] == tuned[5] and tuned[20][:10] == tuned[10]
            drawn = {frozenset(cells[(task, 20, context, seed)].cell.train_examples)
                     for seed in (0, 1, 2)}
            assert len(drawn) == 3
        # The test set never moves: every cell of the task is evaluated on the same instances.
        mine = [w for key, w in cells.items() if key[0] == task]
        assert all(w.test_instances == split.test for w in mine)
        held = HeldTestItems(session)
        assert len({tuple(item.example for item in held.of(w)) for w in mine
                    if w.cell.context == "none"}) == 1


def test_a_draw_does_not_depend_on_the_rest_of_the_grid(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = open_session(_config(*SEEDED_GRID), tiny_model_dir, tmp_path)
    full_work, settings_hash = plan_cells(session)
    full = _by_cell(full_work)
    tasks = list(dict.fromkeys(key[0] for key in full))
    # One task, one seed, one k, one context: the same examples as in the full grid.
    narrow = session.config.model_copy(update={"eval": session.config.eval.model_copy(
        update={"tasks": [tasks[1]], "seeds": [2], "shots": [10], "transfer_contexts": ["none"]}
    )})
    (only,) = plan_cells(replace(session, config=narrow))[0]
    assert only.cell.train_examples == full[(tasks[1], 10, "none", 2)].cell.train_examples
    # The second of two processes gets every other task, each cell with the same examples.
    second = replace(session, accelerator=SimpleNamespace(process_index=1, num_processes=2))
    shard = _by_cell(plan_cells(second)[0])
    assert {key[0] for key in shard} == {tasks[1]}
    assert all(w.cell == full[key].cell and w.cell_id == full[key].cell_id
               for key, w in shard.items())
    # Another draw scheme is another settings hash, so cells drawn the old way are redone.
    monkeypatch.setattr(identity, "FEW_SHOT_DRAWS", "first-k-of-the-pool")
    assert plan_cells(session)[1] != settings_hash


def test_transfer_rows_record_each_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config("eval.shots=[0, 5]", "eval.seeds=[0, 1]", "eval.transfer_contexts=[none]",
                     "eval.max_tasks=1")
    session = open_session(config, tiny_model_dir, tmp_path)
    evaluate_transfer(session, engine="peft")
    frame = session.table.read()
    losses = frame[(frame["metric"] == "loss") & (frame["split"] == "test")]
    assert sorted(zip(losses["shots"], losses["seed"], strict=True)) == [(0, 0), (5, 0), (5, 1)]
    assert all(f"seed={seed}" in cell for seed, cell in zip(losses["seed"], losses["cell"],
                                                             strict=True))
    tuned = losses[losses["shots"] == 5].set_index("seed")["value"]
    assert tuned[0] != pytest.approx(tuned[1], abs=1e-6)  # other examples, another LoRA
    task = frame["task"].iloc[0]
    for seed in (0, 1):
        assert (tmp_path / "predictions" / f"finetune-none-k5-seed{seed}-{task}.jsonl").is_file()


def test_seen_task_fit_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config("eval.seen_max_instances=3")
    session = open_session(config, tiny_model_dir, tmp_path)
    evaluate_seen(session)
    frame = session.table.read()
    seen_tasks = session.benchmark.selection.seen
    sizes = frame[frame["metric"] == "train_size"]
    assert len(sizes) == len(seen_tasks)
    task = seen_tasks[0]
    assert sizes[sizes["task"] == task]["value"].item() == len(session.benchmark.split(task).train)
    losses = frame[frame["metric"] == "loss"]
    assert set(losses["split"]) == {"train", "validation", "test"}
    assert (losses["n"] <= 3).all()
    # Each split's size, the task's weight in a pooled average, whatever the cap scored.
    split = session.benchmark.split(task)
    split_sizes = frame[(frame["metric"] == "split_size") & (frame["task"] == task)]
    assert split_sizes.set_index("split")["value"].to_dict() == {
        "train": len(split.train), "validation": len(split.validation), "test": len(split.test)}


def test_seen_allocation_is_size_proportional_with_a_floor_and_a_cap() -> None:
    sizes = [5000, 1000, 400, 60, 7]
    shares = seen_allocation(sizes, 1000, floor=1)
    assert shares.sum() == 1000  # largest remainders: the budget exactly
    assert np.abs(shares - 1000 * np.array(sizes) / sum(sizes)).max() < 1
    floored = seen_allocation(sizes, 1000, floor=20)
    assert floored.tolist()[:3] == shares.tolist()[:3] and floored.tolist()[3:] == [20, 7]
    assert seen_allocation(sizes, 1000, floor=1, cap=100).tolist() == [100, 100, 62, 9, 1]
    assert seen_allocation(sizes, 10**6).tolist() == sizes  # a budget past the whole split
    rng = np.random.default_rng(0)
    for _ in range(200):  # bounded: never past budget + tasks × floor, never past a split
        sizes = rng.integers(1, 6500, size=rng.integers(1, 40)).tolist()
        budget, floor = int(rng.integers(1, 5000)), int(rng.integers(1, 30))
        counts = seen_allocation(sizes, budget, floor=floor)
        assert counts.sum() <= budget + len(sizes) * floor
        assert (counts <= sizes).all() and (counts >= np.minimum(sizes, floor)).all()


def test_seen_budget_scores_a_size_proportional_sample(tiny_model_dir: Path, tmp_path: Path
                                                       ) -> None:
    config = _config("eval.seen_budget=60", "eval.seen_min_instances=1",
                     "eval.seen_max_instances=null")
    session = open_session(config, tiny_model_dir, tmp_path)
    capped = identity.measurement_hash(_config("eval.seen_max_instances=null"),
                                       session.model_label, "seen", context="exemplars")
    assert session.measurement_hash("seen", context="exemplars") != capped
    evaluate_seen(session)
    frame = session.table.read()
    sizes = frame[frame["metric"] == "split_size"].pivot(index="task", columns="split",
                                                         values="value")
    scored = frame[frame["metric"] == "loss"].pivot(index="task", columns="split", values="n")
    for split in ("train", "test"):
        expected = seen_allocation(sizes[split].astype(int).tolist(), 60, floor=1)
        got = scored[split].reindex(sizes.index).fillna(0).astype(int)
        assert got.tolist() == expected.tolist()
        # proportional beyond the floor: the biggest split gets the most instances
        assert got[sizes[split].idxmax()] == got.max() > 1


@pytest.mark.own_cache  # its first session must find no cache
def test_seen_task_fit_reads_the_training_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the training run's tokenized cache on disk, the train split's losses come from its
    rows (nothing encoded again) and equal the freshly encoded ones, under a data limit too."""
    config = _config("eval.seen_max_instances=3", "data.splits.max_train_instances_per_task=2")
    fresh = open_session(config, tiny_model_dir, tmp_path / "fresh")
    evaluate_seen(fresh)

    session = open_session(config, tiny_model_dir, tmp_path / "cached")
    seen = list(session.benchmark.selection.seen)
    open_training_set(session.encoder(config.data.context.name), session.benchmark.index, seen,
                      config.data.splits, config.seed)
    encoded_splits: list[int] = []
    items = session.items
    monkeypatch.setattr(session, "items", lambda task, instances, context: (
        encoded_splits.append(len(instances)) or items(task, instances, context)))
    evaluate_seen(session)

    assert len(encoded_splits) == 2 * len(seen)  # validation and test only
    key = ["task", "split"]
    expected = fresh.table.read().query("metric == 'loss'").set_index(key)["value"].sort_index()
    got = session.table.read().query("metric == 'loss'").set_index(key)["value"].sort_index()
    assert (got.xs("train", level="split") > 0).all()
    assert got.to_dict() == pytest.approx(expected.to_dict(), rel=1e-6)
    counts = session.table.read().query("metric == 'loss' and split == 'train'")["n"]
    assert (counts == 2).all()  # the limit, not the cap, bounds the train split


def test_checkpoint_that_does_not_match_its_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_model_dir, mismatched)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_model_dir() / name, mismatched / name)  # 8,192 tokens vs 1,000
    with pytest.raises(ITransferError, match="does not match its tokenizer"):
        open_session(_config(), mismatched, tmp_path / "out")
    assert DEFAULT_MODEL.startswith("itransfer:")


def test_batched_engine_matches_peft_engine(tmp_path: Path) -> None:
    # The bundled model has no dropout; with LoRA dropout 0 both engines solve the same problem.
    # Two seeds: each engine must train every seed on that seed's own draw (k = 10 with batches
    # of 8 also ends each epoch with a partial batch).
    config = _config("eval.shots=[0, 10]", "eval.seeds=[0, 1]", "eval.transfer_contexts=[none]",
                     "eval.max_tasks=2", "eval.lora.dropout=0.0")
    frames = {}
    for engine in ("peft", "batched"):
        session = open_session(config, DEFAULT_MODEL, tmp_path / engine)
        evaluate_transfer(session, engine=engine)
        frame = session.table.read()
        frames[engine] = frame.set_index(["task", "shots", "seed", "split", "metric"])["value"]
    peft, batched = frames["peft"].sort_index(), frames["batched"].sort_index()
    assert list(peft.index) == list(batched.index)
    assert {key[2] for key in peft.index if key[1] == 10} == {0, 1}
    losses = [key for key in peft.index if key[4] in ("loss", "final_train_loss")]
    for key in losses:
        assert batched[key] == pytest.approx(peft[key], abs=2e-4), key


def test_batched_engine_progress_moves_within_a_group(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config("eval.shots=[0, 5]", "eval.transfer_contexts=[none]",
                     "eval.cells_per_group=3", "eval.max_tasks=2")
    session = open_session(config, tiny_model_dir, tmp_path)
    reports: list[tuple[float, int]] = []
    evaluate_transfer(session, engine="batched", progress=lambda _, d, t: reports.append((d, t)))
    done = [d for d, _ in reports]
    assert {t for _, t in reports} == {4}  # 2 tasks x 2 shot counts
    assert done == sorted(done) and done[-1] == 4
    assert any(0 < d < 3 for d in done)  # the bar moved before the first group finished


def test_max_tasks_caps_each_group_and_rows_record_their_group(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    groups = ["unseen", "unseen_synthetic", "heldout_domain", "heldout_adversarial"]
    session = open_session(_config(f"eval.task_groups={groups}", "eval.max_tasks=1",
                                   "eval.generate=false"), tiny_model_dir, tmp_path)
    selection = session.benchmark.selection
    # The bundled slice has no synthetic unseen task; every other group gets its first task,
    # so adding groups never changes which unseen tasks are evaluated.
    expected = [selection.unseen[0], selection.heldout_domain[0], selection.heldout_adversarial[0]]
    assert evaluation_tasks(session) == expected
    evaluate_icl(session)
    frame = session.table.read()
    assert dict(zip(frame["task"], frame["task_group"], strict=True)) == dict(
        zip(expected, ["unseen", "heldout_domain", "heldout_adversarial"], strict=True))
