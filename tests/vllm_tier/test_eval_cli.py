"""`dcrl eval --backend vllm` samples through the rollout registry with the engine, and the
evaluation records which decoder drew its samples (as training's rollout.decoding means it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def dcrl_eval(out: Path, *options: str) -> dict:
    command = [sys.executable, "-m", "dcrl.cli", "eval", "--model", "tiny-explore", "--data",
               "explore", "--n", "4", "--limit", "4", "--max-new-tokens", "96", "--out", str(out),
               *options]  # fmt: skip
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "settings.json").read_text())


@pytest.mark.parametrize(
    ("options", "backend", "decoding"),
    [
        (("--backend", "vllm"), "vllm", "vllm"),
        (("--backend", "hf"), "hf", "loop"),  # auto = dcrl's decoding loop, as in training
        (("--backend", "hf", "--decoding", "generate"), "hf", "generate"),
    ],
)
def test_eval_records_the_backend_and_decoder_that_sampled(tmp_path, options, backend, decoding):
    settings = dcrl_eval(tmp_path / "eval", *options)
    assert (settings["backend"], settings["decoding"]) == (backend, decoding)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    records = (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()
    assert len([r for r in records if json.loads(r)["kind"] == "sample"]) == 16
    assert 0.0 <= metrics["avg@4"] <= 1.0


def test_decoding_loop_with_the_vllm_backend_is_refused(tmp_path):
    command = [sys.executable, "-m", "dcrl.cli", "eval", "--model", "tiny-explore", "--data",
               "explore", "--n", "2", "--limit", "2", "--backend", "vllm", "--decoding", "loop",
               "--out", str(tmp_path / "eval")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "decoding=loop is the hf backend's decoder" in result.stderr
    assert "Traceback" not in result.stderr
