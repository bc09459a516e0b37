"""The seen tasks' training examples, tokenized once into a memory-mapped Arrow dataset on disk.

At full size (1,366 seen tasks, ~2.5M training instances, exemplar contexts of up to 1,024
tokens) neither the raw instance text nor the encoded examples fit in a process's memory, let
alone in eight processes' on one node. So a run encodes every training instance of its seen
tasks once (the main process, with ``datasets``' ``from_generator(num_proc=…)``, one task file
at a time), stores the token ids as Arrow on disk, and from then on reads rows through a memory
map: every process of the node shares the same pages, and later runs with the same tokenizer,
context, length limits, split and task files open it in well under a second.

Rows are read through Arrow's memory maps of the Arrow files (``datasets`` writes them;
:class:`MappedRows` reads them and drops their pages), because a mapped page stays in a
process's RSS once touched, and the kernel maps ~64 KB around each touch: a training run's
random reads would grow every process's RSS towards the cache's size (+0.7 GB over 2,000
steps on the full-size stand-in), which schedulers that count RSS take for a leak. The pages
are dropped from the process every :data:`DROP_PAGES_EVERY_ROWS` reads; they stay in the page
cache, so reading them again is a minor fault, not disk.

The cache holds each task's *whole* training split in split order; the per-task data limit only
shortens the range a run reads (the limit keeps the first instances of that order, as in
:mod:`itransfer.data.splits`), so every limit of §3.2 shares one cache.

The key covers everything the token ids depend on: the tokenizer (its full serialisation), the
architecture, the context and its exemplar count, the length limits, the split fractions and
seed, each task's file hash, and the source of the modules that render and tokenize examples, so
a change to any of them builds a new cache instead of reading a stale one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import inspect
import json
import logging
import mmap
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError
from filelock import FileLock

from itransfer.config.schema import SplitConfig
from itransfer.data.index import TaskIndex, default_cache_dir
from itransfer.data.sni import parse_task
from itransfer.data.splits import limited_size, seen_split_sizes, split_seen_task
from itransfer.encoding.examples import EncodedExample, ExampleEncoder
from itransfer.errors import DataError, ITransferError
from itransfer.runs.identity import tokenized_cache_key
from itransfer.runtime.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
META_FILE = "itransfer_meta.json"
# Below this many instances one process encodes faster than starting several.
PARALLEL_BUILD_MIN_INSTANCES = 50_000
ENCODE_CHUNK = 512
# Rows read between two drops of the mapped pages: a random row maps up to ~250 KB (fault-around
# on the offsets and values of two columns), so this bounds the file-backed RSS to ~250 MB.
DROP_PAGES_EVERY_ROWS = 1024


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides the tokenizer's ids: its full serialisation (fast
    tokenizers) or its vocabulary, plus its class and special tokens."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _code_fingerprint() -> str:
    """The source of the modules that turn an instance into token ids (contexts, the encoder,
    the splits): editing them must not leave a stale cache behind."""
    from itransfer.data import contexts, splits
    from itransfer.encoding import examples

    digest = hashlib.sha256()
    for module in (contexts, examples, splits):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def encoder_identity(encoder: ExampleEncoder, tokenizer: str) -> dict[str, Any]:
    """What an encoder's token ids depend on besides the task and instance; ``tokenizer`` is
    the tokenizer's fingerprint."""
    return {
        "tokenizer": tokenizer,
        "architecture": encoder.architecture,
        "context": type(encoder.context).__name__,
        "num_exemplars": encoder.context.num_exemplars,
        "max_source_length": encoder.max_source_length,
        "max_target_length": encoder.max_target_length,
        "chat_template": encoder.chat_template,
    }


def cache_key(
    encoder: ExampleEncoder,
    index: TaskIndex,
    task_names: Sequence[str],
    splits: SplitConfig,
    seed: int,
) -> str:
    """The cache folder's name (:func:`itransfer.runs.identity.tokenized_cache_key`)."""
    entries = [index.get(name) for name in task_names]
    return tokenized_cache_key(
        encoder_identity(encoder, tokenizer_fingerprint(encoder.tokenizer)),
        [(entry.metadata.name, entry.sha256) for entry in entries], splits, seed,
        code=_code_fingerprint(), version=CACHE_FORMAT_VERSION,
    )


class MappedRows:
    """The rows of a saved ``datasets`` folder (Arrow IPC stream files), read zero-copy through
    Arrow's memory maps, whose pages this process drops every ``drop_every`` rows it reads."""

    def __init__(self, folder: Path, drop_every: int = DROP_PAGES_EVERY_ROWS) -> None:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        # Whole files as Arrow buffers over Arrow's own maps: the tables hold no Python object,
        # so nothing of theirs needs the interpreter when the process exits.
        self._files = [pa.memory_map(str(folder / entry["filename"]), "r").read_buffer()
                       for entry in state["_data_files"]]
        self.table = pa.concat_tables([pa.ipc.open_stream(buffer).read_all()
                                       for buffer in self._files])
        self.drop_every = drop_every
        self._reads = 0
        self._lists = {name: _list_chunks(self.table.column(name))
                       for name in ("source_ids", "target_ids")}

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """A whole scalar column, copied into memory (a few bytes a row)."""
        return np.array(self.table.column(name).to_numpy(), copy=True)

    def ids(self, row: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Row ``row``'s source and target ids."""
        self._reads += 1
        if self._reads >= self.drop_every:
            self.drop_pages()
        source, target = (_list_row(*self._lists[name], row)
                          for name in ("source_ids", "target_ids"))
        return source, target

    def drop_pages(self) -> None:
        """Drop the touched pages from this process (they stay in the page cache)."""
        self._reads = 0
        for buffer in self._files:
            drop_mapped_pages(buffer.address, buffer.size)


def drop_mapped_pages(address: int, size: int) -> bool:
    """``madvise(MADV_DONTNEED)`` over the whole pages of a read-only file mapping: they leave
    this process's RSS and are read again from the page cache when touched. By hand (libc
    through ctypes) because neither Arrow nor ``datasets`` exposes it for their maps. False
    where the platform has no ``madvise``."""
    advise = _madvise()
    if advise is None:
        return False
    page = mmap.PAGESIZE
    start = -(-address // page) * page  # madvise wants a page-aligned start
    end = (address + size) // page * page
    return end <= start or advise(start, end - start, mmap.MADV_DONTNEED) == 0


@functools.cache
def _madvise() -> Any:
    if not hasattr(mmap, "MADV_DONTNEED"):  # Windows
        return None
    try:
        advise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    advise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advise.restype = ctypes.c_int
    return advise


def _list_chunks(column: pa.ChunkedArray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The first row of each chunk, and each chunk's offsets and values as zero-copy arrays."""
    starts = np.cumsum([0, *(len(chunk) for chunk in column.chunks)])
    return starts, [(chunk.offsets.to_numpy(), chunk.values.to_numpy())
                    for chunk in column.chunks]


def _list_row(starts: np.ndarray, chunks: list[tuple[np.ndarray, np.ndarray]],
              row: int) -> tuple[int, ...]:
    chunk = int(np.searchsorted(starts, row, side="right")) - 1
    offsets, values = chunks[chunk]
    local = row - int(starts[chunk])
    return tuple(values[offsets[local] : offsets[local + 1]].tolist())


@dataclass
class TokenizedTrainingSet:
    """Encoded training examples of the seen tasks, read from a memory-mapped Arrow dataset.

    ``(task, instance)`` addresses the ``instance``-th training instance (in split order) of the
    ``task``-th seen task, exactly as the batch stream draws them.
    """

    path: Path
    rows: MappedRows
    offsets: np.ndarray  # first row of each task
    train_sizes: list[int]  # whole training split of each task (before the data limit)
    lengths: np.ndarray  # source + target tokens of each row
    inputs_cut: np.ndarray  # 1 where the input itself was cut to fit the source budget
    built: bool  # this process built the cache (False: it was already on disk)
    build_seconds: float | None

    def __call__(self, task: int, instance: int) -> EncodedExample:
        row = self._row(task, instance)
        return EncodedExample(*self.rows.ids(row), input_cut=bool(self.inputs_cut[row]))

    def length(self, task: int, instance: int) -> int:
        return int(self.lengths[self._row(task, instance)])

    def _row(self, task: int, instance: int) -> int:
        if not 0 <= instance < self.train_sizes[task]:
            raise IndexError(f"task {task} has {self.train_sizes[task]} training instances")
        return int(self.offsets[task]) + instance

    def inputs_cut_by_task(self, task_names: Sequence[str], sizes: Sequence[int]) -> dict[str, int]:
        """How many of the first ``sizes[t]`` instances of each task had their input cut."""
        counts = {}
        for task, (name, size) in enumerate(zip(task_names, sizes, strict=True)):
            start = int(self.offsets[task])
            if cut := int(self.inputs_cut[start : start + size].sum()):
                counts[name] = cut
        return counts


def seen_train_sizes(
    index: TaskIndex, task_names: Sequence[str], splits: SplitConfig
) -> tuple[list[int], list[int]]:
    """Each seen task's training-set size after and before the data limit, from the index's
    instance counts alone (no task file is read)."""
    before = [seen_split_sizes(index.get(name).metadata.num_instances, splits)[2]
              for name in task_names]
    return [limited_size(size, splits) for size in before], before


def open_training_set(
    encoder: ExampleEncoder,
    index: TaskIndex,
    task_names: Sequence[str],
    splits: SplitConfig,
    seed: int,
    *,
    cache_dir: Path | None = None,
    num_proc: int | None = None,
    progress: BuildProgress | None = None,
) -> TokenizedTrainingSet:
    """The tokenized training set of ``task_names``, built on first use and then reused.

    Concurrent callers (the processes of one launch, or two jobs on one node) serialise on a
    file lock: the first builds, the others wait and then read what it wrote. ``progress`` sees
    (instances tokenized, total) about twice a second while this process builds.
    """
    final = _cache_folder(encoder, index, task_names, splits, seed, cache_dir)
    _, train_sizes = seen_train_sizes(index, task_names, splits)
    final.parent.mkdir(parents=True, exist_ok=True)
    built, seconds = False, None
    with FileLock(str(final.with_name(f"{final.name}.lock"))):
        if not (final / META_FILE).is_file():
            seconds = _build(encoder, index, task_names, splits, seed, final, train_sizes,
                             num_proc=num_proc, progress=progress)
            built = True
    return _open(final, train_sizes, built=built, build_seconds=seconds)


def find_training_set(
    encoder: ExampleEncoder,
    index: TaskIndex,
    task_names: Sequence[str],
    splits: SplitConfig,
    seed: int,
    *,
    cache_dir: Path | None = None,
) -> TokenizedTrainingSet | None:
    """The tokenized training set a training run with this encoder, selection and split built,
    or None when there is none (never builds one: evaluation reads a few rows per task, which
    is no reason to tokenize millions)."""
    final = _cache_folder(encoder, index, task_names, splits, seed, cache_dir)
    if not (final / META_FILE).is_file():  # a cache is published whole, by one rename
        return None
    _, train_sizes = seen_train_sizes(index, task_names, splits)
    return _open(final, train_sizes, built=False, build_seconds=None)


def _cache_folder(
    encoder: ExampleEncoder,
    index: TaskIndex,
    task_names: Sequence[str],
    splits: SplitConfig,
    seed: int,
    cache_dir: Path | None,
) -> Path:
    return (cache_dir or default_cache_dir()) / "tokenized" / cache_key(
        encoder, index, task_names, splits, seed)


def _open(
    path: Path, train_sizes: list[int], *, built: bool, build_seconds: float | None
) -> TokenizedTrainingSet:
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if meta["train_sizes"] != train_sizes:
        raise RuntimeError(f"{path}: the cached training sets have other sizes than the index")
    rows = MappedRows(path / "data")
    offsets = np.concatenate([[0], np.cumsum(train_sizes)[:-1]]).astype(np.int64)
    return TokenizedTrainingSet(
        path=path, rows=rows, offsets=offsets, train_sizes=train_sizes,
        lengths=rows.column("length"), inputs_cut=rows.column("input_cut"),
        built=built, build_seconds=build_seconds if built else meta.get("build_seconds"),
    )


def _column(dataset: datasets.Dataset, name: str) -> np.ndarray:
    # Straight from the Arrow table: datasets' formatters would build one Python row at a time
    # (minutes for millions of rows).
    return dataset.data.column(name).to_numpy()


def _build(
    encoder: ExampleEncoder,
    index: TaskIndex,
    task_names: Sequence[str],
    splits: SplitConfig,
    seed: int,
    final: Path,
    train_sizes: list[int],
    *,
    num_proc: int | None,
    progress: BuildProgress | None = None,
) -> float:
    started = time.perf_counter()
    total = sum(train_sizes)
    if num_proc is None:
        num_proc = 1 if total < PARALLEL_BUILD_MIN_INSTANCES else min(8, os.cpu_count() or 1)
    num_proc = max(1, min(num_proc, len(task_names)))
    id_type = "uint16" if len(encoder.tokenizer) <= np.iinfo(np.uint16).max + 1 else "int32"
    tasks = [(task, str(index.tasks_dir / index.get(name).file_name))
             for task, name in enumerate(task_names)]
    staging = final.with_name(final.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("tokenizing %d training instances of %d tasks into %s (%d process%s)",
                total, len(tasks), final, num_proc, "" if num_proc == 1 else "es")
    if num_proc > 1:  # workers fork from here; the tokenizer's own threads would contend
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    generated = _generate_rows(
        tasks, {"encoder": encoder, "splits": splits, "seed": seed}, _row_features(id_type),
        final, staging, total, num_proc=num_proc, progress=progress,
    )
    task_column = _column(generated, "task")
    expected = np.repeat(np.arange(len(train_sizes)), train_sizes)
    if not np.array_equal(task_column, expected):  # never expected: shards keep task order
        raise RuntimeError(f"{final}: tokenized rows are not in task order")
    with _datasets_quiet():
        generated.save_to_disk(str(staging / "data"))
    del generated
    shutil.rmtree(staging / "hf", ignore_errors=True)
    shutil.rmtree(staging / PROGRESS_DIR, ignore_errors=True)
    seconds = time.perf_counter() - started
    meta = {"format": CACHE_FORMAT_VERSION, "tasks": list(task_names),
            "train_sizes": train_sizes, "rows": total, "id_type": id_type,
            "build_seconds": round(seconds, 2)}
    atomic_write_text(staging / META_FILE, json.dumps(meta, indent=1))
    # One rename publishes the whole cache, so a crash mid-build never leaves a partial one.
    os.replace(staging, final)
    logger.info("tokenized training set built in %.1f s", seconds)
    return seconds


PROGRESS_DIR = "progress"  # in the staging folder: each worker's count of instances done


def _row_features(id_type: str) -> datasets.Features:
    """The cache's columns; token ids in ``id_type`` (uint16 where the vocabulary fits)."""
    return datasets.Features({
        "task": datasets.Value("int32"),
        "position": datasets.Value("int32"),
        "source_ids": datasets.Sequence(datasets.Value(id_type)),
        "target_ids": datasets.Sequence(datasets.Value(id_type)),
        "length": datasets.Value("int32"),
        "input_cut": datasets.Value("uint8"),
    })


def _generate_rows(
    tasks: list[tuple[int, str]], encoding: dict[str, Any], features: datasets.Features,
    final: Path, staging: Path, total: int, *, num_proc: int, progress: BuildProgress | None,
) -> datasets.Dataset:
    """Every task's encoded rows, in task order, generated by ``num_proc`` processes into
    ``staging``; ``encoding`` is what :func:`_encoded_rows` encodes with (encoder, splits,
    seed). A bad task file is raised as the one-line error naming it."""
    reported = final.with_name(final.name + ".errors.jsonl")
    reported.unlink(missing_ok=True)
    counters = staging / PROGRESS_DIR
    counters.mkdir(parents=True)
    try:
        # datasets' own bar ("Generating train split") would be a second bar for this phase,
        # one line per refresh in a log file; ours counts tasks' instances across processes.
        with _datasets_quiet(), _ProgressWatch(counters, total, progress):
            return datasets.Dataset.from_generator(
                _encoded_rows,
                features=features,
                cache_dir=str(staging / "hf"),
                gen_kwargs={"tasks": tasks, **encoding,
                            "errors_file": str(reported), "counters": str(counters)},
                num_proc=num_proc if num_proc > 1 else None,
                fingerprint=final.name,
                split="train",
            )
    except DatasetGenerationError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        # datasets wraps what the generator raised; a bad task file must still be reported as
        # the one-line error naming the file.
        if isinstance(exc.__cause__, ITransferError):
            raise exc.__cause__ from None
        if reported.is_file():  # a worker process met it (its exception does not come back)
            first = json.loads(reported.read_text(encoding="utf-8").splitlines()[0])
            raise DataError(first["path"], first["message"]) from None
        raise
    finally:
        reported.unlink(missing_ok=True)


def _encoded_rows(
    tasks: list[tuple[int, str]],
    encoder: ExampleEncoder,
    splits: SplitConfig,
    seed: int,
    errors_file: str,
    counters: str,
) -> Iterator[dict[str, Any]]:
    """Every training instance of each task (one task file in memory at a time), encoded.

    After each task, the instances encoded so far from this call's tasks (one shard: a worker
    process may run several) go to the shard's own file in ``counters`` (the builder's progress
    bar sums them: worker processes share no memory)."""
    unlimited = splits.model_copy(update={"max_train_instances_per_task": None})
    shard = tasks[0][0] if tasks else 0
    counter, encoded_so_far = Path(counters) / f"shard-{shard}", 0
    for task_index, path in tasks:
        try:
            task = parse_task(Path(path))
        except DataError as error:
            with open(errors_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"path": str(error.path), "message": error.message}) + "\n")
            raise
        train = split_seen_task(task, unlimited, seed).train
        # In chunks, so the token lists of a 6,500-instance task are not all alive at once.
        encoded = (example for start in range(0, len(train), ENCODE_CHUNK)
                   for example in encoder.encode_task(task, train[start:start + ENCODE_CHUNK]))
        for position, example in enumerate(encoded):
            yield {
                "task": task_index,
                "position": position,
                "source_ids": example.source_ids,
                "target_ids": example.target_ids,
                "length": len(example),
                "input_cut": int(example.input_cut),
            }
        encoded_so_far += len(train)
        counter.write_text(str(encoded_so_far), encoding="utf-8")


BuildProgress = Callable[[int, int], None]


class _ProgressWatch:
    """Calls ``progress(done, total)`` from a thread while the build runs, ``done`` summed over
    the counter files the encoding processes write."""

    def __init__(self, folder: Path, total: int, progress: BuildProgress | None,
                 interval: float = 0.5) -> None:
        self.folder, self.total, self.progress, self.interval = folder, total, progress, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ProgressWatch:
        if self.progress is not None:
            self.progress(0, self.total)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.progress is None:
            return
        self._stop.set()
        self._thread.join()
        if exc_info[0] is None:
            self.progress(self.total, self.total)

    def _run(self) -> None:
        assert self.progress is not None
        while not self._stop.wait(self.interval):
            self.progress(min(self._done(), self.total), self.total)

    def _done(self) -> int:
        done = 0
        for counter in self.folder.iterdir():
            try:
                done += int(counter.read_text(encoding="utf-8") or 0)
            except (OSError, ValueError):  # being rewritten: counted at the next look
                continue
        return done


@contextlib.contextmanager
def _datasets_quiet() -> Iterator[None]:
    """datasets' progress bars off for the block (and back as they were after it)."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
