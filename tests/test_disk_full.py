"""A full disk ends the run with one error naming the path and the space needed, keeps the last
good checkpoint, and leaves no half-written checkpoint or policy folder (dcrl/train/disk.py)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcrl.train import checkpoint as ckpt
from dcrl.train.disk import WriteFailed
from dcrl.train.trainer import Trainer
from tests.helpers import tiny_config, tiny_overrides

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_real_file_size_limit_is_one_error_naming_the_checkpoint(tmp_path):
    """`ulimit -f` of 4 MiB: the tiny model's weights (3.4 MB) fit, its optimizer state does not.
    Python ignores SIGXFSZ, so the write fails with EFBIG, surfacing from torch.save as a
    RuntimeError, not an OSError."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(run_dir, "grpo", "train.steps=1", "train.save_every=1")
    command = f"ulimit -f 4096; exec {sys.executable} -m dcrl.cli train " + " ".join(
        f"'{arg}'" for arg in args
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["/bin/bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    assert (
        f"could not write the checkpoint of step 1 at {run_dir}/checkpoints/step_000001"
        in (errors[0])
    )
    assert "it needs about" in errors[0] and "ulimit -f" in errors[0]
    assert ckpt.latest_checkpoint(run_dir) is None
    assert not any((run_dir / ckpt.CHECKPOINTS).glob(".tmp-*"))  # its space given back


def test_a_failed_policy_export_leaves_no_folder_without_weights(tmp_path):
    run_dir = tmp_path / "run"
    trainer = Trainer(tiny_config(run_dir, "grpo", "train.steps=1"))

    def fills_the_disk(directory, *args, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    trainer.model.save_pretrained = fills_the_disk
    with pytest.raises(WriteFailed, match=f"could not write the policy at {run_dir}/policy"):
        trainer.fit()
    assert not (run_dir / "policy").exists()
    assert not (run_dir / ".tmp-policy").exists()
    assert ckpt.latest_checkpoint(run_dir) is not None  # the final checkpoint came first
