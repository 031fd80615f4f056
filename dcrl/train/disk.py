"""Failed writes (a full disk, a quota, `ulimit -f`) as one error that names the path and the
space needed, the sizes that space is reckoned from (`checkpoint_bytes`), the run directory's
first write (`prepare_run_dir`), and the policy export made atomic like the checkpoints.

A full disk does not always surface as an `OSError`: safetensors raises its own
`SafetensorError`, `torch.save` a `RuntimeError` ("PytorchStreamWriter failed writing file").
`is_write_failure` recognizes all of them by errno or message, anywhere in the exception chain.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from dcrl._atomic import write_text_atomic
from dcrl.errors import UserError, one_line

WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}
WRITE_MARKERS = (
    "no space left",
    "file too large",
    "quota exceeded",
    "disk quota",
    "failed writing",
    "read-only file system",
    "input/output error",
    "os error 27",  # EFBIG, as Rust (safetensors) reports it
    "os error 28",  # ENOSPC
    "iostream error",  # torch.save's zip writer, on EFBIG/ENOSPC
    "unexpected pos",
)


class WriteFailed(UserError):
    """A file of the run could not be written; the message names it and the space needed."""


def too_little_room(path: Path, needed: int) -> bool:
    """Whether `needed` bytes cannot be written under `path`: less free space on its file
    system, or a file size limit (`ulimit -f`) below it."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        return True
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


def is_write_failure(
    error: BaseException, path: Path | None = None, needed: int | None = None
) -> bool:
    """Whether `error` (or one it was raised from) is a failed write: disk full, quota, size
    limit, read-only or I/O error — by errno or message, or, given the `path` written and the
    bytes `needed`, because there is too little room there (torch's messages say neither)."""
    if path is not None and needed and too_little_room(path, needed):
        return True
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and (
            error.errno in WRITE_ERRNOS or isinstance(error, PermissionError)
        ):
            return True
        if any(marker in str(error).lower() for marker in WRITE_MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return False


def human_bytes(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def write_failed(
    error: BaseException, what: str, path: Path, needed: int | None, then: str
) -> WriteFailed:
    """The one error for a failed write of `what` at `path` (about `needed` bytes); `then`
    says what survives and how to continue."""
    space = f"; it needs about {human_bytes(needed)} free" if needed else ""
    return WriteFailed(
        f"could not write {what} at {path} ({one_line(error)[:200]}){space} (check the free "
        f"space with `df {path.parent}` and the file size limit with `ulimit -f`); {then}"
    )


def model_bytes(model: Any) -> int:
    """Bytes of the model's weights (parameters and buffers), about one weights file."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def adam_state_bytes(model: Any) -> int:
    """Bytes of AdamW's state for the model: two moments per trainable weight."""
    trainable = (p for p in model.parameters() if p.requires_grad)
    return 2 * sum(p.numel() * p.element_size() for p in trainable)


def checkpoint_bytes(model: Any) -> int:
    """About the size of one checkpoint (dcrl.train.checkpoint): the weights and AdamW's
    moments; the trainer state and RNG states are small beside them."""
    return model_bytes(model) + adam_state_bytes(model)


def prepare_run_dir(run_dir: Path, config_text: str) -> None:
    """Create the run directory and write its config.yaml, or say why it cannot be written.

    Raises:
        UserError: naming log.output_dir, with the space config.yaml needs when the disk is
            full.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config_text)
    except OSError as error:
        fix = "choose a writable directory for log.output_dir"
        if is_write_failure(error) and not isinstance(error, PermissionError):
            fix += (
                f", or free space there (config.yaml alone needs {len(config_text.encode())} "
                "bytes; the logs and checkpoints need more)"
            )
        raise UserError(
            f"log.output_dir={run_dir}: cannot write the run directory there ({one_line(error)})"
            f"; {fix}"
        ) from None


def export_policy_atomically(model: Any, tokenizer: Any, out_dir: Path, then: str) -> None:
    """Save the policy as a Hugging Face directory at `out_dir`, atomically: it is written to a
    temporary sibling and renamed into place, so `out_dir` is never a folder without weights.

    Raises:
        WriteFailed: the write failed (naming the path and the space needed); the temporary
            folder is removed and an earlier `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    old = out_dir.with_name(f".old-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except Exception as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(error, out_dir, model_bytes(model)):
            raise write_failed(error, "the policy", out_dir, model_bytes(model), then) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
