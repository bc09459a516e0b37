"""Two "nodes" on one machine (two `accelerate launch --num_machines 2` commands, one process
each, rendezvous on 127.0.0.1, one shared filesystem): training, resume, the sharded evaluation
and the loss of a node behave as on one node with two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from test_eval_distributed import OVERRIDES, _run_one, assert_same_rows
from test_eval_distributed import SCRIPT as EVAL_SCRIPT
from test_train_distributed import RESUME_SCRIPT, assert_resumes_to
from two_nodes import launch_nodes, start_nodes
from two_processes import launch_two

pytestmark = pytest.mark.slow


def _listing(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob("*")
                  if "tensorboard" not in path.parts)


def test_two_nodes_train_and_resume_as_one_node(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same losses as two processes on one node, stopped and resumed across both nodes,
    and the same files: each checkpoint written once, by the run's main process."""
    model = str(tiny_model_dir)
    launch_two(RESUME_SCRIPT, model, str(tmp_path / "one-node" / "run"), "whole")
    assert_resumes_to(launch_nodes, model, tmp_path / "one-node", tmp_path / "nodes")
    nodes_files = set(_listing(tmp_path / "nodes" / "run"))
    one_node_files = set(_listing(tmp_path / "one-node" / "run"))
    # the stopped-and-resumed run may keep its resumable checkpoint; nothing else differs, and
    # no staging folder or second copy of a checkpoint is left behind
    assert {path for path in nodes_files ^ one_node_files
            if not path.startswith("resume")} == set()
    assert not any("staging" in path or ".tmp" in path for path in nodes_files)


def test_two_nodes_evaluate_as_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    _run_one(EVAL_SCRIPT, str(tiny_model_dir), str(tmp_path / "one"), *OVERRIDES)
    launch_nodes(EVAL_SCRIPT, str(tiny_model_dir), str(tmp_path / "nodes"), *OVERRIDES)
    assert_same_rows(tmp_path / "one", tmp_path / "nodes")


def _node_workers(launcher: subprocess.Popen[str]) -> list[int]:
    """The launcher's descendants (torchrun's agent starts the worker); psutil comes with
    accelerate, and needs no `pgrep` on the machine."""
    return [child.pid for child in psutil.Process(launcher.pid).children(recursive=True)]


@pytest.mark.own_cache
def test_a_lost_node_stops_the_other_with_one_line_and_the_run_resumes(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train = ["-m", "itransfer", "train", "--out", str(run), "--set",
             f"model.name_or_path={tiny_model_dir}", "--set", "model.max_source_length=64",
             "--set", "model.max_target_length=16", "--set", "train.batch_size=8",
             "--set", "train.steps=400", "--set", "train.warmup_steps=2",
             "--set", "train.save_every_steps=10", "--set", "train.log_every=5",
             "--set", "train.tensorboard=false"]
    nodes = start_nodes(*train)
    deadline = time.monotonic() + 300
    while not (run / "resume").is_dir() and time.monotonic() < deadline:
        assert all(node.poll() is None for node in nodes), nodes[0].communicate()[1][-3000:]
        time.sleep(0.5)
    for pid in _node_workers(nodes[1]):  # node 1 is lost: its processes die at once
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, survivor = nodes[0].communicate(timeout=120)  # no hang
    assert time.monotonic() - killed_at < 120
    nodes[1].communicate(timeout=60)
    # the survivor says what happened in one line, without a traceback
    assert "error: another process of this run stopped or became unreachable" in survivor
    assert "run the same command again on every node" in survivor
    assert "Traceback" not in survivor.split("error: another process")[0].split("\n")[-1]
    saved = json.loads(max((run / "resume").glob("step-*/trainer_state.json")).read_text())
    launch_nodes(*train, "--resume")
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert max(row["step"] for row in log if "step" in row) == 400
    assert saved["it_step"] >= 10
