"""Peak memory and time of chunked token log-probs / entropy against the naive full-softmax forms.

Two workloads, each run chunked (dcrl.core.logprobs) and naive (one full log_softmax):
  - "logging": log-probs + full-vocabulary entropy under no_grad, as the trainer logs them;
  - "training": token log-probs forward + backward, as the loss needs them.

Each variant runs in a fresh subprocess. Peak extra memory is the process's resident-set
high-water mark (VmHWM, reset through /proc/self/clear_refs once the logits exist) during the
first call, minus the resident size before it. Times are the median of `--repeats` further calls.
For "training", the gradient w.r.t. the logits (as large as the logits) is part of both peaks; the
JSON also gives the peak without it.

Usage:
    python bench/core_memory.py            # 8 × 1024 positions × 49,152 vocab, float32 (~2 min)
    python bench/core_memory.py --quick    # a small shape, seconds

Writes bench/results/core_memory.json and bench/results/core_memory.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from dcrl.core.logprobs import default_chunk_size, logprobs_and_entropy, token_logprobs

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = {
    # name: (workload, implementation)
    "logging_naive": ("logging", "naive"),
    "logging_chunked": ("logging", "chunked"),
    "training_naive": ("training", "naive"),
    "training_chunked": ("training", "chunked"),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _naive_logging(logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
    with torch.no_grad():
        full_logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)  # (N, L, V)
        logprobs = full_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        entropy = -(full_logprobs.exp() * full_logprobs).sum(-1)
    return logprobs, entropy


def _chunked_logging(logits, tokens, temperature, chunk_size):
    with torch.no_grad():
        return logprobs_and_entropy(logits, tokens, temperature, chunk_size=chunk_size)


def _naive_training(logits, tokens, temperature, weights):
    full_logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)  # (N, L, V)
    logprobs = full_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    (logprobs * weights).sum().backward()


def _chunked_training(logits, tokens, temperature, chunk_size, weights):
    logprobs = token_logprobs(logits, tokens, temperature, chunk_size=chunk_size)
    (logprobs * weights).sum().backward()


def run_worker(args: argparse.Namespace) -> dict:
    """One variant in this process: memory of the first call, then timed repeats."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    workload, implementation = VARIANTS[args.worker]
    dtype = getattr(torch, args.dtype)
    shape = (args.rows, args.length, args.vocab)
    logits = (torch.randn(shape) * 2).to(dtype)  # (N, L, V)
    tokens = torch.randint(0, args.vocab, shape[:2])
    weights = torch.randn(shape[:2])
    if workload == "training":
        logits.requires_grad_(True)

    def call(logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> None:
        if workload == "logging" and implementation == "naive":
            _naive_logging(logits, tokens, args.temperature)
        elif workload == "logging":
            _chunked_logging(logits, tokens, args.temperature, args.chunk_size)
        elif implementation == "naive":
            _naive_training(logits, tokens, args.temperature, weights)
        else:
            _chunked_training(logits, tokens, args.temperature, args.chunk_size, weights)
        logits.grad = None

    # One-off costs (lazy kernel and thread-pool set-up) are paid on a tiny slice first.
    small = logits.detach()[:1, :4].clone().requires_grad_(logits.requires_grad)
    call(small, tokens[:1, :4], weights[:1, :4])
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current resident size
    baseline_kib = _status_kib("VmRSS")
    start = time.perf_counter()
    call(logits, tokens, weights)
    first_seconds = time.perf_counter() - start
    peak_extra_mb = (_status_kib("VmHWM") - baseline_kib) / 1024

    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call(logits, tokens, weights)
        seconds.append(time.perf_counter() - start)
    return {
        "workload": workload,
        "implementation": implementation,
        "peak_extra_mb": round(peak_extra_mb, 1),
        "first_call_seconds": round(first_seconds, 4),
        "seconds": [round(s, 4) for s in seconds],
        "seconds_median": round(statistics.median(seconds), 4),
    }


def machine_description(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = ["logging", "training"]
    labels = ["log-probs + entropy\n(no_grad, logged)", "log-probs\nforward + backward"]
    colors = {"naive": "#c44e52", "chunked": "#4c72b0"}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in [
        (axes[0], "peak_extra_mb", "peak extra memory (MB)"),
        (axes[1], "seconds_median", "time per call (s, median)"),
    ]:
        for offset, implementation in [(-0.2, "naive"), (0.2, "chunked")]:
            values = [results["variants"][f"{w}_{implementation}"][key] for w in workloads]
            bars = axis.bar(
                [i + offset for i in range(2)],
                values,
                width=0.4,
                label=implementation,
                color=colors[implementation],
            )
            axis.bar_label(bars, fmt="%.3g", fontsize=8)
        axis.set_xticks(range(2), labels)
        axis.set_title(title)
    handles, legend_labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="lower center", ncol=2, frameon=False)
    n, length, vocab = results["shape"]
    figure.suptitle(
        f"dcrl.core.logprobs, {n}×{length} positions × {vocab} vocab, {results['dtype']} logits, "
        f"chunk {results['chunk_size']}, {results['machine']['torch_threads']} thread(s)",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape (2 × 128 × 8192)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="positions per block (default: the library's)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 beside other work)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "core_memory.json")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.length, args.vocab = 2, 128, 8192
    if args.chunk_size is None:
        probe = torch.empty((0, 0, args.vocab), dtype=getattr(torch, args.dtype))
        args.chunk_size = default_chunk_size(probe)

    if args.worker:
        print(json.dumps(run_worker(args)))
        return

    variants = {}
    for name in VARIANTS:
        command = [sys.executable, __file__, "--worker", name]
        for flag in ["rows", "length", "vocab", "dtype", "temperature", "chunk_size", "repeats"]:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        command += ["--threads", str(args.threads)]
        completed = subprocess.run(command, check=True, capture_output=True, text=True)
        variants[name] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"{name:18s} {variants[name]}")

    element_bytes = torch.tensor([], dtype=getattr(torch, args.dtype)).element_size()
    logits_mb = args.rows * args.length * args.vocab * element_bytes / 2**20
    for name in ["training_naive", "training_chunked"]:
        # the gradient w.r.t. the logits has the logits' size and dtype in both variants
        variants[name]["peak_extra_without_grad_mb"] = round(
            variants[name]["peak_extra_mb"] - logits_mb, 1
        )
    ratios = {}
    for workload in ["logging", "training"]:
        naive, chunked = variants[f"{workload}_naive"], variants[f"{workload}_chunked"]
        ratios[workload] = {
            "memory_naive_over_chunked": round(
                naive["peak_extra_mb"] / chunked["peak_extra_mb"], 2
            ),
            "speedup_chunked_over_naive": round(
                naive["seconds_median"] / chunked["seconds_median"], 2
            ),
        }
    ratios["training"]["memory_without_grad_naive_over_chunked"] = round(
        variants["training_naive"]["peak_extra_without_grad_mb"]
        / max(variants["training_chunked"]["peak_extra_without_grad_mb"], 1.0),
        2,
    )
    results = {
        "benchmark": "core_memory",
        "shape": [args.rows, args.length, args.vocab],
        "dtype": args.dtype,
        "logits_mb": round(logits_mb, 1),
        "temperature": args.temperature,
        "chunk_size": args.chunk_size,
        "repeats": args.repeats,
        "machine": machine_description(args.threads),
        "variants": variants,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
