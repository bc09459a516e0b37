"""A launch of several processes that accelerate did not join into one run is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from itransfer.errors import ConfigError
from itransfer.runtime.launch import check_launch, launched_processes


def test_launch_disagreeing_with_accelerate_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    alone = SimpleNamespace(num_processes=1, distributed_type="NO")
    with pytest.raises(ConfigError, match="2 processes were launched"):
        check_launch(alone)  # type: ignore[arg-type]
    check_launch(SimpleNamespace(num_processes=2, distributed_type="MULTI_CPU"))  # type: ignore[arg-type]


def test_no_launcher_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_processes() == 1
    check_launch(SimpleNamespace(num_processes=1, distributed_type="NO"))  # type: ignore[arg-type]
