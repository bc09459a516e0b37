"""The package's layering: no module of ``itransfer`` imports from a higher floor.

From the ground up (a module may import its own floor and those below it, never one above):

0. what every layer uses and which names no part of the pipeline: errors, ``runtime/`` (file
   writing, stop requests, the launcher), the paper's constants, settings' markers, the shipped
   experiment files, ``models/`` (model loading, which modules a LoRA adapts), the samplers;
1. ``config/``: the typed config; from ``runs/``, what reads or writes it as files (``compat``,
   ``provenance``) and the evaluation plans the sections ask for;
2. ``data/``: SNI tasks, the paper's split, per-task splits, task contexts;
3. ``runs.identity``: every identity key (it reads the few-shot draw scheme of ``data.splits``);
4. ``encoding/``: token ids, batches, per-token losses and the tokenized cache;
5. ``runs.checkpoints``: the checkpoint folder that training writes and evaluation reads;
   ``runs.probe``: what training hands a transfer monitor that evaluation builds;
   ``runs.monitor_log``: the training log both read, and the checkpoint its monitor says
   transfers best;
6. ``train/`` and ``pretraining/`` (building the embedded models from scratch);
7. ``eval/``, which imports nothing of ``train/`` either (it reads checkpoints through 5);
8. ``analysis/``, with the section registry and the run manifest;
9. ``experiments/``: the experiment YAMLs and the pipeline that runs their stages;
10. ``cli/``.

Every import counts: at the top, inside a function, or under ``TYPE_CHECKING`` (a type-only
import still ties the two modules together). ``KNOWN_UPWARD`` lists the exceptions, each with
its reason; it must not grow.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "itransfer"

FLOORS: list[tuple[str, ...]] = [
    ("itransfer", "itransfer.errors", "itransfer.runtime", "itransfer.config.paper_constants",
     "itransfer.effect", "itransfer.config.packaged", "itransfer.models",
     "itransfer.sampling"),
    ("itransfer.config", "itransfer.runs", "itransfer.runs.compat", "itransfer.runs.provenance",
     "itransfer.runs.eval_plan"),
    ("itransfer.data",),
    ("itransfer.runs.identity",),
    ("itransfer.encoding",),
    ("itransfer.runs.checkpoints", "itransfer.runs.probe", "itransfer.runs.monitor_log"),
    ("itransfer.train", "itransfer.pretraining"),
    ("itransfer.eval",),
    ("itransfer.analysis",),
    ("itransfer.experiments",),
    ("itransfer.cli", "itransfer.__main__"),
]

# An import that runs back up a floor, with its reason; none today, and it must stay so.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imported(path: Path) -> set[str]:
    """The ``itransfer`` modules that ``path`` imports, anywhere in it."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from itransfer.config import schema` imports a module
                name = f"{base}.{alias.name}"
                found.add(name if _is_module(name) else base)
    return {name for name in found if name.split(".")[0] == "itransfer"} - {module}


def _floor(module: str) -> int | None:
    """The floor of ``module``: that of the longest name in FLOORS that is it or a package
    holding it (``itransfer`` itself, the package's face, holds nothing here)."""
    best: tuple[int, int | None] = (-1, None)
    for floor, names in enumerate(FLOORS):
        for name in names:
            holds = module.startswith(name + ".") and name != "itransfer"
            if (module == name or holds) and len(name) > best[0]:
                best = (len(name), floor)
    return best[1]


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_stands_on_a_floor() -> None:
    unplaced = [name for name in _modules() if _floor(name) is None]
    assert unplaced == [], "place these in FLOORS (tests/test_layers.py)"


def test_no_module_imports_from_a_higher_floor() -> None:
    upward = []
    for module, path in _modules().items():
        for imported in sorted(_imported(path)):
            below, above = _floor(module), _floor(imported)
            assert below is not None and above is not None, (module, imported)
            if above > below and (module, imported) not in KNOWN_UPWARD:
                upward.append(f"{module} (floor {below}) imports {imported} (floor {above})")
    assert upward == [], "\n".join(upward)


def test_training_and_evaluation_share_only_what_lies_below_both() -> None:
    """Evaluation reads checkpoints through ``checkpoint_format``, never through the trainer;
    the trainer knows nothing of evaluation."""
    crossing = sorted(
        f"{module} imports {imported}"
        for module, path in _modules().items()
        for imported in _imported(path)
        for one, other in (("itransfer.eval", "itransfer.train"),
                           ("itransfer.train", "itransfer.eval"))
        if module.startswith(one + ".") and (imported + ".").startswith(other + ".")
    )
    assert crossing == [], "\n".join(crossing)


def test_the_known_exceptions_are_still_there() -> None:
    """An exception that the code no longer has leaves the list (so it cannot hide a new one)."""
    modules = _modules()
    gone = sorted(pair for pair in KNOWN_UPWARD if pair[1] not in _imported(modules[pair[0]]))
    assert gone == []
