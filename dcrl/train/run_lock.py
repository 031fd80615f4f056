"""One writer per run directory: a lock file, taken before anything in the directory is written.

`RUN_DIR/.dcrl.lock` holds the owner's pid, host and start time (JSON) and is locked with
`flock`, so the kernel releases it when the owner exits, however it exits (`kill -9` included).
A second `dcrl train` into the same directory, or a `--resume` of a run that is still training,
is refused with one error naming the owner. A lock file left by a run that died (its pid no
longer running, or on another host and no longer flocked) is reclaimed with a note on stderr.

The lock is released, and the file removed, when the trainer finishes (`release`), when the lock
object is garbage collected, or at interpreter exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcrl.errors import UserError

LOCK_FILE = ".dcrl.lock"


class RunDirLocked(UserError):
    """Another process is writing this run directory."""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
        owner = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process"
    started = owner.get("started")
    since = (
        f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        if isinstance(started, int | float)
        else ""
    )
    return f"pid {owner.get('pid')} on host {owner.get('host')}{since}"


def _release(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        # Only the holder removes the file, and only while it still is the file at `path`.
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor drops the flock


class RunLock:
    """The lock of one run directory, held from `acquire` until `release` (or exit).

    Raises (acquire):
        RunDirLocked: another live process holds it.
        UserError: the directory cannot be created or the lock file written.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._finalizer: weakref.finalize | None = None

    @property
    def held(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def acquire(self) -> RunLock:
        if self.held:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"log.output_dir={self.run_dir}: cannot create the run directory there "
                f"({error.strerror or error}); choose a writable directory for log.output_dir"
            ) from None
        for _ in range(10):  # another process may replace the file between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise UserError(
                    f"log.output_dir={self.run_dir}: cannot write the lock file {self.path} "
                    f"({error.strerror or error}); choose a writable directory for log.output_dir"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunDirLocked(
                    f"run directory {self.run_dir} is in use by {_describe(owner)} (lock file "
                    f"{self.path}): one run directory has one writer. Wait for that run to end, "
                    "or set log.output_dir to another directory"
                ) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # released and removed by its holder meanwhile: try again
                os.close(fd)
                continue
            previous = _read_owner(fd)
            if previous and previous.get("pid") != os.getpid():
                here = previous.get("host") == socket.gethostname()
                state = (
                    "no longer running"
                    if here and not _pid_running(int(previous.get("pid", 0) or 0))
                    else "no longer holding it"
                )
                print(
                    f"note: reclaimed the stale lock {self.path} of {_describe(previous)} "
                    f"({state}): that run ended without releasing it",
                    file=sys.stderr,
                )
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(owner).encode())
            except OSError as error:
                _release(fd, self.path)
                raise UserError(
                    f"log.output_dir={self.run_dir}: cannot write the lock file {self.path} "
                    f"({error.strerror or error}); free space or choose another log.output_dir"
                ) from None
            self._finalizer = weakref.finalize(self, _release, fd, self.path)
            return self
        raise RunDirLocked(
            f"run directory {self.run_dir}: its lock file {self.path} keeps being replaced by "
            "other processes; make sure one run at a time writes there"
        )

    def release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def releases_lock_on_error(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate an `__init__` that takes `self.run_lock`: if it fails, the lock is released at
    once (a refused resume leaves the directory as it found it), not when the object is freed."""

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException:
            lock = getattr(self, "run_lock", None)
            if lock is not None:
                lock.release()
            raise

    wrapped.__doc__, wrapped.__name__, wrapped.__wrapped__ = init.__doc__, init.__name__, init
    return wrapped


def releases_lock_after(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a method that ends the object's writing (`Trainer.fit`): `self.run_lock` is
    released when it returns or raises."""

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.run_lock.release()

    wrapped.__doc__, wrapped.__name__, wrapped.__wrapped__ = method.__doc__, method.__name__, method
    return wrapped
