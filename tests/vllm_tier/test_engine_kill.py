"""kill -9 of a real `dcrl train` run on the vLLM engine, after its first checkpoint, then
`dcrl train --resume`: the resumed run logs exactly what an uninterrupted run logs (every metric
but timings, the engine's log-prob comparison included) and ends with the same weights.

What makes it reproducible: vLLM samples each row as its own request with its own seed (drawn
from the step's seed, dcrl.rollout.vllm), and the resumed process's new engine, started from the
policy's starting weights, receives the checkpoint's weights before its first rollout
(`Trainer.sync_engine`; the prefix cache is reset with them), so it samples what the killed
run's engine would have. The engine core runs in the training process, so the kill leaves no
engine process behind; the test checks that too (a process left in the run's session).
bench/faults.py --vllm-python runs the same at several kill points.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from bench.faults import left_in_session
from tests.vllm_tier.helpers import ENGINE_OVERRIDE, ROOT

STEPS = 3
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def train_args(run_dir: Path) -> list[str]:
    """GRPO on the exploration testbed through the engine: 3 steps of 8 prompts × 4 responses,
    a checkpoint after every step."""
    return [
        "train",
        "--config",
        "explore-grpo",
        "rollout.backend=vllm",
        ENGINE_OVERRIDE,
        "rollout.n=4",
        "rollout.max_new_tokens=48",
        "train.prompts_per_step=8",
        "train.mini_batch_prompts=4",
        "train.micro_batch_size=32",
        f"train.steps={STEPS}",
        "train.save_every=1",
        "train.threads=1",
        "log.console=false",
        "log.tensorboard=false",
        f"log.output_dir={run_dir}",
    ]


def dcrl(log: Path, *args: str) -> subprocess.Popen:
    """`dcrl ARGS` in a session of its own (so that any process it leaves behind is found), its
    output into `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dcrl.cli", *args],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(process: subprocess.Popen, log: Path) -> None:
    """Wait for a process that must succeed."""
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "perf/"))}
        for line in lines
        if line.strip()
    ]


def final_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / f"step_{STEPS:06d}" / "model.safetensors")


def latest(run_dir: Path) -> int:
    pointer = run_dir / "checkpoints" / "latest"
    return int(pointer.read_text().split("_")[1]) if pointer.is_file() else 0


def test_kill_9_after_the_first_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path):
    reference, run_dir = tmp_path / "reference", tmp_path / "killed"
    # Both start together (the engine's start-up, tens of seconds, overlaps).
    uninterrupted = dcrl(tmp_path / "reference.log", *train_args(reference))
    killed = dcrl(tmp_path / "killed.log", *train_args(run_dir))
    while latest(run_dir) == 0 and killed.poll() is None:
        time.sleep(0.01)
    assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    checkpoint = latest(run_dir)
    assert 1 <= checkpoint < STEPS
    assert [r["step"] for r in records(run_dir)][:checkpoint] == list(range(1, checkpoint + 1))
    time.sleep(0.5)
    stray = left_in_session(killed.pid)
    for pid in stray:  # started by this test: end them before failing
        os.kill(pid, signal.SIGKILL)
    assert not stray, f"processes left behind by the killed run: {stray}"

    finish(
        dcrl(tmp_path / "resumed.log", "train", "--resume", str(run_dir)), tmp_path / "resumed.log"
    )
    finish(uninterrupted, tmp_path / "reference.log")

    assert [r["step"] for r in records(run_dir)] == list(range(1, STEPS + 1))
    assert records(run_dir) == records(reference)
    got, want = final_weights(run_dir), final_weights(reference)
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
