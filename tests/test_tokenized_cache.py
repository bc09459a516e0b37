"""The on-disk tokenized training set: same ids as the encoder, built once, shared, never stale."""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from conftest import write_task
from itransfer.config.schema import SplitConfig
from itransfer.data.contexts import build_context
from itransfer.data.index import build_index
from itransfer.data.sni import parse_task
from itransfer.data.splits import split_seen_task
from itransfer.encoding import cache as tokenized
from itransfer.encoding.cache import open_training_set, seen_train_sizes
from itransfer.encoding.examples import ExampleEncoder
from itransfer.models.loading import load_model_and_tokenizer
from tiny_configs import tiny_train_config

SEED = 3
pytestmark = pytest.mark.own_cache  # these tests build, find and miss the cache itself


def _tasks(folder: Path) -> list[str]:
    names = ["task001_alpha_qa", "task002_beta_qa", "task003_gamma_qa"]
    for number, name in enumerate(names):
        write_task(folder, name, Instances=[
            {"id": f"{name}-{i}", "input": f"question {i} " + "word " * (i % 40 + number * 9),
             "output": [f"answer {i}"]}
            for i in range(60 + 25 * number)
        ])
    return names


def _encoder(tiny_model_dir: Path, context: str = "exemplars") -> ExampleEncoder:
    tokenizer = load_model_and_tokenizer(str(tiny_model_dir)).tokenizer
    return ExampleEncoder(tokenizer, "seq2seq", build_context(context, 3),
                          max_source_length=48, max_target_length=8)


def _open(encoder, folder, names, splits=None, **kwargs):
    return open_training_set(encoder, build_index(folder), names, splits or SplitConfig(), SEED,
                             **kwargs)


def test_rows_are_the_encoders_output_and_the_limit_only_shortens(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    names = _tasks(tmp_path / "tasks")
    encoder = _encoder(tiny_model_dir)
    limited = SplitConfig(max_train_instances_per_task=30)
    cached = _open(encoder, tmp_path / "tasks", names, limited)
    sizes, before = seen_train_sizes(build_index(tmp_path / "tasks"), names, limited)
    assert sizes == [30, 30, 30] and before == [48, 69, 88]
    one_by_one, one_by_one_cuts = _encoder(tiny_model_dir), {}
    for task_index, name in enumerate(names):
        task = parse_task(tmp_path / "tasks" / f"{name}.json")
        train = split_seen_task(task, limited, SEED).train
        assert len(train) == sizes[task_index]
        for instance_index, instance in enumerate(train):
            expected = one_by_one.encode(task, instance)
            if expected.input_cut:
                one_by_one_cuts[name] = one_by_one_cuts.get(name, 0) + 1
            assert cached(task_index, instance_index) == expected
            assert cached.length(task_index, instance_index) == len(expected)
    # Some inputs are too long for 48 tokens even without context: counted over the limited
    # range exactly as encoding one by one counts them.
    cut = cached.inputs_cut_by_task(names, sizes)
    assert cut and cut == one_by_one_cuts
    # Another limit reads the same cache, which holds each task's whole training split.
    unlimited = _open(encoder, tmp_path / "tasks", names)
    assert unlimited.path == cached.path and not unlimited.built
    assert unlimited.train_sizes == before
    with pytest.raises(IndexError):
        cached(0, 48)


def test_warm_open_reads_no_task_file_and_a_changed_file_rebuilds(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _tasks(tmp_path / "tasks")
    encoder = _encoder(tiny_model_dir)
    first = _open(encoder, tmp_path / "tasks", names)
    assert first.built

    def no_parsing(*args, **kwargs):
        raise AssertionError("a warm cache must not parse task files")

    with monkeypatch.context() as patch:
        patch.setattr(tokenized, "parse_task", no_parsing)
        warm = _open(encoder, tmp_path / "tasks", names)
    assert not warm.built and warm.path == first.path and warm(1, 5) == first(1, 5)

    write_task(tmp_path / "tasks", names[1], Instances=[
        {"id": f"x-{i}", "input": f"other {i}", "output": ["y"]} for i in range(70)
    ])
    changed = _open(encoder, tmp_path / "tasks", names)
    assert changed.built and changed.path != first.path
    # Another context or length limit is another cache too.
    other_context = _open(_encoder(tiny_model_dir, "none"), tmp_path / "tasks", names)
    assert other_context.built and other_context.path not in (first.path, changed.path)


def test_a_failed_build_leaves_nothing_behind(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _tasks(tmp_path / "tasks")
    encoder = _encoder(tiny_model_dir)
    real_encode, calls = ExampleEncoder.encode_task, {"n": 0}

    def encode_then_fail(self, task, instances):
        calls["n"] += 1
        if calls["n"] > 2:  # the third task: two tasks' rows are already written
            raise RuntimeError("disk gone")
        return real_encode(self, task, instances)

    with monkeypatch.context() as patch:
        patch.setattr(ExampleEncoder, "encode_task", encode_then_fail)
        with pytest.raises(Exception, match="generating the dataset") as failure:
            _open(encoder, tmp_path / "tasks", names)
    assert "disk gone" in str(failure.value.__cause__)
    root = Path(tokenized.default_cache_dir()) / "tokenized"
    assert not [p for p in root.iterdir() if (p / tokenized.META_FILE).exists()]
    rebuilt = _open(encoder, tmp_path / "tasks", names)
    assert rebuilt.built and rebuilt(2, 3) == encoder.encode(
        parse_task(tmp_path / "tasks" / f"{names[2]}.json"),
        split_seen_task(parse_task(tmp_path / "tasks" / f"{names[2]}.json"), SplitConfig(),
                        SEED).train[3],
    )


def test_a_parallel_build_equals_a_serial_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    names = _tasks(tmp_path / "tasks")
    encoder = _encoder(tiny_model_dir)
    serial = _open(encoder, tmp_path / "tasks", names, cache_dir=tmp_path / "serial", num_proc=1)
    parallel = _open(encoder, tmp_path / "tasks", names, cache_dir=tmp_path / "parallel",
                     num_proc=2)
    assert parallel.built and serial.train_sizes == parallel.train_sizes
    assert serial.rows.table.to_pydict() == parallel.rows.table.to_pydict()


def test_mapped_rows_equal_datasets_rows_across_page_drops(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Rows read through Arrow's memory maps, dropping the mapped pages every 3 reads,
    are the rows ``datasets`` reads from the same folder (several Arrow files and chunks)."""
    import datasets

    names = _tasks(tmp_path / "tasks")
    cache = _open(_encoder(tiny_model_dir), tmp_path / "tasks", names, num_proc=2)
    folder = cache.path / "data"
    rows = tokenized.MappedRows(folder, drop_every=3)
    reference = datasets.load_from_disk(str(folder))
    assert len(rows) == len(reference) == sum(cache.train_sizes)
    order = [*range(len(rows)), *reversed(range(len(rows)))]
    assert [rows.ids(row) for row in order] == [
        (tuple(reference[row]["source_ids"]), tuple(reference[row]["target_ids"]))
        for row in order]
    assert (rows.column("length") == np.array(reference["length"])).all()


def _rss_file_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("RssFile:")))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_dropped_pages_leave_the_process_and_read_back_the_same(tmp_path: Path) -> None:
    import pyarrow as pa

    data = np.random.default_rng(0).integers(0, 255, 16 * 2**20, dtype=np.uint8)
    (tmp_path / "blob").write_bytes(data.tobytes())
    buffer = pa.memory_map(str(tmp_path / "blob"), "r").read_buffer()
    mapped = np.frombuffer(buffer, dtype=np.uint8)
    total = int(mapped.sum())  # touches every page
    touched = _rss_file_kb()
    assert tokenized.drop_mapped_pages(buffer.address, buffer.size)
    assert _rss_file_kb() < touched - 12 * 1024  # most of the 16 MB left the process
    assert int(mapped.sum()) == total == int(data.sum())  # and read back from the file
    # A slice that starts inside a page: only its whole pages are dropped.
    assert tokenized.drop_mapped_pages(buffer.address + 100, 3 * 4096)


def _open_in_child(args: tuple) -> bool:
    model_dir, folder, names, cache_dir = args
    return _open(_encoder(Path(model_dir)), Path(folder), names, cache_dir=Path(cache_dir)).built


def test_concurrent_openers_build_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    names = _tasks(tmp_path / "tasks")
    build_index(tmp_path / "tasks")  # the index cache is not what this test is about
    args = (str(tiny_model_dir), str(tmp_path / "tasks"), names, str(tmp_path / "cache"))
    with multiprocessing.get_context("fork").Pool(3) as pool:
        built = pool.map(_open_in_child, [args] * 3)
    assert sorted(built) == [False, False, True]


def test_training_reads_the_cache_and_a_second_run_parses_no_task(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from itransfer.data import benchmark
    from itransfer.train.loop import instruction_tune

    _tasks(tmp_path / "tasks")
    sni_dir = tmp_path / "tasks"
    config = tiny_train_config(tiny_model_dir, "train.steps=3", f"data.sni_dir={sni_dir}")
    first = instruction_tune(config, tmp_path / "first")

    def no_parsing(*args, **kwargs):
        raise AssertionError("a warm run must not parse task files")

    monkeypatch.setattr(benchmark, "parse_task", no_parsing)
    monkeypatch.setattr(tokenized, "parse_task", no_parsing)
    second = instruction_tune(config, tmp_path / "second")
    assert [row["loss"] for row in second.log] == [row["loss"] for row in first.log]


def test_a_bad_task_file_met_while_building_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    from itransfer.errors import DataError

    names = _tasks(tmp_path / "tasks")
    index = build_index(tmp_path / "tasks")
    (tmp_path / "tasks" / f"{names[1]}.json").write_text("{ not json", encoding="utf-8")
    for num_proc in (1, 2):  # from a worker process too
        with pytest.raises(DataError, match=names[1]):
            open_training_set(_encoder(tiny_model_dir), index, names, SplitConfig(), SEED,
                              num_proc=num_proc)


def test_a_build_reports_its_own_progress_and_no_library_bar(
    tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    names = _tasks(tmp_path / "tasks")
    seen: list[tuple[int, int]] = []
    for num_proc in (1, 2):
        seen.clear()
        built = _open(_encoder(tiny_model_dir), tmp_path / "tasks", names, num_proc=num_proc,
                      cache_dir=tmp_path / f"cache-{num_proc}",
                      progress=lambda done, total: seen.append((done, total)))
        total = sum(built.train_sizes)
        assert seen[0] == (0, total) and seen[-1] == (total, total)
        assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))
    output = capfd.readouterr()
    assert "Generating train split" not in output.err + output.out
    assert "Saving the dataset" not in output.err + output.out


def test_the_progress_counts_every_process_instances(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each shard of the encoding writes its running count after each task; the watch sums
    them."""
    import time

    names = _tasks(tmp_path / "tasks")
    counters = tmp_path / "counters"
    counters.mkdir()
    tasks = [(i, str(tmp_path / "tasks" / f"{name}.json")) for i, name in enumerate(names)]
    rows = tokenized._encoded_rows(tasks[:2], _encoder(tiny_model_dir), SplitConfig(), SEED,
                                   str(tmp_path / "errors.jsonl"), str(counters))
    for _ in rows:
        pass
    sizes = [len(split_seen_task(parse_task(Path(path)), SplitConfig(), SEED).train)
             for _, path in tasks]
    assert (counters / "shard-0").read_text() == str(sizes[0] + sizes[1])
    # A second shard in the same process counts in its own file.
    for _ in tokenized._encoded_rows(tasks[2:], _encoder(tiny_model_dir), SplitConfig(), SEED,
                                     str(tmp_path / "errors.jsonl"), str(counters)):
        pass
    assert (counters / "shard-2").read_text() == str(sizes[2])
    (counters / "shard-2").unlink()
    (counters / "another-process").write_text(str(sizes[2]))
    seen: list[int] = []
    with tokenized._ProgressWatch(counters, sum(sizes), lambda done, _: seen.append(done),
                                  interval=0.01):
        deadline = time.monotonic() + 5
        while sum(sizes) not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen[0] == 0 and sum(sizes) in seen
