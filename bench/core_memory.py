"""Peak memory and time of dcrl's log-prob paths against the naive full-softmax forms and TRL's
chunked kernel, and the longest response a LoRA update of a Qwen2.5-0.5B-shaped model fits in.

Part 1, at each shape (default: 8 × 1,024 positions × 49,152 vocabulary, and 2 × 1,024 positions ×
151,936, Qwen2.5's vocabulary; hidden size 896, Qwen2.5-0.5B's), float32:
  - "logging": log-probs + full-vocabulary entropy under no_grad from existing logits, naive (one
    log_softmax) and chunked (dcrl.core.logprobs), as the trainer logged them before the fused head;
  - "training": token log-probs forward + backward from the last hidden states (N, L, H) through a
    frozen head (V, H) (LoRA: the gradient goes to the hidden states), four ways:
      naive    — full logits through the head, one log_softmax, autograd;
      chunked  — full logits through the head, dcrl.core.logprobs' chunked kernel (dcrl before);
      fused    — dcrl.core.fused_head (the trainer's default now), never the full logits;
      trl      — TRL 1.16's trl.kernels.ChunkedLogProbFunction (its torch tiles: no Triton here).
Each variant runs in a fresh subprocess. Peak extra memory is the process's resident-set
high-water mark (VmHWM, reset through /proc/self/clear_refs once the inputs exist) during the first
call, minus the resident size before it. Times are the median of `--repeats` further calls. The
load average (os.getloadavg) before and after each variant is recorded: on a shared machine
times are indicative only.

Part 2 ("longest"): one LoRA update (rank 16 on q/k/v/o, dcrl's default) of a Qwen2.5-0.5B-shaped
model (hidden 896, MLP 4,864, 14 heads, 2 KV heads, tied embeddings, vocabulary 151,936, random
weights, float32): one row of a 64-token prompt and an L-token response, response_logprobs with
grad (dcrl.train.forward: the full-logits path and the fused path), then backward. 24 layers do not
fit a quick measurement, so the peak extra memory is measured with 1 and 2 layers at 3 response
lengths, fitted per layer count as a + s·L (least squares), and extrapolated linearly in the layer
count to 24: s_24 = s_1 + 23 (s_2 − s_1), a_24 likewise. The longest response is then
(memory − the 24-layer model's weights − a_24) / s_24, with memory this machine's MemTotal. The
linear model is checked by the fit's largest residual, reported in the JSON.

Usage:
    python bench/core_memory.py            # both parts (~15 min on an idle 2-core machine)
    python bench/core_memory.py --quick    # small shapes, under a minute
    python bench/core_memory.py --skip-longest

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
import torch.nn.functional as F

from dcrl.core.fused_head import default_head_chunk_size, fused_logprobs_entropy
from dcrl.core.logprobs import default_chunk_size, logprobs_and_entropy, token_logprobs

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOGGING = ("naive", "chunked")
TRAINING = ("naive", "chunked", "fused", "trl")
VARIANTS = [f"logging_{name}" for name in LOGGING] + [f"training_{name}" for name in TRAINING]
# (rows, positions per row, vocabulary) of part 1; the Qwen vocabulary with 2 rows keeps the
# naive form (logits, their log-softmax and gradients: ~4 × 1.2 GB) within this machine's memory.
SHAPES = [(8, 1024, 49152), (2, 1024, 151936)]
QUICK_SHAPES = [(2, 128, 8192), (1, 128, 32000)]
QWEN_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
)
FULL_LAYERS = 24
PROMPT_TOKENS = 64


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current resident size
    return _status_kib("VmRSS")


def _peak_extra_mb(baseline_kib: int) -> float:
    return round((_status_kib("VmHWM") - baseline_kib) / 1024, 1)


def _trl_function():
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    return ChunkedLogProbFunction


def run_worker(args: argparse.Namespace) -> dict:
    """One variant of part 1 in this process: memory of the first call, then timed repeats."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    workload, implementation = args.worker.split("_", 1)
    rows, length, vocab = args.rows, args.length, args.vocab
    tokens = torch.randint(0, vocab, (rows, length))
    weights = torch.randn(rows, length)
    if workload == "logging":
        logits = torch.randn(rows, length, vocab) * 2  # (N, L, V)
    else:
        hidden = torch.randn(rows, length, args.hidden, requires_grad=True)  # (N, L, H)
        head = torch.randn(vocab, args.hidden) / args.hidden**0.5  # (V, H), frozen
    trl_function = _trl_function() if implementation == "trl" else None

    def call(n: int, t: int) -> None:
        if workload == "logging":
            with torch.no_grad():
                if implementation == "naive":
                    full = torch.log_softmax(logits[:n, :t].float(), dim=-1)
                    full.gather(-1, tokens[:n, :t].unsqueeze(-1))
                    -(full.exp() * full).sum(-1)
                else:
                    logprobs_and_entropy(logits[:n, :t], tokens[:n, :t])
            return
        h, tok, w = hidden[:n, :t], tokens[:n, :t], weights[:n, :t]
        if implementation == "naive":
            full = torch.log_softmax(F.linear(h, head), dim=-1)  # (N, L, V)
            logprobs = full.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        elif implementation == "chunked":
            logprobs = token_logprobs(F.linear(h, head), tok)
        elif implementation == "fused":
            logprobs, _ = fused_logprobs_entropy(h, head, tok)
        else:  # TRL 1.16's kernel, with the chunk size its GRPO trainer passes
            logprobs = trl_function.apply(
                h.reshape(-1, h.shape[-1]), head, None, tok.reshape(-1), 1.0, 32768, None, 1.0, ()
            )[0]
        (logprobs.reshape(w.shape) * w).sum().backward()
        hidden.grad = None

    call(1, 4)  # one-off costs (lazy kernels, thread pools) on a tiny slice first
    load_before = os.getloadavg()
    baseline_kib = _reset_peak()
    start = time.perf_counter()
    call(rows, length)
    first_seconds = time.perf_counter() - start
    peak_extra_mb = _peak_extra_mb(baseline_kib)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call(rows, length)
        seconds.append(time.perf_counter() - start)
    return {
        "workload": workload,
        "implementation": implementation,
        "peak_extra_mb": peak_extra_mb,
        "first_call_seconds": round(first_seconds, 4),
        "seconds": [round(s, 4) for s in seconds],
        "seconds_median": round(statistics.median(seconds), 4),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def qwen_config(layers: int):
    from transformers import Qwen2Config

    return Qwen2Config(**QWEN_05B, num_hidden_layers=layers)


def run_lora_worker(args: argparse.Namespace) -> dict:
    """Part 2: peak extra memory of one LoRA forward + backward through response_logprobs."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    from dcrl.models.loading import LoraOptions
    from dcrl.train.forward import head_path, response_logprobs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    options = LoraOptions()
    base = Qwen2ForCausalLM(qwen_config(args.layers))
    if args.checkpointing:  # as dcrl.models.load_policy(gradient_checkpointing=True) does
        enable = getattr(base, "activation_checkpointing_enable", None)
        (enable or base.gradient_checkpointing_enable)({"use_reentrant": False})
    model = get_peft_model(
        base,
        LoraConfig(
            r=options.rank,
            lora_alpha=options.alpha,
            target_modules=list(options.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    fused = args.worker == "lora_fused"
    assert head_path(model) == "fused"
    input_ids = torch.randint(0, QWEN_05B["vocab_size"], (1, PROMPT_TOKENS + args.length))
    attention_mask = torch.ones_like(input_ids)
    weights = torch.randn(1, args.length)

    def call(width: int) -> None:
        logprobs, _ = response_logprobs(
            model,
            input_ids[:, -(PROMPT_TOKENS + width) :],
            attention_mask[:, -(PROMPT_TOKENS + width) :],
            input_ids[:, -width:],
            with_entropy=True,
            fused=fused,
        )
        (logprobs * weights[:, :width]).sum().backward()
        model.zero_grad(set_to_none=True)

    call(4)
    load_before = os.getloadavg()
    baseline_kib = _reset_peak()
    start = time.perf_counter()
    call(args.length)
    return {
        "path": "fused" if fused else "full_logits",
        "gradient_checkpointing": bool(args.checkpointing),
        "layers": args.layers,
        "response_tokens": args.length,
        "peak_extra_mb": _peak_extra_mb(baseline_kib),
        "seconds": round(time.perf_counter() - start, 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares y = a + s·x -> (a, s, largest |residual|)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points
    )
    intercept = mean_y - slope * mean_x
    return intercept, slope, max(abs(y - intercept - slope * x) for x, y in points)


def longest_response(measurements: list[dict], memory_mb: float) -> dict:
    """Extrapolate the measurements to 24 layers and the longest response that fits.

    Per path and layer count k ∈ {1, 2}: peak = a_k + s_k·L (least squares). The backbone is the
    same on both paths, so the memory one more layer adds per token, c = s_2 − s_1, is one number:
    it is taken from the fused path, whose fits are linear to ~1 MB (the full-logits path's peaks
    carry the allocator's noise of its GB-sized blocks, tens of MB: its own c is reported too,
    as "own_per_layer_mb_per_token"); likewise the intercept a layer adds, d = a_2 − a_1 (fused).
    Then s_24 = s_1 + 23 c and a_24 = a_1 + 23 d on each path, and the longest response is
    (memory − the 24-layer model's float32 weights − a_24) / s_24.
    """
    with torch.device("meta"):
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM(qwen_config(FULL_LAYERS))
    weights_mb = sum(p.numel() * 4 for p in model.parameters()) / 2**20  # tied: counted once
    out = {"memory_mb": round(memory_mb), "model_weights_mb": round(weights_mb, 1)}
    fits = {}
    for path in ("full_logits", "fused"):
        fits[path] = {}
        for layers in sorted({m["layers"] for m in measurements}):
            points = [
                (m["response_tokens"], m["peak_extra_mb"])
                for m in measurements
                if m["path"] == path and m["layers"] == layers
            ]
            fits[path][layers] = _fit_line(points)
    (l1, (a1_fused, s1_fused, _)), (l2, (a2_fused, s2_fused, _)) = sorted(fits["fused"].items())
    per_layer = (s2_fused - s1_fused) / (l2 - l1)
    per_layer_intercept = (a2_fused - a1_fused) / (l2 - l1)
    out["per_layer_mb_per_token"] = round(per_layer, 4)
    out["per_layer_intercept_mb"] = round(per_layer_intercept, 2)
    for path in ("full_logits", "fused"):
        (_, (a1, s1, _)), (_, (a2, s2, _)) = sorted(fits[path].items())
        slope = s1 + (FULL_LAYERS - l1) * per_layer
        intercept = a1 + (FULL_LAYERS - l1) * per_layer_intercept
        out[path] = {
            "fits": {
                str(layers): {
                    "intercept_mb": round(a, 1),
                    "mb_per_token": round(s, 4),
                    "max_residual_mb": round(r, 1),
                }
                for layers, (a, s, r) in fits[path].items()
            },
            "own_per_layer_mb_per_token": round((s2 - s1) / (l2 - l1), 4),
            "mb_per_token_24_layers": round(slope, 4),
            "intercept_mb_24_layers": round(intercept, 1),
            "longest_response_tokens": int((memory_mb - weights_mb - intercept) / slope),
        }
    out["ratio_fused_over_full_logits"] = round(
        out["fused"]["longest_response_tokens"] / out["full_logits"]["longest_response_tokens"], 2
    )
    return out


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

    shapes = results["shapes"]
    has_longest = "longest" in results
    figure, axes = plt.subplots(1, 3 if has_longest else 2, figsize=(15 if has_longest else 10, 4))
    colors = {"naive": "#c44e52", "chunked": "#8172b2", "fused": "#4c72b0", "trl": "#dd8452"}
    width = 0.8 / len(TRAINING)
    for axis, key, title in [
        (axes[0], "peak_extra_mb", "forward + backward: peak extra memory (MB, log)"),
        (axes[1], "seconds_median", "forward + backward: time per call (s)"),
    ]:
        for index, name in enumerate(TRAINING):
            values = [shape["variants"][f"training_{name}"][key] for shape in shapes]
            bars = axis.bar(
                [i + (index - 1.5) * width for i in range(len(shapes))],
                values,
                width=width,
                label=name,
                color=colors[name],
            )
            axis.bar_label(bars, fmt="%.3g", fontsize=7)
        axis.set_xticks(
            range(len(shapes)),
            [f"{n}×{length}×{v:,}" for n, length, v in (s["shape"] for s in shapes)],
        )
        axis.set_title(title, fontsize=9)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    if has_longest:
        longest = results["longest"]
        axis = axes[2]
        for key, style in [("longest", "--"), ("longest_checkpointed", ":")]:
            if key not in results:
                continue
            entry = results[key]
            suffix = ", ckpt" if entry.get("gradient_checkpointing") else ""
            for path_name, color in [
                ("full_logits", colors["chunked"]),
                ("fused", colors["fused"]),
            ]:
                info = entry[path_name]
                points = [m for m in entry["measurements"] if m["path"] == path_name]
                for layers, marker in [(1, "o"), (2, "s")]:
                    xs = [m["response_tokens"] for m in points if m["layers"] == layers]
                    ys = [m["peak_extra_mb"] for m in points if m["layers"] == layers]
                    axis.scatter(xs, ys, color=color, marker=marker, s=14)
                tokens = info["longest_response_tokens"]
                xs = [64, tokens]
                ys = [
                    info["intercept_mb_24_layers"] + info["mb_per_token_24_layers"] * x for x in xs
                ]
                axis.plot(
                    xs,
                    ys,
                    color=color,
                    linestyle=style,
                    label=f"{path_name}{suffix}, 24 layers: {tokens:,} tok",
                )
        axis.axhline(
            longest["memory_mb"] - longest["model_weights_mb"],
            color="gray",
            linewidth=0.8,
            label="memory − weights",
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("response tokens (1 row, 64-token prompt)")
        axis.set_title(
            "LoRA update, Qwen2.5-0.5B shape: peak extra MB\n(points: 1 ○ / 2 □ layers measured)",
            fontsize=9,
        )
        axis.legend(fontsize=7)
    figure.suptitle(
        f"dcrl.core.fused_head vs naive, chunked and TRL 1.16, float32, hidden {results['hidden']}, "
        f"{results['machine']['torch_threads']} thread(s)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _run(command: list[str]) -> dict:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, seconds")
    parser.add_argument("--hidden", type=int, default=896, help="hidden size of part 1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 beside other work)"
    )
    parser.add_argument("--skip-longest", action="store_true", help="part 1 only")
    parser.add_argument(
        "--longest-only",
        action="store_true",
        help="part 2 only, added to the existing --out JSON",
    )
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="recompute part 2's extrapolation from the measurements in --out, rewrite it",
    )
    parser.add_argument(
        "--checkpointing",
        choices=("both", "off", "on"),
        default="both",
        help="part 2 without and/or with gradient checkpointing",
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "core_memory.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker and args.worker.startswith("lora_"):
        args.checkpointing = args.checkpointing == "on"
        print(json.dumps(run_lora_worker(args)))
        return
    if args.worker:
        print(json.dumps(run_worker(args)))
        return

    if args.reanalyse:
        results = json.loads(args.out.read_text())
        for key in ("longest", "longest_checkpointed"):
            if key in results:
                entry = results[key]
                entry.update(longest_response(entry["measurements"], entry["memory_mb"]))
                print(
                    key, {p: entry[p]["longest_response_tokens"] for p in ("full_logits", "fused")}
                )
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out.with_suffix(".png"))
        return
    shapes = [] if args.longest_only else (QUICK_SHAPES if args.quick else SHAPES)
    hidden = 64 if args.quick else args.hidden
    results = {
        "benchmark": "core_memory",
        "command": " ".join(["python", "bench/core_memory.py", *sys.argv[1:]]),
        "dtype": "float32",
        "hidden": hidden,
        "repeats": args.repeats,
        "machine": machine_description(args.threads),
        "shapes": [],
    }
    if args.longest_only:
        results = json.loads(args.out.read_text())
    for rows, length, vocab in shapes:
        probe = torch.empty((0, 0, vocab))
        entry = {
            "shape": [rows, length, vocab],
            "logits_mb": round(rows * length * vocab * 4 / 2**20, 1),
            "logprobs_chunk_size": default_chunk_size(probe),
            "fused_chunk_size": default_head_chunk_size(vocab, torch.float32, torch.device("cpu")),
            "variants": {},
        }
        for name in VARIANTS:
            command = [sys.executable, __file__, "--worker", name, "--rows", str(rows)]
            command += ["--length", str(length), "--vocab", str(vocab), "--hidden", str(hidden)]
            command += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
            entry["variants"][name] = _run(command)
            print(f"{rows}×{length}×{vocab} {name:18s} {entry['variants'][name]}", flush=True)
        variants = entry["variants"]
        naive = variants["training_naive"]
        entry["ratios"] = {
            "logging_memory_naive_over_chunked": round(
                variants["logging_naive"]["peak_extra_mb"]
                / variants["logging_chunked"]["peak_extra_mb"],
                2,
            ),
            **{
                f"training_memory_naive_over_{name}": round(
                    naive["peak_extra_mb"] / variants[f"training_{name}"]["peak_extra_mb"], 2
                )
                for name in TRAINING[1:]
            },
            **{
                f"training_speedup_{name}_over_naive": round(
                    naive["seconds_median"] / variants[f"training_{name}"]["seconds_median"], 2
                )
                for name in TRAINING[1:]
            },
            "training_memory_trl_over_fused": round(
                variants["training_trl"]["peak_extra_mb"]
                / variants["training_fused"]["peak_extra_mb"],
                2,
            ),
        }
        results["shapes"].append(entry)

    if not args.skip_longest:
        lengths = [16, 32, 64] if args.quick else args.lengths
        settings = {"both": ("off", "on"), "off": ("off",), "on": ("on",)}[args.checkpointing]
        for checkpointing in settings:
            measurements = []
            for path in ("lora_full_logits", "lora_fused"):
                for layers in (1, 2):
                    for length in lengths:
                        command = [sys.executable, __file__, "--worker", path]
                        command += ["--layers", str(layers), "--length", str(length)]
                        command += ["--threads", str(args.threads), "--checkpointing"]
                        command += [checkpointing]
                        measurements.append(_run(command))
                        print(measurements[-1], flush=True)
            memory_mb = _status_kib_meminfo("MemTotal") / 1024
            key = "longest" if checkpointing == "off" else "longest_checkpointed"
            results[key] = {
                "command": " ".join(["python", "bench/core_memory.py", *sys.argv[1:]]),
                "gradient_checkpointing": checkpointing == "on",
                "prompt_tokens": PROMPT_TOKENS,
                "measurements": measurements,
                **longest_response(measurements, memory_mb),
            }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps([s["ratios"] for s in results["shapes"]], indent=2))
    for key in ("longest", "longest_checkpointed"):
        if key in results:
            print(
                key,
                {p: results[key][p]["longest_response_tokens"] for p in ("full_logits", "fused")},
            )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _status_kib_meminfo(field: str) -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/meminfo")


if __name__ == "__main__":
    main()
