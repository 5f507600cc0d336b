"""Errors that callers (CLI, plugin) turn into one clear message and an exit code.

Every expected failure is a ``SmallModelError``: its ``str`` is the whole message a user sees,
so it names the file, the field and the fix. Anything else escaping is a bug.
"""

from __future__ import annotations

import errno
from pathlib import Path


class SmallModelError(Exception):
    """Base class: the message is complete and user-facing."""

    exit_code = 2


class ConfigError(SmallModelError):
    """pyproject.toml / marker / settings are invalid (usage or configuration: exit 2)."""

    exit_code = 2


class LockError(SmallModelError):
    """models.lock is missing, corrupt, or does not match the specs."""

    exit_code = 2


class SourceError(SmallModelError):
    """A model source could not be resolved or downloaded (network, HTTP, glob...)."""

    exit_code = 1


class VerificationError(SmallModelError):
    """A local model file is missing or does not match its pinned sha256 (a failed check)."""

    exit_code = 1


class EngineError(SmallModelError):
    """The engine could not load a model or run a request (bad GGUF, context too small...)."""

    exit_code = 1


class GoldenError(SmallModelError):
    """A golden file is corrupt, hand-edited into an invalid form, or of an unknown version."""

    exit_code = 1


class FileSystemError(SmallModelError):
    """A file or directory could not be read or written: a full disk, a read-only file system,
    missing permissions, a directory where a file belongs or a file where a directory belongs.

    The environment or the configuration must change, so it is exit 2 like a configuration error.
    """

    exit_code = 2


# errno name -> (what happened, what to do). Only errors a user can act on are listed; the rest
# fall back to the system's own wording.
_PERMISSIONS_FIX = "Check the owner and permissions of the file and its directory."
_CAUSES: dict[str, tuple[str, str]] = {
    "ENOSPC": ("no space left on the device (the disk is full)", "Free space there and retry."),
    "EDQUOT": ("the disk quota is exceeded", "Free space within your quota and retry."),
    "EFBIG": ("the file is too large for the file system", "Use another file system."),
    "EROFS": ("the file system is read-only", "Make it writable or use a writable location."),
    "EACCES": ("permission denied", _PERMISSIONS_FIX),
    "EPERM": ("operation not permitted", _PERMISSIONS_FIX),
    "EISDIR": ("it is a directory", "Remove or rename the directory, or fix the path."),
}


def os_error_cause(error: OSError) -> tuple[str, str]:
    """(cause, fix) for an OSError, in words a user acts on."""
    name = errno.errorcode.get(error.errno or -1, "")
    if name in _CAUSES:
        return _CAUSES[name]
    return (error.strerror or str(error) or type(error).__name__), "Fix the path and retry."


def file_error(action: str, path: Path, error: OSError, fix: str | None = None) -> FileSystemError:
    """``cannot ACTION PATH: CAUSE. FIX`` as one FileSystemError."""
    cause, default_fix = os_error_cause(error)
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(Path(path).parent)
        if blocker is not None:
            cause = f"{blocker} is a file where a directory is needed"
            default_fix = "Remove or rename that file, or configure another directory."
    return FileSystemError(f"cannot {action} {path}: {cause}. {fix or default_fix}")


def file_in_the_way(directory: Path) -> Path | None:
    """The nearest existing non-directory among ``directory`` and its parents: what keeps it
    from being created (mkdir fails with ENOTDIR or EEXIST)."""
    for candidate in (directory, *directory.parents):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None
