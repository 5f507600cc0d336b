"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every file this project writes (lock, goldens, downloads, caches) goes through here or through
``atomic_target`` so that an interrupted process or a concurrent pytest-xdist worker cannot leave
a partial file at the final path. A write that fails (full disk, read-only file system,
permissions, a directory in the way) raises one ``FileSystemError`` naming the path and the cause.

Only a regular file is ever replaced, and a new file is created with the permissions the
user's umask gives (a rewritten one keeps its mode). Whatever else a path names is what the user
meant to write to: a character device (``/dev/null``, a terminal), a FIFO, or a link into
``/proc/<pid>/fd`` such as ``/dev/stdout`` is written to directly; a directory, a socket or a
block device is refused with a ``FileSystemError``.

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
import stat
import tempfile
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO

from pytest_smallmodel.common.errors import FileSystemError, file_error

TMP_SUFFIX = ".tmp"
# Errors that can only come from the file being written, never from a network source feeding it.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")


@cache
def _host_tag() -> str:
    # Process ids only mean something on the host that issued them (a shared cache may be
    # mounted by several machines), so temporaries carry the host they belong to.
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


_UMASK_LOCK = threading.Lock()
# Links through these name an open file descriptor, not a place in the file system: replacing
# the link would cut the stream it stands for (``/dev/stdout`` -> ``/proc/self/fd/1``).
_DESCRIPTOR_RE = re.compile(r"^(?:/proc/(?P<pid>\d+)(?:/task/\d+)?|/dev)/fd/(?P<fd>\d+)$")
_MAX_LINK_HOPS = 40


def _umask() -> int:
    # The umask can only be read by setting it: set it back at once, under a lock so that two
    # threads of this process never see each other's temporary value.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _descriptor_link(path: Path) -> str | None:
    """The ``/proc/<pid>/fd/N`` link that ``path`` is or leads through, else None."""
    current = os.path.abspath(path)
    for _ in range(_MAX_LINK_HOPS):
        current = os.path.join(
            os.path.realpath(os.path.dirname(current)), os.path.basename(current)
        )
        if _DESCRIPTOR_RE.match(current):
            return current
        if not os.path.islink(current):
            return None
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    return None


def _own_descriptor(link: str) -> int | None:
    """N when ``link`` is this process's ``/proc/<pid>/fd/N``."""
    match = _DESCRIPTOR_RE.match(link)
    if match is None or match["pid"] not in (None, str(os.getpid())):
        return None
    return int(match["fd"])


def _refused(path: Path, what: str) -> FileSystemError:
    return FileSystemError(
        f"cannot write {path}: it is {what}, not a file. Give the path of a regular file "
        "(an existing one is replaced) or of a new one"
    )


def _kind_of_target(path: Path) -> tuple[str, os.stat_result | None]:
    """How ``path`` may be written: ``"new"``, ``"replace"`` (a regular file, whose stat is
    returned) or ``"direct"`` (a device, FIFO or descriptor link); anything else raises."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "new", None
    except OSError as error:
        raise file_error("write", path, error) from None
    if stat.S_ISDIR(info.st_mode):
        raise file_error("write", path, IsADirectoryError(errno.EISDIR, "Is a directory"))
    if stat.S_ISSOCK(info.st_mode):
        raise _refused(path, "a socket")
    if stat.S_ISBLK(info.st_mode):
        raise _refused(path, "a block device")
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        return "direct", info
    if _descriptor_link(path) is not None:
        return "direct", info
    return "replace", info


@contextlib.contextmanager
def atomic_target(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Yield a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. Storage
    errors (disk full, read-only) while writing, and any error of the rename, become a
    ``FileSystemError`` for ``path``. A path that is not a regular file is written to directly
    or refused (module docstring); a link to a regular file replaces the file it leads to and
    keeps the link.
    """
    path = Path(path)
    kind, info = _kind_of_target(path)
    if kind == "direct":
        with _direct(path, mode) as handle:
            yield handle
        return
    if os.path.islink(path):
        path = Path(os.path.realpath(path))  # replace what the link leads to, keep the link
    fd, tmp_name = _temporary(path)
    handle = os.fdopen(fd, mode)
    try:
        with _any_error(path):
            # mkstemp creates 0600: a new file gets what the umask gives, a rewritten one its own.
            permissions = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask()
            os.fchmod(handle.fileno(), permissions)
        with _storage_errors(path):
            yield handle
        with _any_error(path):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp_name, path)
    except BaseException:
        # close() flushes again; on a full disk that fails again and must not replace the error.
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """What the caller's writes raise: a full or read-only disk becomes a FileSystemError; any
    other error (a download's network failure) stays the caller's."""
    try:
        yield
    except OSError as error:
        if error.errno in _STORAGE_ERRNOS:
            raise file_error("write", path, error) from None
        raise


@contextlib.contextmanager
def _any_error(path: Path) -> Iterator[None]:
    """Finishing the file: every error is about the file."""
    try:
        yield
    except OSError as error:
        raise file_error("write", path, error) from None


def _open_direct(path: Path, mode: str) -> IO[bytes]:
    link = _descriptor_link(path)
    own = _own_descriptor(link) if link is not None else None
    if own is not None:
        # Our own stdout: write at its offset, as print() would; reopening the path would start
        # a redirected file over from its first byte.
        return os.fdopen(os.dup(own), mode)
    if link is not None:
        # Another process's descriptor: append, so that what it wrote before stays.
        return open(path, mode.replace("w", "a"))
    return open(path, mode)  # a device or a FIFO: nothing there to truncate


@contextlib.contextmanager
def _direct(path: Path, mode: str) -> Iterator[IO[bytes]]:
    with _any_error(path):
        handle = _open_direct(path, mode)
    try:
        with _storage_errors(path):
            yield handle
        with _any_error(path):
            handle.close()  # /dev/full reports ENOSPC here, when the buffer is flushed
    finally:
        with contextlib.suppress(OSError):
            handle.close()


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
    kind, _ = _kind_of_target(path)
    if kind == "direct":
        return  # opened when written: a FIFO would block here until its reader comes
    if os.path.islink(path):
        path = Path(os.path.realpath(path))
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
