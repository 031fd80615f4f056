"""Resume trusts nothing: a checkpoint is read whole and checked before any of it is used.

`read_checkpoint` finds the checkpoint `dcrl train --resume` continues from and checks it
against its folder name (`step_000012` holds step 12), the run's config (train.steps, the
algorithm and its targets, the model's parameter names and shapes) and its own schema
(trainer_state.json's keys and types, optimizer.pt's layout, weights files that parse). Any
mismatch is one `UserError` naming the file, what is wrong and what to do, raised before the
trainer writes anything, so a refused resume changes nothing on disk.
"""

from __future__ import annotations

import json
import pickle  # noqa: S403 (only for its UnpicklingError)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dcrl.config import to_dict
from dcrl.errors import UserError, one_line
from dcrl.train.checkpoint import (
    CHECKPOINT_NAME,
    CHECKPOINTS,
    complete_checkpoints,
    latest_checkpoint,
    set_rng_state,
)


class ResumeError(UserError):
    """The checkpoint to resume from is missing, damaged or belongs to another run."""


@dataclass
class CheckpointContents:
    """A checkpoint read into memory: apply with `apply_checkpoint`."""

    path: Path
    state: dict[str, Any]  # trainer_state.json
    weights: dict[str, torch.Tensor]
    trainable_only: bool
    blob: dict[str, Any]  # optimizer.pt


def run_identity(config: Any) -> dict[str, Any]:
    """What a checkpoint must agree with to continue this run: the algorithm and its targets
    (names and settings). Saved in trainer_state.json as "run"."""
    algorithm = to_dict(config.algorithm)
    return {"algorithm": algorithm.get("name"), "algorithm_config": algorithm}


def trainer_state(config: Any, algorithm: Any, sampler: Any, bad_steps: int = 0) -> dict[str, Any]:
    """What a checkpoint's trainer_state.json holds besides the step: the sampler's and the
    algorithm's states, the count of bad steps in a row and the run's identity."""
    return {
        "sampler": sampler.state_dict(),
        "algorithm": algorithm.state_dict(),
        "bad_steps": bad_steps,
        "run": run_identity(config),
    }


def _fix(path: Path) -> str:
    return (
        f"resume from another checkpoint (point {path.parent / 'latest'} at an intact step_* "
        "folder) or start the run again in a new log.output_dir"
    )


def find_checkpoint(run_dir: Path) -> Path:
    """`checkpoint.latest_checkpoint`, or a ResumeError saying what is there instead."""
    path = latest_checkpoint(run_dir)
    if path is not None:
        return path
    pointer = run_dir / CHECKPOINTS / "latest"
    intact = complete_checkpoints(run_dir)
    if not pointer.is_file():
        if intact:
            raise ResumeError(
                f"nothing to resume in {run_dir}: {pointer} is missing, but {intact[-1]} looks "
                f"complete; to resume from it, write its name into {pointer}"
            )
        raise ResumeError(f"nothing to resume in {run_dir}: it has no complete checkpoint")
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ResumeError(
            f"{pointer} cannot be read ({one_line(error)}); write the name of an intact "
            f"checkpoint into it ({', '.join(intact) or 'none is left'})"
        ) from None
    if intact:
        raise ResumeError(
            f"{pointer} names {name[:80]!r}, which is not a complete checkpoint, while "
            f"{intact[-1]} is intact: to resume from it, write its name into {pointer}"
        )
    raise ResumeError(
        f"nothing to resume in {run_dir}: {pointer} names {name[:80]!r}, which is not a "
        "complete checkpoint, and no other is left; start the run again"
    )


def _read_state(path: Path, config: Any) -> dict[str, Any]:
    file = path / "trainer_state.json"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResumeError(
            f"{file} is not readable JSON ({one_line(error)[:200]}); {_fix(path)}"
        ) from None
    if not isinstance(state, dict):
        raise ResumeError(
            f"{file} must hold a JSON object, not {type(state).__name__}; {_fix(path)}"
        )
    folder_step = int(CHECKPOINT_NAME.fullmatch(path.name).group(1))
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise ResumeError(f"{file}: 'step' must be an integer, got {step!r}; {_fix(path)}")
    if step != folder_step:
        raise ResumeError(
            f"{file} says step {step}, but its folder {path.name} is step {folder_step}: the "
            f"state was edited or copied from another checkpoint; {_fix(path)}"
        )
    if step < 1:
        raise ResumeError(f"{file}: step must be ≥ 1, got {step}; {_fix(path)}")
    if step > config.train.steps:
        raise ResumeError(
            f"{file} is at step {step}, past the run's train.steps={config.train.steps} "
            f"({path.parent.parent / 'config.yaml'}): the config was edited; restore it, or "
            "start a new run"
        )
    for key, kind in (("sampler", dict), ("algorithm", dict)):
        if not isinstance(state.get(key), kind):
            raise ResumeError(f"{file}: {key!r} is missing or not a JSON object; {_fix(path)}")
    bad_steps = state.get("bad_steps", 0)
    if isinstance(bad_steps, bool) or not isinstance(bad_steps, int) or bad_steps < 0:
        raise ResumeError(
            f"{file}: 'bad_steps' must be an integer ≥ 0, got {bad_steps!r}; {_fix(path)}"
        )
    sampler = state["sampler"]
    for key in ("epoch", "position"):
        value = sampler.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ResumeError(
                f"{file}: sampler.{key} must be an integer ≥ 0, got {value!r}; {_fix(path)}"
            )
    saved_run = state.get("run")
    if saved_run is not None:
        identity = run_identity(config)
        if saved_run.get("algorithm") != identity["algorithm"]:
            raise ResumeError(
                f"{path} is a checkpoint of algorithm {saved_run.get('algorithm')!r}, but the run "
                f"({path.parent.parent / 'config.yaml'}) is algorithm.name="
                f"{identity['algorithm']!r}: resume it with the config it was trained with, or "
                "start a new run"
            )
        saved_config = saved_run.get("algorithm_config") or {}
        changed = sorted(
            key
            for key in set(saved_config) | set(identity["algorithm_config"])
            if saved_config.get(key) != identity["algorithm_config"].get(key)
        )
        if changed:
            key = changed[0]
            raise ResumeError(
                f"{path} was trained with algorithm.{key}={saved_config.get(key)!r}, but the run's "
                f"config.yaml says {identity['algorithm_config'].get(key)!r}: resume with the "
                "settings it was trained with (restore config.yaml), or start a new run"
            )
    return state


def _same_structure(saved: Any, fresh: Any) -> bool:
    """Whether a saved algorithm state has the keys (and list lengths) of a fresh one."""
    if isinstance(fresh, dict):
        return (
            isinstance(saved, dict)
            and set(saved) == set(fresh)
            and all(
                _same_structure(saved[k], fresh[k]) for k in fresh if k in ("targets", "controller")
            )
        )
    if isinstance(fresh, list):
        return (
            isinstance(saved, list)
            and len(saved) == len(fresh)
            and all(
                _same_structure(a, b)
                for a, b in zip(saved, fresh, strict=True)
                if isinstance(b, dict)
            )
        )
    return True


def _read_weights(path: Path, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    from safetensors.torch import load_file

    trainable_file, full_file = path / "trainable.safetensors", path / "model.safetensors"
    trainable_only = trainable_file.is_file()
    file = trainable_file if trainable_only else full_file
    if not file.is_file():
        raise ResumeError(f"{path} has no weights ({full_file.name} is missing); {_fix(path)}")
    try:
        weights = load_file(str(file))
    except Exception as error:  # SafetensorError, OSError, ...: the file is damaged
        raise ResumeError(
            f"{file} is not a readable safetensors file ({one_line(error)[:200]}): it is "
            f"truncated or damaged; {_fix(path)}"
        ) from None
    expected = (
        {n: p for n, p in model.named_parameters() if p.requires_grad}
        if trainable_only
        else model.state_dict()
    )
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise ResumeError(
            f"{file} holds weights this run's model does not have ({unexpected[0]!r} and "
            f"{len(unexpected) - 1} more): it is a checkpoint of another model; {_fix(path)}"
        )
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ResumeError(
                f"{file}: weight {name!r} has shape {tuple(tensor.shape)}, but this run's model "
                f"has {tuple(expected[name].shape)}: it is a checkpoint of another model; "
                f"{_fix(path)}"
            )
    if trainable_only:
        missing = sorted(set(expected) - set(weights))
    else:  # safetensors' save_model stores one of each set of tied (shared) tensors
        stored = {t.data_ptr() for n, t in model.state_dict().items() if n in weights}
        missing = sorted(
            n
            for n, t in model.state_dict().items()
            if n not in weights and t.data_ptr() not in stored
        )
    if missing:
        raise ResumeError(
            f"{file} lacks weights of this run's model ({missing[0]!r} and {len(missing) - 1} "
            f"more); {_fix(path)}"
        )
    return weights, trainable_only


def _read_optimizer(path: Path) -> dict[str, Any]:
    file = path / "optimizer.pt"
    if not file.is_file():
        raise ResumeError(f"{file} is missing; {_fix(path)}")
    try:
        # weights_only: tensors and plain containers only, so a checkpoint from an untrusted run
        # directory cannot run code while it loads.
        blob = torch.load(file, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ResumeError(
            f"{file} holds objects other than tensors and plain values "
            f"({one_line(error)[:200]}), which dcrl does not load: it was not written by this "
            "version of dcrl, or was tampered with. Resume from another checkpoint or start over"
        ) from None
    except Exception as error:  # RuntimeError, EOFError, ...: truncated or not a torch file
        raise ResumeError(
            f"{file} is not a readable optimizer state ({one_line(error)[:200]}): it is "
            f"truncated or damaged; {_fix(path)}"
        ) from None
    if not isinstance(blob, dict) or not {"optimizer", "scheduler", "rng"} <= set(blob):
        raise ResumeError(
            f"{file} lacks the optimizer, scheduler and RNG states dcrl writes; {_fix(path)}"
        )
    return blob


def read_checkpoint(
    run_dir: Path, config: Any, model: torch.nn.Module, algorithm: Any, sampler: Any
) -> CheckpointContents:
    """The latest checkpoint of `run_dir`, read into memory and checked (see the module doc).

    Raises:
        ResumeError: no usable checkpoint, or one that does not match the run.
    """
    path = find_checkpoint(Path(run_dir))
    state = _read_state(path, config)
    file = path / "trainer_state.json"
    if not _same_structure(state["algorithm"], algorithm.state_dict()):
        raise ResumeError(
            f"{file}: its algorithm state does not fit algorithm.name="
            f"{config.algorithm.name!r} with this run's targets: it is a checkpoint of another "
            "algorithm; resume it with the config it was trained with, or start a new run"
        )
    if set(state["sampler"]) != set(sampler.state_dict()):
        raise ResumeError(f"{file}: its sampler state has unexpected keys; {_fix(path)}")
    weights, trainable_only = _read_weights(path, model)
    blob = _read_optimizer(path)
    return CheckpointContents(path, state, weights, trainable_only, blob)


def apply_checkpoint(
    contents: CheckpointContents,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    algorithm: Any,
    sampler: Any,
) -> None:
    """Load checked checkpoint contents into the run's objects (in memory only).

    Raises:
        ResumeError: a state that passed the schema checks but does not load (an optimizer of
            other parameter groups, a controller of other settings).
    """
    path = contents.path
    try:
        model.load_state_dict(contents.weights, strict=False)
    except RuntimeError as error:
        raise ResumeError(
            f"{path}: its weights do not load ({one_line(error)[:200]}); {_fix(path)}"
        ) from None
    try:
        optimizer.load_state_dict(contents.blob["optimizer"])
        if scheduler is not None and contents.blob["scheduler"] is not None:
            scheduler.load_state_dict(contents.blob["scheduler"])
        set_rng_state(contents.blob["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
        raise ResumeError(
            f"{path / 'optimizer.pt'} does not fit this run's model and optimizer "
            f"({one_line(error)[:200]}); {_fix(path)}"
        ) from None
    try:
        sampler.load_state_dict(contents.state["sampler"])
        algorithm.load_state_dict(contents.state["algorithm"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
        raise ResumeError(
            f"{path / 'trainer_state.json'} does not fit this run's algorithm "
            f"({config_hint(error)}); resume with the config it was trained with, or start a "
            "new run"
        ) from None


def config_hint(error: BaseException) -> str:
    text = one_line(error)[:200]
    return f"{type(error).__name__}: {text}" if isinstance(error, KeyError) else text


def restore_checkpoint(
    run_dir: Path,
    config: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    algorithm: Any,
    sampler: Any,
) -> dict[str, Any]:
    """Continue the run's objects from its latest checkpoint: `read_checkpoint`, then
    `apply_checkpoint`. Returns the checkpoint's trainer state (its step, bad_steps, ...).

    Raises:
        ResumeError: no usable checkpoint, or one that does not match or fit the run.
    """
    contents = read_checkpoint(run_dir, config, model, algorithm, sampler)
    apply_checkpoint(contents, model, optimizer, scheduler, algorithm, sampler)
    return contents.state
