"""Writing a file so that a kill at any moment leaves either its old or its new content.

The text goes to a temporary file beside the target, is flushed to disk, and is renamed over the
target (`os.replace` is atomic on one file system); the directory entry is then synced, so the
rename itself survives a power loss. A kill before the rename leaves only a stray `*.tmp` file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace the content of `path` with `text` (UTF-8), atomically."""
    _write_atomic(path, text, "w")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the content of `path` with `data`, atomically (e.g. a figure's PNG)."""
    _write_atomic(path, data, "wb")


def _write_atomic(path: str | os.PathLike[str], content: str | bytes, mode: str) -> None:
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, mode, encoding="utf-8" if mode == "w" else None) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # a failed write (disk full): no stray temporary file
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    os.replace(temporary, path)
    with contextlib.suppress(OSError):  # not every file system lets a directory be synced
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
