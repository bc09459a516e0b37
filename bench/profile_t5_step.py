"""Where a T5-large training step spends its time on a GPU, and what the usual levers buy.

    python bench/profile_t5_step.py --out bench/results-profile_t5_step-h200.json  # GPU, ~2 min
    python bench/profile_t5_step.py --smoke --out /tmp/p.json                     # CPU, tiny shape

``bench/gpu_suite.py`` found itransfer's step and HF ``Seq2SeqTrainer``'s equally slow at T5-large
shape (batch 16, 1,024 + 128 tokens, bf16 autocast over fp32 weights: ~0.67 s a step, ~7 % MFU,
~120 GB peak). Both run the same ``transformers`` T5, so this script looks at the model's step
alone (forward, backward, AdamW), in a plain loop:

* ``profile``: the CUDA kernels of two steps under ``torch.profiler``, grouped by kind
  (matrix products, attention softmax/bias, other elementwise, optimizer), with their share;
* ``variants``: seconds per step and peak memory for the levers a user can pull without
  changing the model's code: fused AdamW, bf16 weights (no fp32 master), a smaller batch.

Each variant is timed over a few steps after warm-up, in this one process, so the ratios
against ``baseline`` are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import T5Config, T5ForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MODEL_SHAPES

KERNEL_KINDS = (  # matched in order against the lower-cased kernel name
    ("matrix products", ("gemm", "cutlass", "xmma", "sm90", "cublas", "matmul", "mm_")),
    ("softmax", ("softmax",)),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("reductions", ("reduce", "norm")),
    ("copies and casts", ("copy", "cast", "convert", "fill")),
    ("other elementwise", ("elementwise", "vectorized", "unrolled")),
)


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    for kind, needles in KERNEL_KINDS:
        if any(needle in name for needle in needles):
            return kind
    return "other"


def build(shape: str, vocab: int, device: str, dtype: torch.dtype) -> T5ForConditionalGeneration:
    config = T5Config(vocab_size=vocab, **MODEL_SHAPES[shape], feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(0)
    # Initialising 780M parameters on the host would take longer than the steps timed.
    with torch.device(device):
        return T5ForConditionalGeneration(config).to(dtype=dtype)


def batch(size: int, source: int, target: int, vocab: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(2, vocab, (size, source), generator=generator).to(device),
        "attention_mask": torch.ones(size, source, dtype=torch.long).to(device),
        "labels": torch.randint(2, vocab, (size, target), generator=generator).to(device),
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_variant(args: argparse.Namespace, name: str, *, weights: torch.dtype, autocast: bool,
                fused: bool, batch_size: int) -> dict[str, Any]:
    device = args.device
    model = build(args.shape, args.vocab, device, weights)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    inputs = batch(batch_size, args.source, args.target, args.vocab, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    step_s = (time.perf_counter() - started) / args.steps
    result: dict[str, Any] = {
        "variant": name, "batch_size": batch_size, "step_s": step_s,
        "samples_per_s": batch_size / step_s,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
    }
    if name == "baseline":
        result["profile"] = profile(step, device)
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def profile(step: Any, device: str) -> dict[str, Any]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(2):
            step()
        sync(device)
    by_kind: dict[str, float] = defaultdict(float)
    kernels: list[tuple[str, float]] = []
    for event in prof.key_averages():
        us = event.self_device_time_total if device == "cuda" else event.self_cpu_time_total
        if us <= 0 or (device == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA):
            continue
        kernels.append((event.key, us))
        by_kind[kind_of(event.key)] += us
    total = sum(by_kind.values()) or 1.0
    kernels.sort(key=lambda item: -item[1])
    return {
        "device_ms_per_step": total / 2 / 1e3,
        "share_by_kind": {k: round(v / total, 4) for k, v in sorted(by_kind.items(),
                                                                    key=lambda kv: -kv[1])},
        "top_kernels": [{"name": name[:160], "share": round(us / total, 4)}
                        for name, us in kernels[:15]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.smoke:
        args.device, args.shape, args.vocab = "cpu", "smoke-shape", 64
        args.source, args.target, args.batch, args.warmup, args.steps = 32, 8, 4, 1, 2
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible: pass --smoke to run on the CPU")
        args.device, args.shape, args.vocab = "cuda", "t5-large-shape", 32128
        args.source, args.target, args.batch, args.warmup, args.steps = 1024, 128, 16, 2, 5
        torch.backends.cuda.matmul.allow_tf32 = True
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "shape": args.shape, "source": args.source,
        "target": args.target, "variants": [],
    }
    variants = (
        ("baseline", dict(weights=torch.float32, autocast=True, fused=False,
                          batch_size=args.batch)),
        ("fused_adamw", dict(weights=torch.float32, autocast=True, fused=args.device == "cuda",
                             batch_size=args.batch)),
        ("bf16_weights", dict(weights=torch.bfloat16, autocast=False, fused=False,
                              batch_size=args.batch)),
        ("half_batch", dict(weights=torch.float32, autocast=True, fused=False,
                            batch_size=args.batch // 2)),
    )
    for name, settings in variants:
        try:
            row = run_variant(args, name, **settings)
        except Exception as error:  # one variant's failure must not lose the others
            row = {"variant": name, "error": f"{type(error).__name__}: {error}"[:500]}
        results["variants"].append(row)
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)
    base = results["variants"][0]
    if "profile" in base:
        print(json.dumps(base["profile"], indent=1))


if __name__ == "__main__":
    main()
