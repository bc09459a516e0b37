"""Shared fixtures: the team's real SNI slice, an isolated index cache, task-file factories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SLICE = REPO_ROOT.parent / "shared" / "data" / "sni-slice"


@pytest.fixture(scope="session")
def shared_tokenized_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenized training cache for the whole session (see :func:`isolated_cache`)."""
    return tmp_path_factory.mktemp("tokenized-shared")


@pytest.fixture(autouse=True)
def isolated_cache(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    shared_tokenized_cache: Path,
) -> Path:
    """Each test gets its own cache folder so no test sees another's (or the user's) index.

    Its ``tokenized/`` folder is the session's shared one: a tokenized training set is keyed by
    everything its ids depend on, so a test that trains on the bundled slice reads what an
    earlier test built instead of tokenizing the same instances again. Tests that check how
    that cache is built, found or missed are marked ``own_cache`` and get an empty one.
    """
    cache = tmp_path_factory.mktemp("itransfer-cache")
    if request.node.get_closest_marker("own_cache") is None:
        (cache / "tokenized").symlink_to(shared_tokenized_cache, target_is_directory=True)
    monkeypatch.setenv("ITRANSFER_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def sni_slice() -> Path:
    """The 194-task slice in ../shared (present on developer machines and in CI)."""
    if not (SHARED_SLICE / "tasks").is_dir():
        pytest.skip(f"shared SNI slice not found at {SHARED_SLICE}")
    return SHARED_SLICE


def task_json(name: str = "task001_demo_qa", **overrides: Any) -> dict[str, Any]:
    """A minimal valid SNI task in the benchmark's schema."""
    data: dict[str, Any] = {
        "Contributors": ["Test"],
        "Source": ["demo"],
        "URL": ["https://example.org"],
        "Categories": ["Question Answering"],
        "Reasoning": [],
        "Definition": ["Answer the question."],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Wikipedia"],
        "Positive Examples": [
            {"input": f"q{i}", "output": f"a{i}", "explanation": "ok"} for i in range(4)
        ],
        "Negative Examples": [],
        "Instances": [
            {"id": f"{name}-{i}", "input": f"question {i}", "output": [f"answer {i}"]}
            for i in range(200)
        ],
        "Instance License": ["CC BY 4.0"],
    }
    data.update(overrides)
    return data


def write_task(folder: Path, name: str = "task001_demo_qa", **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(task_json(name, **overrides), indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A very small T5 (random weights, a tokenizer trained on the bundled corpus).

    Built with the real pre-training recipe at toy size, with dropout switched on so that the
    resume tests also check that the dropout RNG is restored.
    """
    from itransfer.pretraining.seq2seq import PretrainConfig, pretrain

    folder = tmp_path_factory.mktemp("tiny-model") / "model"
    pretrain(
        PretrainConfig(
            tokenizer_documents=3000, vocab_size=1000, steps_span=0, steps_prefix=0,
            d_model=32, d_ff=64, num_heads=2, num_layers=1, num_decoder_layers=1,
        ),
        folder,
    )
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dropout_rate"] = 0.1
    config_path.write_text(json.dumps(config))
    return folder
