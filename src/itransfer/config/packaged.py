"""Experiment configs shipped inside the package, addressable by name from anywhere.

``src/itransfer/configs/`` holds the quickstart and the paper's experiments
(``paper/sec4_sampling.yaml``, …); a wheel install has them too, so
``itransfer run paper/sec4_sampling --scale tiny`` works without a clone. A config's name is
its path under that folder without ``.yaml``. ``itransfer configs list`` and
``itransfer configs copy`` (after torchtune's ``tune ls`` / ``tune cp``) read this module.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from itransfer.errors import ConfigError

SUFFIX = ".yaml"


def packaged_config_dir() -> Path:
    """The folder of the shipped configs (inside the installed package)."""
    return Path(str(resources.files("itransfer") / "configs"))


@dataclass(frozen=True)
class PackagedConfig:
    """One shipped config: its name, its file, and the one line that says what it runs."""

    name: str
    path: Path
    description: str


def packaged_configs() -> list[PackagedConfig]:
    """Every shipped config, sorted by name."""
    root = packaged_config_dir()
    return [
        PackagedConfig(path.relative_to(root).with_suffix("").as_posix(), path,
                       _description(path))
        for path in sorted(root.rglob(f"*{SUFFIX}"))
    ]


def _description(path: Path) -> str:
    """The config's ``title``, or else its first comment line."""
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if isinstance(data, dict) and isinstance(data.get("title"), str):
        return data["title"]
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def find_config(argument: str | Path) -> Path:
    """A ``--config`` argument as a file: an existing path wins, then a shipped name (with or
    without ``.yaml``); anything else is a one-line error that lists the names."""
    path = Path(argument).expanduser()
    if path.is_file():
        return path
    return packaged_config(str(argument))


def packaged_config(name: str) -> Path:
    """The file of the shipped config ``name`` (``paper/sec4_sampling``, ``.yaml`` optional)."""
    wanted = Path(name).as_posix().removesuffix(SUFFIX)
    configs = packaged_configs()
    for config in configs:
        if config.name == wanted:
            return config.path
    raise ConfigError(
        f"config {name!r}: not a file, nor a packaged config "
        f"(packaged: {', '.join(c.name for c in configs)}; see `itransfer configs list`)"
    )


def copy_config(name: str, destination: str | Path, *, force: bool = False) -> Path:
    """Copy a shipped config to ``destination`` (a file, or a folder to put ``NAME.yaml`` in)
    to start one's own; an existing file is replaced only with ``force``."""
    source = packaged_config(name)
    target = Path(destination).expanduser()
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder to copy {name} into")
    shutil.copyfile(source, target)
    return target
