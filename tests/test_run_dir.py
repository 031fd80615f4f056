"""A run directory has one writer, and a resume trusts nothing: a second writer, a tampered,
truncated or foreign checkpoint each end in one error line that names the file, and a refused
resume changes nothing on disk (dcrl/train/run_lock.py, dcrl/train/resume_check.py)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dcrl.cli import app
from dcrl.train.run_lock import LOCK_FILE, RunLock
from tests.helpers import read_metrics, tiny_overrides

pytestmark = pytest.mark.faults


def one_error(result, *names: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- one writer ---------------------------------------------------------------------------------
def test_a_second_writer_is_refused_before_it_writes_anything(tmp_path):
    run_dir = tmp_path / "run"
    lock = RunLock(run_dir).acquire()  # a run training there right now
    try:
        result = CliRunner().invoke(app, ["train", *tiny_overrides(run_dir)])
        one_error(result, str(run_dir), "in use by pid")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # no config, no metrics
    finally:
        lock.release()
    assert not (run_dir / LOCK_FILE).exists()


def test_a_stale_lock_of_a_dead_process_is_reclaimed_with_a_note(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    result = CliRunner().invoke(app, ["train", *tiny_overrides(run_dir, "grpo", "train.steps=1")])
    assert result.exit_code == 0, result.output
    assert f"reclaimed the stale lock {run_dir / LOCK_FILE} of pid {dead.pid}" in result.stderr
    assert not (run_dir / LOCK_FILE).exists()  # released at the end


# -- resume trusts nothing ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-step AEPO run with a checkpoint after each step."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    options = ("train.save_every=1", "train.keep_checkpoints=3")
    result = CliRunner().invoke(app, ["train", *tiny_overrides(run_dir, "aepo", *options)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture
def interrupted(tmp_path, finished_run):
    """A copy of the run as if killed during step 2: `latest` names step_000001."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step_000002")
    (run_dir / "checkpoints" / "latest").write_text("step_000001")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace(str(finished_run), str(run_dir)))
    return run_dir


@pytest.mark.slow
def test_the_untouched_copy_resumes(interrupted):
    result = CliRunner().invoke(app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(interrupted)] == [1, 2]


def edit_state(run_dir: Path, **changes) -> None:
    path = run_dir / "checkpoints" / "step_000001" / "trainer_state.json"
    state = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    path.write_text(json.dumps(state))


def strip_run_record(run_dir: Path) -> None:  # a checkpoint written before it was saved
    edit_state(run_dir, run=None)


def make_it_grpo(run_dir: Path) -> None:
    """config.yaml edited into a GRPO run (the checkpoint is AEPO's)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["algorithm"] = {"name": "grpo"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def reshape_a_weight(run_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = run_dir / CKPT / "model.safetensors"
    weights = load_file(str(path))
    weights[sorted(weights)[0]] = torch.zeros(3)
    save_file(weights, str(path))


CKPT = "checkpoints/step_000001"
TAMPERED = {
    "step-negative": (lambda d: edit_state(d, step=-3), f"{CKPT}/trainer_state.json says step -3"),
    "step-ahead": (lambda d: edit_state(d, step=999), f"{CKPT}/trainer_state.json says step 999"),
    "state-missing-keys": (lambda d: edit_state(d, sampler=None), "trainer_state.json: 'sampler'"),
    "state-not-json": (
        lambda d: (d / CKPT / "trainer_state.json").write_text("{step: 1"),
        f"{CKPT}/trainer_state.json is not readable JSON",
    ),
    "optimizer-truncated": (
        lambda d: (d / CKPT / "optimizer.pt").write_bytes(
            (d / CKPT / "optimizer.pt").read_bytes()[:300]
        ),
        f"{CKPT}/optimizer.pt is not a readable optimizer state",
    ),
    "weights-garbage": (
        lambda d: (d / CKPT / "model.safetensors").write_bytes(b"\x00garbage" * 10),
        f"{CKPT}/model.safetensors is not a readable safetensors file",
    ),
    "weights-missing": (
        lambda d: (d / CKPT / "model.safetensors").unlink(),
        f"{CKPT} has no weights",
    ),
    "latest-names-a-deleted-checkpoint": (
        lambda d: (d / "checkpoints" / "latest").write_text("step_000005"),
        "step_000001 is intact",
    ),
    "another-algorithm": (lambda d: make_it_grpo(d), "a checkpoint of algorithm 'aepo'"),
    "another-algorithm-old-checkpoint": (
        lambda d: (strip_run_record(d), make_it_grpo(d)),
        "checkpoint of another algorithm",
    ),
    "weights-of-another-shape": (lambda d: reshape_a_weight(d), "has shape (3,)"),
}


@pytest.mark.parametrize("case", TAMPERED, ids=str)
def test_a_tampered_checkpoint_is_one_error_and_changes_nothing(interrupted, case):
    tamper, names = TAMPERED[case]
    tamper(interrupted)
    before = snapshot(interrupted)
    result = CliRunner().invoke(app, ["train", "--resume", str(interrupted)])
    one_error(result, names.replace("{run}", str(interrupted)))
    assert snapshot(interrupted) == before
