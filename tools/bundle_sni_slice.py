"""Rebuild the SNI slice bundled in the package from the team's shared slice.

    python tools/bundle_sni_slice.py ../shared/data/sni-slice src/itransfer/bundled/sni

Keeps every task of an unseen category (Table 2) and of the held-out domains/sources, and
``SEEN_PER_CATEGORY`` seen tasks of each seen category (the smallest files first, so the package
stays small), each cut to its first ``MAX_INSTANCES`` instances in the original order. The task
JSON is otherwise unchanged (original schema, Definition as in the source file).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

from itransfer.config import paper_constants as paper

MAX_INSTANCES = 300
SEEN_PER_CATEGORY = 2


def main(source: Path, target: Path) -> None:
    rows = list(csv.DictReader((source / "tasks.tsv").open(encoding="utf-8"), delimiter="\t"))
    chosen: list[str] = []
    seen_by_category: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        name, category = row["task"], row["categories"].split(" -> ")[0]
        domains, sources = set(row["domains"].split("; ")), set(row["sources"].split("; "))
        held_out = domains & set(paper.EVALUATION_DOMAINS) or sources & set(
            paper.ADVERSARIAL_SOURCES
        )
        if category in paper.UNSEEN_CATEGORIES or (held_out and category in paper.SEEN_CATEGORIES):
            chosen.append(name)
        elif category in paper.SEEN_CATEGORIES:
            size = (source / "tasks" / f"{name}.json").stat().st_size
            seen_by_category[category].append((size, name))
    for candidates in seen_by_category.values():
        chosen.extend(name for _, name in sorted(candidates)[:SEEN_PER_CATEGORY])

    (target / "tasks").mkdir(parents=True, exist_ok=True)
    kept_rows = []
    for name in sorted(chosen):
        data = json.loads((source / "tasks" / f"{name}.json").read_text(encoding="utf-8"))
        data["Instances"] = data["Instances"][:MAX_INSTANCES]
        text = json.dumps(data, ensure_ascii=False, indent=1)
        (target / "tasks" / f"{name}.json").write_text(text + "\n", encoding="utf-8")
        row = next(r for r in rows if r["task"] == name)
        kept_rows.append({**row, "instances_here": str(len(data["Instances"]))})
    with (target / "tasks.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(kept_rows)
    print(f"bundled {len(kept_rows)} tasks into {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
