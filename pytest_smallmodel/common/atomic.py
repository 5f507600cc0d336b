"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every file this project writes (lock, goldens, downloads, caches) goes through here or through
``atomic_target`` so that an interrupted process or a concurrent pytest-xdist worker cannot leave
a partial file at the final path. A write that fails (full disk, read-only file system,
permissions, a directory in the way) raises one ``FileSystemError`` naming the path and the cause.

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp``: a process killed with SIGKILL
cannot remove its own, so the next run removes those of dead processes on this host
(``remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO

from pytest_smallmodel.common.errors import file_error

TMP_SUFFIX = ".tmp"
# Errors that can only come from the file being written, never from a network source feeding it.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")


@cache
def _host_tag() -> str:
    # Process ids only mean something on the host that issued them (a shared cache may be
    # mounted by several machines), so temporaries carry the host they belong to.
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


@contextlib.contextmanager
def atomic_target(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Yield a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. Storage
    errors (disk full, read-only) while writing, and any error of the rename, become a
    ``FileSystemError`` for ``path``.
    """
    path = Path(path)
    fd, tmp_name = _temporary(path)
    handle = os.fdopen(fd, mode)
    try:
        try:
            yield handle
        except OSError as error:
            if error.errno in _STORAGE_ERRNOS:
                raise file_error("write", path, error) from None
            raise
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp_name, path)
        except OSError as error:
            raise file_error("write", path, error) from None
    except BaseException:
        # close() flushes again; on a full disk that fails again and must not replace the error.
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _temporary(path: Path) -> tuple[int, str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(
            prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent
        )
    except OSError as error:
        raise file_error("write", path, error) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings on every platform (stable bytes for review)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: Path) -> None:
    """Raise the FileSystemError that writing ``path`` would raise, without writing it.

    For checks up front, before work whose result would be lost. It creates and removes a
    temporary file beside ``path``: os.access() is no answer, root passes it on a read-only mount.
    """
    path = Path(path)
    if path.is_dir():
        raise file_error("write", path, IsADirectoryError(errno.EISDIR, "Is a directory"))
    fd, tmp_name = _temporary(path)
    os.close(fd)
    os.unlink(tmp_name)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries in ``directory`` left by dead processes of this host.

    Returns what was removed. A temporary whose process still runs (a concurrent download) is
    kept; so is one from another host, whose process this machine cannot see.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed  # no directory, nothing left behind
    for entry in entries:
        match = _TEMPORARY_RE.match(entry.name)
        if match is None or match["host"] != _host_tag() or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
