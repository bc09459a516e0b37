"""bench/gpu_suite.py: the CPU smoke run writes the figures a GPU run is compared by, with both
grid engines training under bf16; without a GPU the suite refuses in one line; the targets'
pass/fail, the MFU's FLOP count and the time guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench"
sys.path.insert(0, str(BENCH))

import gpu_suite  # noqa: E402  (bench/ is not a package)


def run_suite(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / "gpu_suite.py"), *args], capture_output=True, text=True,
        timeout=900, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-suite") / "smoke.json"
    result = run_suite("--smoke", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def positive(value: Any) -> bool:
    return isinstance(value, float) and value > 0


@pytest.mark.slow  # the whole suite in smoke mode: ~25 s of the fast suite
def test_smoke_run_writes_the_named_figures(smoke: dict[str, Any]) -> None:
    assert {name: part["status"] for name, part in smoke["parts"].items()} == {
        "setup": "done", "train_sni": "done", "train_fixed": "done", "grid_batched": "done",
        "grid_sequential": "done", "ddp": "skipped"}
    train, grid = smoke["train"], smoke["grid"]
    assert positive(train["ratio_samples_per_s"]) and positive(train["ratio_real_tokens_per_s"])
    for part in ("sni", "fixed"):
        for trainer in ("itransfer", "hf"):
            measured = train[part][trainer]
            assert measured["steps_timed"] >= 1 and positive(measured["samples_per_s"])
    assert positive(train["fixed"]["flops_per_sample"])
    # A CPU has no bf16 peak in the table and no CUDA memory: null, with a note for the MFU.
    assert train["mfu"] is None and train["peak_memory_gb"] is None
    assert any("mfu is null" in note for note in smoke["notes"])
    for engine in ("sequential", "batched"):
        measured = grid[engine]
        assert measured["cells"] == measured["planned_cells"] > 0
        for key in ("s_per_cell", "train_s_per_cell", "loss_s_per_cell", "generate_s_per_cell"):
            assert positive(measured[key]), (engine, key)
    assert positive(grid["ratio"])
    assert grid["sequential"]["s_per_cell_by_k"].keys() == {"0", "5"}
    assert smoke["ddp"]["status"] == "skipped" and "GPU" in smoke["ddp"]["note"]
    env = smoke["environment"]
    assert env["torch"] == torch.__version__ and "cuda" in env and "gpu_name" in env
    assert env["git"]["commit"]
    assert smoke["anchors"]["sequential_cell_s"] == 13.9
    assert [target["figure"] for target in smoke["targets"]] == [
        "train.ratio_samples_per_s", "train.mfu", "grid.batched.s_per_cell"]
    assert smoke["targets"][1]["pass"] is None  # the MFU was not measured
    assert all(isinstance(target["pass"], bool) for target in smoke["targets"][::2])


@pytest.mark.slow
def test_smoke_grid_trains_both_engines_from_a_bf16_checkpoint(smoke: dict[str, Any]) -> None:
    """Each engine's k = 5 LoRA moves the test loss away from the untrained k = 0 model's, and
    the engines agree to bf16 rounding. (An autocast region around a whole cell would not do
    this: autocast caches its bf16 copy of PEFT's LoRA weights, so every step would run the
    initial adapter.)"""
    assert smoke["model"]["grid_checkpoint_dtype"] == "bfloat16"
    for engine in ("sequential", "batched"):
        losses = smoke["grid"][engine]["losses"]
        tasks = {key.split("|")[0] for key in losses}
        assert tasks
        for task in tasks:
            untrained = losses[f"{task}|k=0|none|seed=0"]
            assert abs(losses[f"{task}|k=5|none|seed=0"] - untrained) > 1e-3, (engine, task)
    assert smoke["grid"]["loss_gap_cells"] >= 2
    assert smoke["grid"]["max_loss_gap"] < 0.05


def test_without_cuda_the_suite_refuses_in_one_line() -> None:
    result = run_suite("--out", os.devnull, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--smoke" in lines[0]


TARGETS = (
    gpu_suite.Target("at least", "a.b", ">=", 3.0),
    gpu_suite.Target("at most", "c", "<=", 1.0),
)


@pytest.mark.parametrize(
    ("results", "passes"),
    [
        ({"a": {"b": 3.0}, "c": 1.0}, [True, True]),  # the thresholds themselves pass
        ({"a": {"b": 2.9}, "c": 1.5}, [False, False]),
        ({"a": {"b": 12}, "c": 0.2}, [True, True]),
        ({"a": {"b": None}}, [None, None]),  # not measured: neither pass nor fail
        ({"a": 5.0, "c": True}, [None, None]),
    ],
)
def test_targets_pass_fail_or_not_measured(results: dict[str, Any], passes: list[Any]) -> None:
    checked = gpu_suite.check_targets(results, TARGETS)
    assert [entry["pass"] for entry in checked] == passes
    assert [entry["figure"] for entry in checked] == ["a.b", "c"]


def skeleton(peak: float | None) -> dict[str, Any]:
    return {"environment": {"peak_bf16_tflops": peak}, "train": {}, "grid": {}, "parts": {},
            "ddp": {}}


def test_derive_gives_the_issue_targets_from_the_parts_figures() -> None:
    results = skeleton(989.0)
    results["train"] = {
        "sni": {"itransfer": {"samples_per_s": 90.0, "real_tokens_per_s": 5e4,
                              "peak_memory_gb": 40.0},
                "hf": {"samples_per_s": 30.0, "real_tokens_per_s": 2e4, "peak_memory_gb": 50.0}},
        "fixed": {"flops_per_sample": 2.8e12,
                  "itransfer": {"samples_per_s": 130.0, "peak_memory_gb": 60.0},
                  "hf": {"samples_per_s": 26.8, "peak_memory_gb": 55.0}},
    }
    results["grid"] = {"sequential": {"s_per_cell": 10.0}, "batched": {"s_per_cell": 0.8}}
    gpu_suite.derive(results)
    train = results["train"]
    assert train["ratio_samples_per_s"] == pytest.approx(3.0)
    assert train["ratio_real_tokens_per_s"] == pytest.approx(2.5)
    assert train["mfu"] == pytest.approx(130.0 * 2.8e12 / 989e12)
    assert train["hf_mfu"] == pytest.approx(26.8 * 2.8e12 / 989e12)
    assert train["peak_memory_gb"] == 60.0 and train["hf_peak_memory_gb"] == 55.0
    assert results["grid"]["ratio"] == pytest.approx(12.5)
    assert results["grid"]["speedup_vs_sequential_anchor"] == pytest.approx(13.9 / 0.8)
    assert [t["pass"] for t in results["targets"]] == [True, True, True]

    unknown_gpu = skeleton(None)
    unknown_gpu["train"] = results["train"]
    gpu_suite.derive(unknown_gpu)
    assert unknown_gpu["train"]["mfu"] is None
    assert [t["pass"] for t in unknown_gpu["targets"]] == [True, None, None]


@pytest.mark.parametrize(
    ("name", "tflops", "slug"),
    [
        ("NVIDIA H200", 989.0, "h200"),
        ("NVIDIA H100 80GB HBM3", 989.0, "h100-80gb-hbm3"),
        ("NVIDIA H100 PCIe", 756.0, "h100-pcie"),
        ("NVIDIA A100-SXM4-80GB", 312.0, "a100-sxm4-80gb"),
        ("NVIDIA L40S", 362.0, "l40s"),
        ("NVIDIA L4", 121.0, "l4"),
        ("Tesla V100-SXM2-16GB", None, "tesla-v100-sxm2-16gb"),
    ],
)
def test_gpu_peaks_and_file_names(name: str, tflops: float | None, slug: str) -> None:
    assert gpu_suite.peak_bf16_tflops(name) == tflops
    assert gpu_suite.gpu_slug(name) == slug


def test_flop_count_matches_torch_flop_counter() -> None:
    """The MFU's FLOPs per example are what torch counts over a forward and backward."""
    from transformers import T5ForConditionalGeneration

    from train_throughput import shape_config

    shape = shape_config("smoke-shape", 512)
    model = T5ForConditionalGeneration(shape)
    batch, source, target = 3, 24, 8
    input_ids = torch.randint(2, 512, (batch, source))
    labels = torch.randint(2, 512, (batch, target))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=input_ids, labels=labels).loss.backward()
    expected = batch * gpu_suite.t5_train_flops_per_sample(shape, source, target)
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_time_guard_records_each_outcome_and_writes_after_every_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_suite, "MIN_PART_S", 0.0)
    monkeypatch.setattr(gpu_suite, "GRACE_S", 0.2)
    monkeypatch.setattr(gpu_suite, "BUDGETS", {name: 0.1 for name in gpu_suite.BUDGETS})
    out = tmp_path / "suite.json"
    suite = gpu_suite.Suite(skeleton(None), out, budget_s=60)

    def overruns(results: dict[str, Any], deadline: float) -> None:
        while True:  # ignores its deadline: interrupted GRACE_S past it
            time.sleep(0.01)

    def stops_at_its_deadline(results: dict[str, Any], deadline: float) -> None:
        results["train"]["sni"] = {"itransfer": {"samples_per_s": 1.0, "cut_short": True}}

    def fails(results: dict[str, Any], deadline: float) -> None:
        raise RuntimeError("CUDA out of memory")

    suite.run_part("grid_batched", overruns)
    assert json.loads(out.read_text())["parts"]["grid_batched"]["status"] == "cut"
    suite.run_part("train_sni", stops_at_its_deadline)
    assert json.loads(out.read_text())["parts"]["train_sni"]["status"] == "cut_short"
    assert not suite.failed
    suite.run_part("ddp", fails)
    written = json.loads(out.read_text())["parts"]["ddp"]
    assert written["status"] == "error" and written["error"] == "RuntimeError: CUDA out of memory"
    assert "Traceback" in written["traceback"] and suite.failed

    spent = gpu_suite.Suite(skeleton(None), out, budget_s=0)
    spent.run_part("grid_sequential", fails)  # no time left: not started, so no failure
    assert spent.results["parts"]["grid_sequential"]["status"] == "skipped" and not spent.failed


def test_the_suite_fits_in_eight_minutes_by_construction() -> None:
    """Parts start only within the suite's budget and are interrupted GRACE_S past their own;
    what is left of 8 minutes covers start-up (imports) and clean-up."""
    assert gpu_suite.SUITE_BUDGET_S + gpu_suite.GRACE_S <= 8 * 60 - 30
    assert set(gpu_suite.BUDGETS) == {"setup", *gpu_suite.PARTS}


def test_t5_large_shape_size_and_the_anchor_under_this_flop_count() -> None:
    """bench/README.md: 726M parameters with the bundled tokenizer, and the anchor's 26.8
    samples/s at 1,024 + 128 is 7.7 % of an H200's bf16 peak by this FLOP count."""
    from transformers import T5ForConditionalGeneration

    from itransfer.models.loading import load_model_and_tokenizer
    from train_throughput import shape_config

    vocab = len(load_model_and_tokenizer("itransfer:tiny-t5").tokenizer)
    shape = shape_config("t5-large-shape", vocab)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in T5ForConditionalGeneration(shape).parameters())
    assert round(parameters / 1e6) == 726
    flops = gpu_suite.t5_train_flops_per_sample(shape, 1024, 128)
    anchor_mfu = gpu_suite.ANCHORS["hf_samples_per_s_fixed"] * flops / (989e12)
    assert round(anchor_mfu, 3) == 0.077


def test_an_autocast_region_around_a_peft_cell_trains_a_stale_adapter() -> None:
    """Why the suite's grid runs from a bf16 checkpoint, not inside torch.autocast: autocast
    keeps its bf16 copies of PEFT's LoRA weights for the whole region, so every step's loss is
    the first one's (bench/README.md). Outside such a region the same cell learns."""
    from transformers import T5ForConditionalGeneration

    from itransfer.config.schema import FewShotLoraConfig
    from itransfer.encoding.examples import EncodedExample
    from itransfer.eval.lora import TransferCell, train_cell_peft
    from train_throughput import shape_config

    torch.manual_seed(0)
    shape = shape_config("smoke-shape", 512)
    shape.dropout_rate = 0.0  # every step sees the same batch: only the adapter can change it
    model = T5ForConditionalGeneration(shape)
    examples = tuple(EncodedExample(tuple(range(5 + i, 25 + i)), (40 + i, 41, 42, 1))
                     for i in range(5))
    cell = TransferCell("task", 5, "none", 0, examples)
    losses = {}
    for region in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=region):
            trained, losses[region] = train_cell_peft(
                model, cell, FewShotLoraConfig(dropout=0.0, learning_rate=1e-2), pad_token_id=0,
                architecture="seq2seq", device=torch.device("cpu"))
        model = trained.unload()
    # Stale: the initial adapter at every step (the batch's order moves the sum by rounding).
    assert max(losses[True]) - min(losses[True]) < 1e-4
    assert losses[False][-1] < losses[False][0] - 0.1


def test_readme_says_no_gpu_numbers_while_bench_holds_none() -> None:
    recorded = [path for path in BENCH.glob("results-gpu_suite-*.json")
                if not json.loads(path.read_text()).get("smoke")]
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Performance on a GPU", 1)[1].split("\n## ", 1)[0]
    assert ("No GPU numbers have been measured yet" in section) == (not recorded)
    assert "python bench/gpu_suite.py" in section


@pytest.mark.slow
def test_two_processes_part_runs_on_cpus_when_asked(tmp_path: Path) -> None:
    """The ddp part's launch (accelerate, two processes, rank 0 writes) on a CPU: on a GPU
    machine it runs the same command when 2+ GPUs are visible."""
    out = tmp_path / "ddp.json"
    result = run_suite("--smoke", "--parts", "ddp", "--ddp", "on", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads(out.read_text())["ddp"]
    assert ddp["processes"] == 2 and ddp["steps_timed"] >= 1 and positive(ddp["samples_per_s"])


@pytest.mark.slow
def test_profile_script_smoke_times_every_variant_and_splits_kernel_time(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / "profile_t5_step.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    variants = {row["variant"]: row for row in json.loads(out.read_text())["variants"]}
    assert set(variants) == {"baseline", "fused_adamw", "bf16_weights", "half_batch"}
    assert all("error" not in row and row["step_s"] > 0 for row in variants.values()), variants
    assert variants["half_batch"]["batch_size"] * 2 == variants["baseline"]["batch_size"]
    shares = variants["baseline"]["profile"]["share_by_kind"]
    assert shares["matrix products"] > 0 and sum(shares.values()) == pytest.approx(1, abs=1e-3)


def test_profile_script_sorts_kernels_into_kinds() -> None:
    import profile_t5_step

    kind = profile_t5_step.kind_of
    assert kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n") == "matrix products"
    assert kind("void at::native::(anonymous)::cunn_SoftMaxForward<4, float>") == "softmax"
    assert kind("void at::native::multi_tensor_apply_kernel<AdamW>") == "optimizer"
    assert kind("void at::native::vectorized_elementwise_kernel<4, add>") == "other elementwise"
    assert kind("aten::something_new") == "other"
