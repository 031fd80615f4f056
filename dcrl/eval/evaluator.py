"""`evaluate`: sample n answers per problem, grade them, summarize; resumable and streaming.

    result = evaluate("runs/tiny-dcpo-seed1", problems, task.verify, n=64, temperature=1.0,
                      top_p=1.0, max_new_tokens=64, seed=0, out_dir="runs/tiny-dcpo-seed1/eval")
    result.metrics["pass@k"]["8"], result.metrics["avg@64"]

Work is cut into generate calls: a *block* of `problems_per_call` consecutive problems × a *chunk*
of `samples_per_call` samples each (plus one greedy call per block when asked). Every call has its
own seed, a hash of (seed, kind, chunk, the block's problem ids), so a call draws the same samples
whenever and in whatever order it runs: an interrupted evaluation that resumes gives exactly the
samples (and metrics) of an uninterrupted one. With the default `problems_per_call` = 1 each
problem's samples depend only on its own id, so evaluating a subset draws the same samples for it.
Raise `problems_per_call` on a GPU when n is small (more rows per call); it is a recorded setting,
like `samples_per_call`, and changing either changes the samples.

With `out_dir`, each call's records are appended to `samples.jsonl` (see `dcrl.eval.records`) and
only counts and per-sample lengths stay in memory (`EvalAccumulator`), so n ≥ 1024 streams.
Files written: settings.json (at the start), samples.jsonl, per_problem.jsonl, metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import dcrl
from dcrl._atomic import write_text_atomic
from dcrl.eval.metrics import CORRECT_THRESHOLD, EvalAccumulator
from dcrl.eval.records import iter_records, repair_records, unit_size
from dcrl.rewards import RewardFn, check_reward_fn, get_reward_fn, score_batch
from dcrl.rollout import RolloutBackend, validate_sampling_arguments
from dcrl.tasks import Problem, format_prompt

DEFAULT_SAMPLES_PER_CALL = 64
RECORDS_FILE = "samples.jsonl"
SETTINGS_FILE = "settings.json"
METRICS_FILE = "metrics.json"
PER_PROBLEM_FILE = "per_problem.jsonl"

# Settings that decide the samples or their grades: resuming requires them to be unchanged.
# ("greedy" is not among them: asking for greedy answers later only adds records.)
RESUME_KEYS = (
    "decoding",
    "model",
    "weights_sha256",
    "data",
    "reward",
    "template",
    "n",
    "temperature",
    "top_p",
    "max_new_tokens",
    "seed",
    "samples_per_call",
    "problems_per_call",
    "backend",
    "dtype",
    "num_problems",
    "problem_ids_sha256",
)


@dataclass
class EvalResult:
    """What `evaluate` returns.

    metrics: the metrics JSON (`dcrl.eval.metrics`), with "settings" (the sampling settings and
        what was evaluated) and "throughput" (this call's generation speed).
    per_problem: one row per problem: id, num_samples, num_correct[, greedy_correct].
    out_dir: where the files were written, or None.
    """

    metrics: dict[str, Any]
    per_problem: list[dict[str, Any]]
    out_dir: Path | None


def policy_directory(model: str | os.PathLike[str]) -> str:
    """`RUN_DIR/policy` for a training run directory, else `model` unchanged."""
    path = Path(model)
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        policy = path / "policy"
        if not (policy / "config.json").is_file():
            raise ValueError(
                f"{path} is a training run directory without a final policy ({policy} has no "
                "config.json): the run has not finished; finish it with `dcrl train --resume "
                f"{path}`"
            )
        return str(policy)
    return os.fspath(model)


def call_seed(seed: int, kind: str, chunk: int, problem_ids: Sequence[str]) -> int:
    """The seed of one generate call: a stable hash of the evaluation seed, the kind ("sample" or
    "greedy"), the sample chunk and the ids of the block's problems, in [0, 2^31)."""
    key = json.dumps([seed, kind, chunk, list(problem_ids)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2**31


# Files whose bytes are the model: its weights (any format) and its architecture.
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_sha256(loaded_from: str | None, model: torch.nn.Module | None) -> str | None:
    """A fingerprint of what is evaluated, so a resumed evaluation knows it is the same model.

    Args:
        loaded_from: the name or directory the model was loaded from; None for a model handed
            over in memory (it may have changed since it was loaded).
        model: the loaded model, if known.

    Returns:
        For a model loaded from a directory: the SHA-256 of its config.json and weight files
        (names and bytes). Otherwise (a built-in name, a cached hub id, a model in memory): the
        SHA-256 of the model's parameters and buffers. None when neither is known.
    """
    digest = hashlib.sha256()
    directory = Path(loaded_from) if loaded_from is not None else None
    if directory is not None and directory.is_dir():
        files = sorted(
            path
            for path in directory.iterdir()
            if path.is_file()
            and (path.suffix in WEIGHT_FILE_SUFFIXES or path.name == "config.json")
        )
        for path in files:
            digest.update(f"{path.name}\0".encode())
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()
    if model is None:
        return None
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_resumable(out_dir: Path, settings: dict[str, Any]) -> None:
    """Raise a ValueError if out_dir holds an evaluation made with other settings or weights."""
    settings_path = out_dir / SETTINGS_FILE
    if not settings_path.exists():
        if (out_dir / RECORDS_FILE).exists():
            raise ValueError(
                f"{out_dir} has {RECORDS_FILE} but no {SETTINGS_FILE}: it was not written by "
                "dcrl eval; choose another output directory"
            )
        return
    try:
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{settings_path} is damaged ({error.msg}): delete {out_dir} to evaluate again"
        ) from None
    # An evaluation recorded before "decoding" was a setting decoded with transformers' generate.
    saved.setdefault("decoding", "generate")
    changed = [key for key in RESUME_KEYS if saved.get(key) != settings[key]]
    if "weights_sha256" in changed:
        raise ValueError(
            f"{out_dir} holds an evaluation of other weights: the weights of {settings['model']} "
            "changed since "
            f"(sha256 {str(saved.get('weights_sha256'))[:12]} -> "
            f"{str(settings['weights_sha256'])[:12]}); its records would be reused for the new "
            "model. Evaluate into another directory (--out), or delete this one to start over"
        )
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {settings[key]!r}" for key in changed)
        raise ValueError(
            f"{out_dir} holds an evaluation with other settings ({details}); resuming it would "
            "mix samples: use another output directory (--out), or delete this one to start over"
        )


def _build_backend(
    model_or_path: Any,
    backend: str,
    problems_per_call: int,
    dtype: str,
    device: str,
    strict_load: bool = True,
    decoding: str = "auto",
) -> tuple[RolloutBackend, str]:
    """(rollout backend, model description) for a path/name, a (model, tokenizer) or a backend.

    A backend is built as the trainer builds its own (`dcrl.rollout.build_rollout_backend` on a
    rollout section): the same registry, the same meaning of `decoding` ("auto" is dcrl's
    decoding loop on hf, the engine's own on vllm)."""
    from dcrl.rollout import build_rollout_backend
    from dcrl.train.config import RolloutConfig

    if isinstance(model_or_path, RolloutBackend):
        return model_or_path, type(model_or_path).__name__
    backend_options: dict[str, Any] = {}
    if isinstance(model_or_path, tuple):
        if len(model_or_path) != 2:
            raise TypeError(
                "model_or_path as a tuple must be (model, tokenizer), as load_policy returns"
            )
        model, tokenizer = model_or_path
        description = str(getattr(model, "name_or_path", "") or type(model).__name__)
    elif isinstance(model_or_path, str | os.PathLike):
        from dcrl.models import load_policy

        description = policy_directory(model_or_path)
        if backend == "vllm":  # the engine loads the weights itself: keep this copy off the GPU
            device = "cpu"
            backend_options["dtype"] = dtype
        model, tokenizer = load_policy(description, dtype=dtype, device=device, strict=strict_load)
    else:
        raise TypeError(
            "model_or_path must be a model name or directory, a (model, tokenizer) pair or a "
            f"RolloutBackend, got {type(model_or_path).__name__}"
        )
    section = RolloutConfig(
        backend=backend,
        batch_size=problems_per_call,
        decoding=decoding,  # type: ignore[arg-type]
        backend_options=backend_options,
    )
    try:
        section.validate()
    except ValueError as error:
        raise ValueError(f"backend {backend!r}: {error}") from None
    return build_rollout_backend(section, model, tokenizer), description


def decoding_of(rollout: RolloutBackend) -> str:
    """How a backend decodes, as the eval record states it: "loop" or "generate" (hf), or the
    backend's name for an engine with its own decoder (vllm)."""
    return str(getattr(rollout, "decoding", None) or getattr(rollout, "name", "unknown"))


def evaluate(
    model_or_path: str | os.PathLike[str] | tuple[torch.nn.Module, Any] | RolloutBackend,
    problems: Sequence[Problem],
    reward_fn: RewardFn | str,
    *,
    n: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    template: str = "plain",
    greedy: bool = False,
    samples_per_call: int | None = None,
    problems_per_call: int = 1,
    ks: Sequence[int] | None = None,
    backend: str = "hf",
    decoding: str = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    save_responses: bool = True,
    model_label: str | None = None,
    data_label: str = "problems",
    group_by: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    strict_load: bool = True,
) -> EvalResult:
    """Sample n answers per problem, grade them and compute avg@n, pass@k and length metrics.

    Args:
        model_or_path: a model directory, a training run directory (its policy/), "tiny", a
            cached hub id; or a (model, tokenizer) pair; or a ready RolloutBackend.
        problems: the problems (`dcrl.tasks.Problem`; ids must be unique).
        reward_fn: the grader, fn(completion, answer, **meta) -> float in [0, 1], or its name.
        n: samples per problem (≥ 1); pass@k is reported for k = 1, 2, 4, … and n.
        temperature, top_p, max_new_tokens: sampling settings (temperature 0 = greedy).
        seed: the evaluation seed (module docstring: each call's seed derives from it).
        out_dir: write settings, per-sample records and metrics there, and resume what an
            earlier call with the same settings left; None keeps nothing on disk.
        template: the prompt template (`dcrl.tasks.format_prompt`); "chat" uses the tokenizer.
        greedy: also decode one greedy answer per problem ("greedy_accuracy").
        samples_per_call: samples of one problem per generate call; default min(n, 64).
        problems_per_call: problems per generate call (module docstring); default 1.
        ks: the pass@k values; default 1, 2, 4, … and n.
        backend, dtype, device: how a model given by name is loaded and sampled ("hf"/"vllm").
        decoding: as the training setting rollout.decoding: "auto" (dcrl's decoding loop on
            hf, the engine's own on vllm), "loop" or "generate" (hf only); recorded in the
            settings as the decoder actually used.
        save_responses: keep response texts in the records (off for very large n).
        model_label, data_label: how the model and data are named in the settings.
        group_by: a meta key every problem has (e.g. "kind"): the metrics are also reported per
            value of `problem.meta[group_by]`, under "by_group" (`dcrl.eval.metrics`).
        on_progress: called as on_progress(calls_done, calls_total) after each generate call.
        strict_load: refuse a model directory that is not a causal LM or whose weights do not
            match its architecture (`dcrl.models.load_policy`'s `strict`).

    Returns:
        An EvalResult; its metrics are also written to out_dir/metrics.json.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples per problem) must be an integer >= 1, got {n!r}")
    if not problems:
        raise ValueError("problems is empty: evaluate at least one problem")
    samples_per_call = (
        min(n, DEFAULT_SAMPLES_PER_CALL) if samples_per_call is None else samples_per_call
    )
    if samples_per_call < 1 or problems_per_call < 1:
        raise ValueError(
            f"samples_per_call ({samples_per_call}) and problems_per_call ({problems_per_call}) "
            "must be >= 1"
        )
    samples_per_call = min(samples_per_call, n)
    groups = None
    if group_by is not None:
        unlabeled = [p.id for p in problems if group_by not in p.meta]
        if unlabeled:
            raise ValueError(
                f"group_by={group_by!r}: {len(unlabeled)} problem(s) have no meta[{group_by!r}] "
                f"(first: {unlabeled[0]!r}); group by a key every problem has"
            )
        groups = [p.meta[group_by] for p in problems]
    reward_fn = get_reward_fn(reward_fn)
    check_reward_fn(reward_fn, problems[0].meta)
    rollout, model_description = _build_backend(
        model_or_path, backend, problems_per_call, dtype, device, strict_load, decoding
    )
    # Check the prompts and sampling settings before anything is written to out_dir.
    tokenizer = getattr(rollout, "tokenizer", None)
    prompts = {p.id: format_prompt(p.prompt, tokenizer, template=template) for p in problems}
    validate_sampling_arguments(list(prompts.values()), n, temperature, top_p, max_new_tokens)
    settings = {
        "model": model_label or model_description,
        "weights_sha256": weights_sha256(
            model_description if isinstance(model_or_path, str | os.PathLike) else None,
            getattr(rollout, "model", None),
        ),
        "data": data_label,
        "reward": getattr(reward_fn, "__qualname__", repr(reward_fn)),
        "template": template,
        "n": n,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "samples_per_call": samples_per_call,
        "problems_per_call": problems_per_call,
        "backend": getattr(rollout, "name", backend),
        "decoding": decoding_of(rollout),
        "dtype": dtype,
        "num_problems": len(problems),
        "problem_ids_sha256": hashlib.sha256(
            "\n".join(p.id for p in problems).encode()
        ).hexdigest(),
        "greedy": greedy,
        "group_by": group_by,
        "correct_threshold": CORRECT_THRESHOLD,
        "dcrl_version": dcrl.__version__,
    }
    accumulator = EvalAccumulator(
        [p.id for p in problems], groups=groups, group_key=group_by or "group"
    )
    complete_units: set[tuple[str, str, int]] = set()
    records_file = None
    resumed_samples = 0  # records (sampled and greedy) reused from an earlier call
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_resumable(out_dir, settings)
        write_text_atomic(out_dir / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
        records_path = out_dir / RECORDS_FILE
        complete_units = repair_records(records_path, n, samples_per_call)
        for record in iter_records(records_path):
            if record["kind"] == "greedy":
                if greedy:  # greedy answers of an earlier call stay on file, unused, otherwise
                    accumulator.add_greedy(record["problem_id"], record["reward"], record["length"])
                    resumed_samples += 1
            else:
                resumed_samples += 1
                accumulator.add_samples(
                    record["problem_id"],
                    [record["reward"]],
                    [record["length"]],
                    [record["truncated"]],
                )
        records_file = records_path.open("a", encoding="utf-8")

    num_chunks = math.ceil(n / samples_per_call)
    calls = []  # (block of problems, kind, chunk)
    for start in range(0, len(problems), problems_per_call):
        block = problems[start : start + problems_per_call]
        if greedy:
            calls.append((block, "greedy", 0))
        calls.extend((block, "sample", chunk) for chunk in range(num_chunks))

    generate_seconds = grade_seconds = 0.0
    generated_samples = generated_tokens = 0
    try:
        for calls_done, (block, kind, chunk) in enumerate(calls, start=1):
            missing = [
                (position, problem)
                for position, problem in enumerate(block)
                if (kind, problem.id, chunk) not in complete_units
            ]
            if missing:
                size = unit_size(kind, chunk, n, samples_per_call)
                started = time.perf_counter()
                batch = rollout.generate(
                    [prompts[problem.id] for problem in block],
                    size,
                    0.0 if kind == "greedy" else temperature,
                    top_p,
                    max_new_tokens,
                    seed=call_seed(seed, kind, chunk, [problem.id for problem in block]),
                )
                generated = time.perf_counter()
                # Rows position·size … position·size + size − 1 answer the block's problem there.
                rows = [
                    position * size + offset for position, _ in missing for offset in range(size)
                ]
                rewards = score_batch(
                    reward_fn,
                    [batch.response_texts[row] for row in rows],
                    [problem.answer for _, problem in missing for _ in range(size)],
                    [problem.meta for _, problem in missing for _ in range(size)],
                )
                generate_seconds += generated - started
                grade_seconds += time.perf_counter() - generated
                lengths = batch.response_lengths.tolist()  # (rows,)
                truncated = batch.truncated.tolist()  # (rows,)
                lines = []
                for unit_index, (_, problem) in enumerate(missing):
                    unit = slice(unit_index * size, (unit_index + 1) * size)
                    unit_rows, unit_rewards = rows[unit], rewards[unit]
                    unit_lengths = [lengths[row] for row in unit_rows]
                    unit_truncated = [truncated[row] for row in unit_rows]
                    if kind == "greedy":
                        accumulator.add_greedy(problem.id, unit_rewards[0], unit_lengths[0])
                    else:
                        accumulator.add_samples(
                            problem.id, unit_rewards, unit_lengths, unit_truncated
                        )
                    for offset, row in enumerate(unit_rows):
                        record = {
                            "problem_id": problem.id,
                            "kind": kind,
                            "sample": chunk * samples_per_call + offset,
                            "reward": unit_rewards[offset],
                            "correct": unit_rewards[offset] > CORRECT_THRESHOLD,
                            "length": unit_lengths[offset],
                            "truncated": unit_truncated[offset],
                        }
                        if save_responses:
                            record["response"] = batch.response_texts[row]
                        lines.append(json.dumps(record) + "\n")
                generated_samples += len(rows)
                generated_tokens += sum(lengths[row] for row in rows)
                if records_file is not None:
                    records_file.write("".join(lines))  # one write per call (records.py)
                    records_file.flush()
            if on_progress is not None:
                on_progress(calls_done, len(calls))
    finally:
        if records_file is not None:
            records_file.close()

    model_device = getattr(getattr(rollout, "model", None), "device", None)
    if model_device is not None and model_device.type == "cuda":
        device_name = torch.cuda.get_device_name(model_device)
    else:
        device_name = str(model_device or getattr(rollout, "name", "unknown"))
    metrics = accumulator.metrics(ks)
    metrics["settings"] = settings
    metrics["throughput"] = {
        "generated_samples": generated_samples,
        "generated_tokens": generated_tokens,
        "resumed_samples": resumed_samples,
        "generate_s": generate_seconds,
        "grade_s": grade_seconds,
        "samples_per_s": generated_samples / generate_seconds if generate_seconds else None,
        "tokens_per_s": generated_tokens / generate_seconds if generate_seconds else None,
        "device": device_name,
    }
    per_problem = accumulator.per_problem()
    if out_dir is not None:
        with (out_dir / PER_PROBLEM_FILE).open("w", encoding="utf-8") as rows_file:
            rows_file.writelines(json.dumps(row) + "\n" for row in per_problem)
        write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return EvalResult(metrics=metrics, per_problem=per_problem, out_dir=out_dir)
