"""A batch that does not fit in memory ends the run with one `error:` line naming the setting to
lower, keeps the last checkpoint, and the run continues once the setting is lowered
(dcrl/train/memory.py).

The runs are real `dcrl train` processes under a real address-space limit (RLIMIT_AS, what
`ulimit -v` sets), put in place by this module's launcher (`python -m tests.test_memory_faults
MARGIN dcrl-arguments...`, also used by bench/faults.py) right after the process has written
its first checkpoint, so that its first step (and whatever torch sets up lazily in a first step)
ran unlimited. The limit is the process's own measured size at that moment (VmSize) plus a
margin: a number of MiB, or "half", half of what the process needed above that size so far
(VmPeak − VmSize: the first step's peak, the model load being smaller). The next step, built like
the first, needs about what the first needed and cannot fit in half of it, whatever the
machine's torch or allocator; whatever the margin, the size it adds to is measured, not assumed.
A run resumed after the error, with the setting lowered, runs its first step unlimited too, then
its last under the same margin.

glibc keeps freed memory mapped unless told otherwise, so the processes run with
MALLOC_MMAP_THRESHOLD_ (a batch's tensors are given back to the system when freed, and the size
after a step is the run's own, not its last batch's) and one malloc arena (no arena reserved
later by a new thread).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dcrl.core import fused_head
from dcrl.train import checkpoint as ckpt
from dcrl.train import forward
from dcrl.train.checkpoint import CheckpointError
from dcrl.train.memory import OutOfMemory
from dcrl.train.trainer import Trainer
from tests.helpers import read_metrics, tiny_config

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}
# What the launcher says when it sets the limit: (limit, the process's size, margin) in MiB.
LIMIT_LINE = re.compile(
    r"memory limit: (\d+) MiB = the process's (\d+) MiB \+ a margin of (\d+) MiB"
)

# The tiny GRPO recipe, small: 3 steps of 8 prompts × 16 responses, one mini-batch, a checkpoint
# after every step, on one thread, with dcrl's decoding loop.
LIMITED_STEPS = 3
SMALL = (
    f"train.steps={LIMITED_STEPS}",
    "train.save_every=1",
    "train.prompts_per_step=8",
    "train.mini_batch_prompts=8",
    "train.threads=1",
    "train.warmup_steps=0",
    "rollout.n=16",
    "rollout.decoding=loop",
    "log.console=false",
    "log.tensorboard=false",
)
# The update holds all 128 sequences at once (about 3 MiB each for this model); the rollout two
# prompts' 32 at a time (about 0.3 MiB each).
UPDATE_TOO_BIG = ("train.micro_batch_size=128", "rollout.batch_size=2")
# The rollout holds all 128 sequences at once; the update two at a time.
ROLLOUT_TOO_BIG = ("train.micro_batch_size=2", "rollout.batch_size=8")


def _sizes() -> tuple[int, int]:
    """(VmSize, VmPeak) of this process in bytes: its address space now and at most so far."""
    sizes = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmSize", "VmPeak"):
            sizes[key] = int(value.split()[0]) * 1024
    return sizes["VmSize"], sizes["VmPeak"]


def main(argv: list[str]) -> None:
    """`dcrl ARGUMENTS` under RLIMIT_AS = its size + MARGIN, set once it wrote a checkpoint."""
    margin_arg, *args = argv
    limited = []

    def limit() -> None:
        if limited:
            return
        size, peak = _sizes()
        margin = (peak - size) // 2 if margin_arg == "half" else int(margin_arg) << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size + margin, hard))
        limited.append(size + margin)
        print(
            f"memory limit: {(size + margin) >> 20} MiB = the process's {size >> 20} MiB + a "
            f"margin of {margin >> 20} MiB",
            file=sys.stderr,
            flush=True,
        )

    real_save = Trainer.save

    def save(self: Trainer) -> Path:
        path = real_save(self)
        limit()
        return path

    Trainer.save = save  # type: ignore[method-assign]
    from dcrl.cli import app

    app(args=args, prog_name="dcrl")


def limited_command(margin: str, args: list[str]) -> list[str]:
    """The command that runs `dcrl ARGS` under the limit (run it in the repository root)."""
    return [sys.executable, "-m", "tests.test_memory_faults", margin, *args]


def limited_env(source: Path = REPO) -> dict[str, str]:
    return {
        **os.environ,
        **MALLOC_ENV,
        "PYTHONPATH": str(source),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


def run_limited(margin: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        limited_command(margin, args),
        cwd=REPO,
        env=limited_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def train_args(run_dir: Path, *settings: str) -> list[str]:
    return [
        "train",
        "--config",
        "tiny-grpo",
        *SMALL,
        *settings,
        f"log.output_dir={run_dir}",
    ]


def the_error(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a process that ended on its own with exit status 2."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def assert_step_1_intact(run_dir: Path) -> None:
    """The checkpoint of step 1 is the latest, whole, and nothing of step 2 was written."""
    step_1 = run_dir / "checkpoints" / "step_000001"
    assert ckpt.latest_checkpoint(run_dir) == step_1
    assert load_file(step_1 / "model.safetensors")  # the weights read back
    assert json.loads((step_1 / "trainer_state.json").read_text())["step"] == 1
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()] == [step_1.name]
    assert [record["step"] for record in read_metrics(run_dir)] == [1]


@pytest.mark.slow
def test_an_update_that_does_not_fit_names_the_micro_batch_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    result = run_limited("half", train_args(run_dir, *UPDATE_TOO_BIG))
    error = the_error(result)
    margin = LIMIT_LINE.search(result.stderr)
    assert margin, result.stderr[-3000:]
    assert error.startswith(
        "error: out of memory in step 2, in the update's forward/backward (a "
    ), error
    assert f"lower train.micro_batch_size in {run_dir}/config.yaml (now 128), e.g. to 64" in error
    assert f"`dcrl train --resume {run_dir}`" in error and "step_000001 is intact" in error
    assert_step_1_intact(run_dir)

    # The fix the error names: step 2 runs unlimited, step 3 with micro-batches of 8 fits in the
    # same margin.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["micro_batch_size"] = 8
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    again = run_limited(margin.group(3), ["train", "--resume", str(run_dir)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert LIMIT_LINE.search(again.stderr)
    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2, 3]
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step_000003"


@pytest.mark.slow
def test_a_rollout_that_does_not_fit_names_rollout_batch_size(tmp_path):
    run_dir = tmp_path / "run"
    error = the_error(run_limited("half", train_args(run_dir, *ROLLOUT_TOO_BIG)))
    assert error.startswith("error: out of memory in step 2, in the rollout (8 prompts × 16"), error
    assert f"lower rollout.batch_size in {run_dir}/config.yaml (now 8), e.g. to 4" in error
    assert f"`dcrl train --resume {run_dir}`" in error
    assert_step_1_intact(run_dir)


# -- which setting each part names (in-process, with the allocators' own messages injected) ------

CPU_ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)"
)
CUDA_ALLOCATOR = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of "
    "which 1.05 GiB is free."
)


def fails_when(condition, error):
    """A stand-in that raises `error` whenever condition() holds, else calls the real function."""

    def wrap(real):
        def call(*args, **kwargs):
            if condition():
                raise error
            return real(*args, **kwargs)

        return call

    return wrap


def test_an_update_without_a_checkpoint_names_the_micro_batch_and_says_start_again(
    tmp_path, monkeypatch
):

    run_dir = tmp_path / "run"
    trainer = Trainer(tiny_config(run_dir))
    during_update = fails_when(torch.is_grad_enabled, RuntimeError(CPU_ALLOCATOR))
    monkeypatch.setattr(forward, "response_logprobs", during_update(forward.response_logprobs))
    with pytest.raises(OutOfMemory) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith(
        "out of memory in step 1, in the update's forward/backward (a micro-batch of 8 sequences"
    )
    assert "an allocation of 1.0 GiB failed" in message
    assert "lower train.micro_batch_size (now 8), e.g. to 4;" in message  # no config.yaml to edit
    assert message.endswith("the run has no checkpoint yet: fix the cause and start it again")
    assert not (run_dir / "metrics.jsonl").read_text().strip()  # the failed step is not logged


def torch_grad_enabled() -> bool:
    return torch.is_grad_enabled()


def test_the_log_prob_pass_names_the_micro_batch_it_doubles(tmp_path, monkeypatch):

    run_dir = tmp_path / "run"
    # Two mini-batches: the update is off-policy, so step_protocol asks for the old log-probs.
    config = tiny_config(run_dir, "grpo", "train.mini_batch_prompts=2", "train.save_every=1")
    trainer = Trainer(config)
    no_grad_in_step_2 = fails_when(
        lambda: trainer.step == 2 and not torch.is_grad_enabled(),
        torch.cuda.OutOfMemoryError(CUDA_ALLOCATOR),
    )
    monkeypatch.setattr(forward, "response_logprobs", no_grad_in_step_2(forward.response_logprobs))
    with pytest.raises(OutOfMemory) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith("out of memory in step 2, in the log-prob pass (16 sequences of")
    assert "2 × train.micro_batch_size at a time; an allocation of 2.0 GiB failed)" in message
    assert f"lower train.micro_batch_size in {run_dir}/config.yaml (now 8), e.g. to 4" in message
    assert (
        "step_000001 is intact: fix the cause, then continue with `dcrl train --resume" in message
    )
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step_000001"


def test_a_log_prob_block_set_by_hand_is_named_when_the_kernel_fails(tmp_path, monkeypatch):

    trainer = Trainer(tiny_config(tmp_path / "run", "grpo", "train.logprob_chunk_size=4096"))
    always = fails_when(lambda: True, RuntimeError(CPU_ALLOCATOR))
    monkeypatch.setattr(fused_head._Head, "buffers", always(fused_head._Head.buffers))
    with pytest.raises(
        OutOfMemory,
        match=r"lower train.logprob_chunk_size \(now 4096\), e.g. "
        r"to 2048 or null \(auto",
    ):
        trainer.fit()


def test_the_rollout_of_one_prompt_per_call_names_the_response_length(tmp_path, monkeypatch):

    trainer = Trainer(tiny_config(tmp_path / "run", "grpo", "rollout.batch_size=1"))
    always = fails_when(lambda: True, RuntimeError(CPU_ALLOCATOR))
    monkeypatch.setattr(trainer.backend, "_decode_loop", always(trainer.backend._decode_loop))
    with pytest.raises(OutOfMemory) as caught:
        trainer.fit()
    assert str(caught.value).startswith(
        "out of memory in step 1, in the rollout (1 prompt × 4 responses of up to 12 tokens at "
        "a time, rollout.backend=hf; an allocation of 1.0 GiB failed): one prompt's 4 responses "
        "do not fit: lower rollout.max_new_tokens (now 12) or rollout.n (now 4);"
    )


def test_the_optimizer_state_names_lora_and_other_failures_name_the_step(tmp_path, monkeypatch):

    trainer = Trainer(tiny_config(tmp_path / "a"))
    always = fails_when(lambda: True, MemoryError())
    monkeypatch.setattr(trainer.optimizer, "step", always(trainer.optimizer.step))
    with pytest.raises(
        OutOfMemory,
        match=r"in the optimizer step \(AdamW keeps two moments per "
        r"trainable weight, .* MiB; MemoryError\): .* \(model.lora\)",
    ):
        trainer.fit()

    # A part of the step without a setting of its own (here the grading) names the step's size.
    trainer = Trainer(tiny_config(tmp_path / "b"))
    monkeypatch.setattr(trainer, "task_scores", always(trainer.task_scores))
    with pytest.raises(
        OutOfMemory,
        match=r"^out of memory in step 1 \(4 prompts × 4 responses; "
        r"MemoryError\): lower train.prompts_per_step \(now 4\) or rollout.n",
    ):
        trainer.fit()


def test_a_checkpoint_write_out_of_memory_and_other_errors(tmp_path, monkeypatch):

    trainer = Trainer(tiny_config(tmp_path / "a", "grpo", "train.steps=1"))
    always = fails_when(lambda: True, RuntimeError(CPU_ALLOCATOR))
    monkeypatch.setattr(ckpt, "_write_checkpoint_files", always(ckpt._write_checkpoint_files))
    with pytest.raises(
        CheckpointError,
        match="out of memory while writing the checkpoint of "
        "step 1 \\(an allocation of 1.0 GiB failed\\)",
    ):
        trainer.fit()
    monkeypatch.undo()

    # Any other error is a bug and keeps its type (and traceback).
    trainer = Trainer(tiny_config(tmp_path / "b"))
    bug = fails_when(lambda: True, RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    monkeypatch.setattr(trainer.backend, "generate", bug(trainer.backend.generate))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        trainer.fit()


if __name__ == "__main__":
    main(sys.argv[1:])
