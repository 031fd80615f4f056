"""Checkpoints that survive a kill at any moment.

Layout: RUN_DIR/checkpoints/step_000010/{model.safetensors, optimizer.pt, trainer_state.json} and
RUN_DIR/checkpoints/latest (the name of the newest complete checkpoint). When only some parameters
train (LoRA), trainable.safetensors holds just those instead of the whole model.

Atomicity: a checkpoint is written into a temporary directory and renamed into place (rename is
atomic on one file system); `latest` is replaced atomically after that. A kill during a save leaves
at most a stray temporary directory, never a half-written checkpoint that `latest` points to.

`latest_checkpoint` is the one lookup of the checkpoint a run continues from; a save that fails
(disk full, out of memory) becomes one `CheckpointError` naming the space it needs
(`explain_failed_save`). Reading a checkpoint back is `dcrl.train.resume_check`'s business: it
checks every file before any of it is used.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file, save_model

from dcrl._atomic import write_text_atomic
from dcrl.errors import UserError, one_line
from dcrl.train import memory
from dcrl.train.disk import (
    checkpoint_bytes,
    human_bytes,
    is_write_failure,
    model_bytes,
    write_failed,
)

CHECKPOINTS = "checkpoints"
CHECKPOINT_NAME = re.compile(r"step_(\d{6,})")  # the folder of step N: step_{N:06d}


class CheckpointError(UserError):
    """A checkpoint could not be written; the previous one is intact."""


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from, as tensors and plain Python values only (so that
    `torch.load(weights_only=True)` reads it back: no pickled objects)."""
    numpy_state = np.random.get_state(legacy=False)  # {"state": {"key": uint32 array, ...}, ...}
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = dict(numpy_state["state"])
    numpy_state["state"]["key"] = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(numpy_state)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep`.

    Raises:
        CheckpointError: the write failed or did not fit in memory (`explain_failed_save`: what
            failed, the space a checkpoint needs, which checkpoint survives); any other error is
            raised as it is.
    """
    try:
        root = Path(run_dir) / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:06d}"
        final = root / name
        tmp = root / f".tmp-{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            _write_checkpoint_files(tmp, step, model, optimizer, scheduler, trainer_state)
        except (
            Exception
        ):  # a failed write (disk full): free its space, keep the previous checkpoint
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(root / "latest", name)
        complete = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except Exception as error:
        explained = explain_failed_save(error, run_dir, step, model, resume_hint(run_dir))
        if explained is None:
            raise
        raise explained from None


def explain_failed_save(
    error: BaseException, run_dir: Path, step: int, model: torch.nn.Module, then: str
) -> CheckpointError | None:
    """The CheckpointError for a `save_checkpoint` of `step` that raised `error`: out of memory,
    or a failed write (a full disk is not always an OSError: dcrl.train.disk) with the space a
    checkpoint needs; None for any other error (a bug, to be raised as it is). `then` says which
    checkpoint survives and how to continue."""
    if memory.is_out_of_memory(error):
        return CheckpointError(
            f"out of memory while writing the checkpoint of step {step} "
            f"({memory.failed_allocation(error)}): writing holds about the model's size "
            f"({human_bytes(model_bytes(model))}) once more; give the run more memory; {then}"
        )
    needed = checkpoint_bytes(model)
    if not (isinstance(error, OSError) or is_write_failure(error, run_dir, needed)):
        return None
    folder = Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"
    failed = write_failed(error, f"the checkpoint of step {step}", folder, needed, then)
    return CheckpointError(one_line(failed))


def _write_checkpoint_files(
    tmp: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
) -> None:
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if len(trainable) == len(list(model.parameters())):
        save_model(model, str(tmp / "model.safetensors"))
    else:  # LoRA: the frozen base is the one loaded at start; keep only what training changes
        tensors = {n: p.detach().contiguous() for n, p in trainable.items()}
        save_file(tensors, str(tmp / "trainable.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
        },
        tmp / "optimizer.pt",
    )
    write_text_atomic(
        tmp / "trainer_state.json", json.dumps({"step": step, **trainer_state}, indent=1)
    )


def complete_checkpoints(run_dir: Path) -> list[str]:
    """The names of a run directory's complete checkpoints (step_* folders with their
    trainer_state.json, the file written last), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name) and (p / "trainer_state.json").is_file()
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resume continues from: the complete step_* folder `latest` names; None
    when `latest` is missing, unreadable or names anything else (`resume_check` says which)."""
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    path = pointer.parent / name
    if not CHECKPOINT_NAME.fullmatch(name) or not (path / "trainer_state.json").is_file():
        return None
    return path


def resume_hint(run_dir: Path) -> str:
    """Which checkpoint of the run survives a failure, and how to continue from it: the end of
    every error that stops a run."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return "the run has no checkpoint yet: fix the cause and start it again"
    return (
        f"its last checkpoint {latest} is intact: fix the cause, then continue with "
        f"`dcrl train --resume {run_dir}`"
    )
