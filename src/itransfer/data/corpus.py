"""Unsupervised text, streamed one document at a time (pre-training and unsupervised mixing).

A corpus is a ``.txt`` file with one document per line, a folder of such files, or
``hf:<dataset>[:config]`` (a Hugging Face dataset read with ``streaming=True``; only touched
when the user names one). Nothing here loads a corpus whole, so a multi-GB file works too.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from itransfer.errors import DataError

HF_PREFIX = "hf:"

# A slice of the SNI instance inputs shipped in the wheel (see bundled/corpus/README.md), so the
# embedded default model can be rebuilt without ../shared. ``heldout.txt`` holds the lines just
# after the slice, never seen in pre-training, for checking that the model learned.
BUNDLED_CORPUS: Path = Path(str(resources.files("itransfer") / "bundled" / "corpus" / "corpus.txt"))
BUNDLED_HELDOUT: Path = Path(
    str(resources.files("itransfer") / "bundled" / "corpus" / "heldout.txt")
)


def iter_corpus_documents(
    source: str | Path, *, shuffle_buffer: int = 0, seed: int = 0
) -> Iterator[str]:
    """Yield the non-blank documents of ``source``, optionally shuffled through a bounded buffer.

    Raises :class:`DataError` at once (not at the first ``next``) when the path is missing or
    the corpus holds no document, so a bad ``--corpus`` fails before any training starts.
    """
    documents = _open_documents(source)
    first = next(documents, None)
    if first is None:
        raise DataError(source, "corpus is empty (no non-blank line)")
    stream = itertools.chain([first], documents)
    if shuffle_buffer > 1:
        return _buffer_shuffle(stream, shuffle_buffer, random.Random(seed))
    return stream


def _open_documents(source: str | Path) -> Iterator[str]:
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return _hf_documents(source)
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise DataError(path, "corpus folder has no *.txt file")
        return itertools.chain.from_iterable(_file_documents(f) for f in files)
    if path.is_file():
        return _file_documents(path)
    raise DataError(path, "corpus not found (expected a .txt file, a folder of them, or hf:NAME)")


def _file_documents(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not UTF-8 text ({exc.reason})", line=line_number) from exc
            if text:
                yield text


def _hf_documents(source: str) -> Iterator[str]:
    dataset = source[len(HF_PREFIX):]
    name, _, config = dataset.partition(":")
    if not name:
        raise DataError(source, "expected hf:<dataset_name>[:config]")
    # Imported here: `datasets` is slow to import and only this branch needs it.
    import datasets

    try:
        dataset = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except (OSError, ValueError, ConnectionError) as exc:
        raise DataError(source, f"cannot open the dataset: {exc}") from exc
    for row_number, row in enumerate(dataset, start=1):
        if "text" not in row:
            raise DataError(source, "dataset rows have no 'text' field", line=row_number)
        text = str(row["text"]).strip()
        if text:
            yield text


def _buffer_shuffle(items: Iterable[str], size: int, rng: random.Random) -> Iterator[str]:
    """Approximate shuffle with memory bounded by ``size`` (as ``datasets``' streaming shuffle)."""
    buffer: list[str] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer
