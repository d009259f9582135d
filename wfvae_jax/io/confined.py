"""The one rule for files a format names inside its own folder: they stay inside it.

A checkpoint's ``.npy`` arrays, a sharded safetensors' shards and a latent dataset's shards are
named by the folder's own files (a directory listing, an index, a manifest). A forged or careless
folder could name ``../other/...``, an absolute path, or hold a symlink that leaves the folder
(to another dataset, ``/proc/self/environ``, a FIFO that blocks every read). :func:`confined_file`
refuses all of these before anything is opened: the name must be relative without ``..``, the
path with every symlink resolved must lie inside the folder, and it must be a regular file
(``stat`` does not block on a FIFO; ``open`` would). Symlinks that leave the folder on purpose (a
shared weights store) are allowed by ``allow_outside=True`` or the environment variable
``WFVAE_ALLOW_EXTERNAL_LINKS=1``.
"""

from __future__ import annotations

import os
import stat

ALLOW_ENV = "WFVAE_ALLOW_EXTERNAL_LINKS"


class ConfinedFileError(ValueError):
    """A file a folder names that may not be read (outside the folder, not a regular file, a
    symlink loop); ``hint`` says what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def _allowed(allow_outside: bool | None) -> bool:
    if allow_outside is not None:
        return allow_outside
    return os.environ.get(ALLOW_ENV, "") not in ("", "0")


def confined_file(
    root: str | os.PathLike, name: str, what: str, *, allow_outside: bool | None = None
) -> str:
    """The path of the regular file ``name`` (relative, ``/``-separated) under ``root``.

    Args:
      root: the folder (its own symlinks, e.g. a dataset folder linked elsewhere, are fine).
      name: the file's name as the folder's listing/index/manifest gives it.
      what: what the file is, for messages (``"latent shard"``, ``"parameter array"``).
      allow_outside: allow a symlink that resolves outside ``root``; ``None`` reads
        ``WFVAE_ALLOW_EXTERNAL_LINKS``. Names with ``..`` or absolute names are never allowed.
    Returns:
      ``os.path.join(root, name)`` (not resolved).
    Raises:
      ConfinedFileError: an absolute name or one with ``..``; a path resolving outside ``root``
        (unless allowed); a symlink loop; not a regular file (a FIFO, device, socket or
        directory). FileNotFoundError: no such file (or a dangling symlink).
    """
    root = os.fspath(root)
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or ".." in parts:
        raise ConfinedFileError(
            f"{what} {name!r} named in {root} is outside that folder",
            hint="the folder's index or manifest was edited or forged; restore it",
        )
    path = os.path.join(root, name)
    real_root = os.path.realpath(root)
    try:
        real = os.path.realpath(path, strict=True)
        st = os.stat(real)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as e:  # ELOOP, EACCES, ...
        raise ConfinedFileError(
            f"cannot read {what} {path}: {e.strerror or e}",
            hint="replace it with the file itself (a symlink loop or unreadable link?)",
        ) from None
    if os.path.commonpath([real_root, real]) != real_root and not _allowed(allow_outside):
        raise ConfinedFileError(
            f"{what} {path} is a symlink to {real}, outside {real_root}",
            hint=f"copy the file into the folder, or set {ALLOW_ENV}=1 if the link is meant",
        )
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device or socket"
        )
        raise ConfinedFileError(
            f"{what} {path} is {kind}, not a regular file",
            hint="replace it with the file itself",
        )
    return path
