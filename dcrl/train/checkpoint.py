"""Checkpoints that survive a kill at any moment.

Layout: RUN_DIR/checkpoints/step_000010/{model.safetensors, optimizer.pt, trainer_state.json} and
RUN_DIR/checkpoints/latest (the name of the newest complete checkpoint). When only some parameters
train (LoRA), trainable.safetensors holds just those instead of the whole model.

Atomicity: a checkpoint is written into a temporary directory and renamed into place (rename is
atomic on one file system); `latest` is replaced atomically after that. A kill during a save leaves
at most a stray temporary directory, never a half-written checkpoint that `latest` points to.
"""

from __future__ import annotations

import json
import os
import pickle  # noqa: S403 (only for its UnpicklingError)
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from dcrl._atomic import write_text_atomic
from dcrl.errors import UserError, one_line

CHECKPOINTS = "checkpoints"


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
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep`."""
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
    except Exception:  # a failed write (disk full): free its space, keep the previous checkpoint
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


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return the trainer state."""
    if (path / "trainable.safetensors").is_file():
        missing_or_unexpected = model.load_state_dict(
            load_file(str(path / "trainable.safetensors")), strict=False
        )
        assert not missing_or_unexpected.unexpected_keys, missing_or_unexpected.unexpected_keys
    else:
        load_model(model, str(path / "model.safetensors"))
    try:
        # weights_only: tensors and plain containers only, so a checkpoint from an untrusted run
        # directory cannot run code while it loads.
        blob = torch.load(path / "optimizer.pt", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"{path / 'optimizer.pt'} holds objects other than tensors and plain values "
            f"({one_line(error)[:200]}), which dcrl does not load: it was not written by this "
            "version of dcrl, or was tampered with. Resume from another checkpoint or start over"
        ) from None
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((path / "trainer_state.json").read_text())
