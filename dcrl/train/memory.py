"""A batch that does not fit in memory ends the run with one error naming the setting to lower.

PyTorch reports a failed allocation as `torch.OutOfMemoryError` on a GPU and as a RuntimeError
"... DefaultCPUAllocator: can't allocate memory ..." on the CPU (for instance under `ulimit -v`
or a container's address-space limit); Python's own allocations raise MemoryError. The trainer
runs each memory-hungry part of a step (the rollout, the log-prob pass, the update's
forward/backward, the optimizer step) inside `must_fit`, which turns such a failure into
`OutOfMemory` (a UserError: one `error: ...` line, exit status 2) whose message names the part,
what it held, the setting that sizes it and a smaller value, and which checkpoint survives. The
step that failed is neither logged nor checkpointed, so the run continues from its last
checkpoint (`dcrl train --resume RUN_DIR`, after the setting is lowered in RUN_DIR/config.yaml).

A process the kernel kills for memory (the OOM killer, a cgroup limit) gets no chance to say
anything; its checkpoints are intact all the same (they are written atomically).
"""

from __future__ import annotations

import errno
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dcrl.errors import UserError
from dcrl.train.disk import adam_state_bytes, human_bytes

# Messages of failed allocations: PyTorch's CPU allocator ("can't allocate memory"), CUDA's and
# MPS's ("out of memory"), and errno ENOMEM as text.
_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory")
_TRIED = re.compile(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)", re.IGNORECASE)
_UNITS = {"bytes": 1, "kb": 2**10, "kib": 2**10, "mb": 2**20, "mib": 2**20, "gb": 2**30}
_UNITS.update({"gib": 2**30, "tb": 2**40, "tib": 2**40})


class OutOfMemory(UserError):
    """A part of a training step did not fit in memory; the message names the setting to lower
    and the checkpoint the run continues from."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a failed allocation (torch's OutOfMemoryError, the CPU allocator's
    RuntimeError, MemoryError, an OSError with errno ENOMEM)."""
    # torch.cuda.OutOfMemoryError: torch.OutOfMemoryError from torch 2.5 (any device), the
    # CUDA error before it.
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    return isinstance(error, RuntimeError) and any(
        marker in str(error).lower() for marker in _MARKERS
    )


def raised_in(error: BaseException, *files: str) -> bool:
    """Whether `error`'s traceback passes through a file whose path ends with one of `files`."""
    return any(
        frame.f_code.co_filename.replace("\\", "/").endswith(files)
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


def failed_allocation(error: BaseException) -> str:
    """What failed, in a few words: 'an allocation of 1.2 GiB failed', or the error's first line."""
    found = _TRIED.search(str(error))
    if found:
        size = float(found.group(1)) * _UNITS[found.group(2).lower()]
        return f"an allocation of {human_bytes(size)} failed"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def smaller(value: int) -> int:
    """The value to suggest instead of `value`: half of it, at least 1."""
    return max(1, value // 2)


def lower(setting: str, now: int, used: int, run_dir: Path, has_checkpoint: bool) -> str:
    """'lower SETTING (now N), e.g. to M (...)': `used` is what the failed part actually held
    (a micro-batch is never larger than its mini-batch), so the suggestion is below it."""
    where = f" in {run_dir / 'config.yaml'}" if has_checkpoint else ""
    return f"lower {setting}{where} (now {now}), e.g. to {smaller(min(now, used))}"


@contextmanager
def must_fit(explain: Callable[[BaseException], str]) -> Iterator[None]:
    """Run the block; a failed allocation inside it becomes OutOfMemory(explain(error)).

    The failed computation's frames are cleared before OutOfMemory is raised, so the tensors they
    held are freed even while a caller keeps the error.
    """
    message = None
    try:
        yield
    except Exception as error:
        if isinstance(error, UserError) or not is_out_of_memory(error):
            raise
        message = explain(error)
        traceback.clear_frames(error.__traceback__)
        error.__traceback__ = None
    if message is not None:
        raise OutOfMemory(message) from None


def batch_fix(error: BaseException, config: Any, rows_per_batch: int, used: int) -> str:
    """The fix for a forward(/backward) that held `used` rows, `rows_per_batch` per
    train.micro_batch_size: the log-prob kernel's block when it failed there and is set by
    hand, else the micro-batch, else (one sequence) the sequence length or the model.

    Args:
        config: the run's RunConfig (when its run has a checkpoint, the setting is changed in
            its config.yaml).
    """
    has_checkpoint = _has_checkpoint(config)
    tc = config.train
    if tc.logprob_chunk_size is not None and raised_in(
        error, "dcrl/core/fused_head.py", "dcrl/core/logprobs.py"
    ):
        now = tc.logprob_chunk_size
        return (
            lower("train.logprob_chunk_size", now, now, config.run_dir, has_checkpoint)
            + " or null (auto: blocks of 16 MiB on a CPU, 256 MiB on a GPU)"
        )
    rows = min(tc.micro_batch_size, -(-used // rows_per_batch))
    if rows > 1:
        return lower(
            "train.micro_batch_size", tc.micro_batch_size, rows, config.run_dir, has_checkpoint
        )
    fix = (
        "a micro-batch of one sequence does not fit: lower rollout.max_new_tokens (now "
        f"{config.rollout.max_new_tokens})"
    )
    if not config.model.gradient_checkpointing:
        fix += ", or set model.gradient_checkpointing=true"
    return fix + ", or train a smaller model (or LoRA: model.lora)"


def rollout_fix(config: Any, at_once: int, n: int, batches: bool) -> str:
    """The fix for a rollout of `at_once` prompts × `n` responses that did not fit: fewer
    prompts per call (rollout.batch_size), or, for one prompt or an engine that schedules its
    own batches (`batches` False), fewer or shorter responses."""
    has_checkpoint = _has_checkpoint(config)
    rc = config.rollout
    if not batches:
        return (
            f"lower rollout.n (now {rc.n}) or rollout.max_new_tokens (now "
            f"{rc.max_new_tokens}), or give the {rc.backend} engine more memory"
        )
    if at_once == 1:
        return (
            f"one prompt's {n} responses do not fit: lower rollout.max_new_tokens (now "
            f"{rc.max_new_tokens}) or rollout.n (now {rc.n})"
        )
    setting = lower("rollout.batch_size", rc.batch_size, at_once, config.run_dir, has_checkpoint)
    return setting + " prompts per call"


def in_step(
    config: Any, step: int, part: str, held: str, fix: Callable[[BaseException], str]
) -> Any:
    """`must_fit` for a part of training step `step`, with the message 'out of memory in step
    N, in PART (HELD; what failed): FIX; which checkpoint survives' (`part` "" for the step as a
    whole)."""
    from dcrl.train.checkpoint import resume_hint

    def explain(error: BaseException) -> str:
        where = f"step {step}, in {part}" if part else f"step {step}"
        return (
            f"out of memory in {where} ({held}; {failed_allocation(error)}): {fix(error)}; "
            f"{resume_hint(config.run_dir)}"
        )

    return must_fit(explain)


def _has_checkpoint(config: Any) -> bool:
    from dcrl.train.checkpoint import latest_checkpoint

    return latest_checkpoint(config.run_dir) is not None


# -- the parts of a training step, each with what it holds and the setting that sizes it --------


def whole_step_fits(config: Any, step: int) -> Any:
    """A failed allocation anywhere else in the step: fewer prompts or responses per step."""
    prompts, n = config.train.prompts_per_step, config.rollout.n
    return in_step(
        config,
        step,
        "",
        f"{prompts} prompts × {n} responses",
        lambda _: f"lower train.prompts_per_step (now {prompts}) or rollout.n (now {n})",
    )


def rollout_fits(config: Any, step: int, at_once: int, n: int, batched: bool) -> Any:
    """The rollout of `at_once` prompts × `n` responses (`batched`: the engine takes
    rollout.batch_size prompts per call; else it schedules its own batches)."""
    rc = config.rollout
    held = (
        f"{at_once} prompt{'s' * (at_once != 1)} × {n} responses of up to {rc.max_new_tokens} "
        f"tokens{' at a time' * batched}, rollout.backend={rc.backend}"
    )
    return in_step(
        config, step, "the rollout", held, lambda _: rollout_fix(config, at_once, n, batched)
    )


def logprob_pass_fits(config: Any, step: int) -> Callable[[int, int], Any]:
    """`fits(rows, tokens)` for each chunk of the no-grad log-prob pass (2 ×
    train.micro_batch_size sequences at a time; dcrl.train.forward.logprob_pass)."""

    def fits(rows: int, tokens: int) -> Any:
        held = (
            f"{rows} sequences of {tokens} tokens without gradients, 2 × train.micro_batch_size "
            "at a time"
        )
        fix = lambda error: batch_fix(error, config, 2, rows)  # noqa: E731
        return in_step(config, step, "the log-prob pass", held, fix)

    return fits


def micro_batch_fits(config: Any, step: int, rows: int, tokens: int) -> Any:
    """The update's forward and backward of a micro-batch of `rows` sequences of `tokens`."""
    held = f"a micro-batch of {rows} sequences of {tokens} tokens"
    fix = lambda error: batch_fix(error, config, 1, rows)  # noqa: E731
    return in_step(config, step, "the update's forward/backward", held, fix)


def optimizer_fits(config: Any, step: int, model: torch.nn.Module) -> Any:
    """The optimizer step: AdamW allocates two moments per trainable weight at its first step."""
    return in_step(
        config,
        step,
        "the optimizer step",
        f"AdamW keeps two moments per trainable weight, {human_bytes(adam_state_bytes(model))}",
        lambda _: (
            "the weights, their gradients and AdamW's state do not fit: train fewer weights "
            "(model.lora) or a smaller model"
        ),
    )
