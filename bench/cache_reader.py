"""Reading the tokenized training cache: ``datasets``' row formatter against :class:`MappedRows`.

    python bench/cache_reader.py ~/.cache/itransfer/tokenized/<key> --rows 20000

Each reader runs in a fresh process and reads the same random rows (as training does: a task,
then an instance); it reports rows a second, the ratio against ``datasets`` measured in the same
run, and how much the process's file-backed RSS (touched pages of the map) grew. ``MappedRows``
runs twice: dropping its pages every 1,024 reads (the default) and never.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_file_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("RssFile:"))) / 1024


def _read(args: tuple[str, str, list[int]]) -> dict[str, Any]:
    reader, folder, rows = args
    if reader == "datasets":
        import datasets

        dataset = datasets.load_from_disk(folder)

        def read(row: int) -> Any:
            item = dataset[row]
            return tuple(item["source_ids"]), tuple(item["target_ids"])
    else:
        from itransfer.encoding.cache import MappedRows

        mapped = MappedRows(Path(folder), drop_every=1024 if reader == "mapped" else 2**62)
        read = mapped.ids
    before = _rss_file_mb()
    start = time.perf_counter()
    tokens = sum(len(source) + len(target) for source, target in map(read, rows))
    seconds = time.perf_counter() - start
    return {"rows_per_s": round(len(rows) / seconds, 1), "tokens": tokens,
            "file_backed_rss_growth_mb": round(_rss_file_mb() - before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="a tokenized cache folder (holds data/)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = str(args.cache / "data")
    state = json.loads((args.cache / "data" / "state.json").read_text())
    import datasets

    total = len(datasets.load_from_disk(folder))
    rows = np.random.default_rng(args.seed).integers(0, total, args.rows).tolist()
    context = multiprocessing.get_context("spawn")
    result: dict[str, Any] = {"cache_rows": total, "files": len(state["_data_files"]),
                              "rows_read": args.rows}
    for reader in ("datasets", "mapped", "mapped_no_drops"):
        with context.Pool(1) as pool:
            result[reader] = pool.apply(_read, ((reader, folder, rows),))
        print(reader, result[reader], flush=True)
    assert result["datasets"]["tokens"] == result["mapped"]["tokens"]
    for reader in ("mapped", "mapped_no_drops"):
        result[reader]["ratio_vs_datasets"] = round(
            result[reader]["rows_per_s"] / result["datasets"]["rows_per_s"], 2)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
