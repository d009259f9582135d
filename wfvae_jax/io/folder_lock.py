"""One writer per folder: an exclusive lock on ``FOLDER/.wfvae_jax.lock`` held while a run writes.

``train.py --workdir`` and ``wfvae encode-dataset --out`` each hold the lock of their folder for
the whole run, so a second run on the same folder stops at once with one line naming the first
(pid, host, start time) instead of silently mixing its checkpoints or shards into the first's.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file: the kernel drops it when the process
ends in any way (exit, exception, SIGTERM, kill -9), so a stale lock never blocks a rerun; the
file itself stays (it is never deleted, since deleting a lock file races with a process that has
it open) and records the holder as JSON ``{"pid", "host", "started", "command"}``. On Linux,
NFS mounts implement ``flock`` with NFS locks, so the lock also holds between hosts.

Multi-host runs: only process 0 takes the lock; every other process then checks that the lock is
held (its own non-blocking shared lock must fail), which proves it sees the same folder as
process 0 through a file system that honours locks.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax

from wfvae_jax.errors import UserError
from wfvae_jax.inference.multihost import any_process

LOCK_NAME = ".wfvae_jax.lock"
F = TypeVar("F", bound=Callable[..., Any])


def tmp_name(path: str | os.PathLike) -> str:
    """``PATH.<host>.<pid>.tmp``: a temporary name for ``path`` that no other process uses."""
    return f"{os.fspath(path)}.{socket.gethostname()}.{os.getpid()}.tmp"


def _holder(lock_path: str) -> dict[str, Any]:
    """What the lock file says about its holder (``{}`` if it cannot be read yet)."""
    for _ in range(20):  # the holder writes its record just after locking
        try:
            with open(lock_path) as f:
                record = json.load(f)
            if isinstance(record, dict) and record.get("pid"):
                return record
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {}


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "another process (its record could not be read)"
    return (
        f"{record.get('command', 'another run')} (pid {record.get('pid')} on host "
        f"{record.get('host')}, started {record.get('started')})"
    )


class FolderLock:
    """The exclusive lock of one folder; :meth:`release` (or the process ending) frees it."""

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.command = command
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            os.makedirs(self.folder, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot create the lock file {self.path}: {e.strerror or e}",
                hint="pass a folder you can write to",
            ) from e

    def acquire(self) -> FolderLock:
        """Takes the lock and records this process in the lock file.

        Raises:
          UserError: another process holds the lock (the message names its pid, host and start
            time), or the folder cannot be written.
        """
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"cannot lock {self.path}: {e.strerror or e}",
                    hint="use a folder on a file system that supports file locks",
                ) from e
            raise UserError(
                f"{self.folder} is in use by {_describe(_holder(self.path))}",
                hint="wait for that run to finish or stop it, or use another folder; two runs "
                "writing one folder would overwrite each other's files",
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def check_held(self) -> None:
        """Raises UserError unless some process holds the lock (used by processes other than 0)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return  # held, as it should be
        finally:
            os.close(fd)
        raise UserError(
            f"process {jax.process_index()} sees no lock on {self.folder}, which process 0 "
            "holds: the folder is not on a file system shared between the hosts, or that file "
            "system ignores locks",
            hint="put the folder on storage every host mounts (e.g. NFS) at the same path",
        )

    def release(self) -> None:
        """Frees the lock (the record is cleared; the file stays)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, command: str) -> Iterator[FolderLock]:
    """Holds ``folder``'s lock for the block: process 0 takes it, the others check it is held.

    Every process of a multi-process run must enter the block (one small all-gather).

    Raises:
      UserError: the folder is in use by another run (naming it), cannot be written, or (other
        processes) is not locked by process 0.
    """
    lock = FolderLock(folder, command)
    error: UserError | None = None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except UserError as e:
            error = e
    if any_process(error is not None):
        if error is not None:
            raise error
        raise UserError(
            f"process 0 could not lock {lock.folder}", hint="see process 0's error message"
        )
    try:
        if jax.process_index() != 0:
            lock.check_held()
        yield lock
    finally:
        lock.release()


def holds_lock(arg: str, command: str) -> Callable[[F], F]:
    """Decorator: the function runs holding the lock of the folder passed as argument ``arg``
    (see :func:`lock_folder`)."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            folder = signature.bind(*args, **kwargs).arguments[arg]
            with lock_folder(folder, command):
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
