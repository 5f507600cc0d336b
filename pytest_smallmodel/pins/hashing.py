"""SHA-256 of model files, streamed, plus a stat cache so that re-verifying costs no hashing.

Hashing reads into one reused buffer in large blocks: hashlib releases the GIL for big updates,
so throughput is close to ``sha256sum`` and memory stays flat whatever the model size.

The stat cache maps a file's identity (resolved path, size, mtime_ns, ctime_ns, inode, device) to
its sha256. Writing to a file updates its ctime, and unlike the mtime a user cannot set the ctime
back (``touch -d`` and ``os.utime`` update it too), so a same-size rewrite with the old mtime
restored still misses the cache. The remaining limit: whoever can change the system clock (root)
or write to the block device below the file system can make a changed file look unchanged;
``smallmodel verify --full`` re-hashes every file regardless.
Concurrent writers (pytest-xdist workers, parallel CLI runs) serialise through a file lock and
merge into the current file before an atomic rewrite, so no entry is ever lost; a corrupt cache
file is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import FileSystemError, VerificationError, file_error
from pytest_smallmodel.pins.gguf_info import read_facts

if TYPE_CHECKING:
    from pytest_smallmodel.pins.gguf_info import GGUFFacts
    from pytest_smallmodel.pins.lockfile import LockedModel
    from pytest_smallmodel.pins.project import Project

BLOCK_SIZE = 4 << 20
# Below this, a progress bar would only flicker.
PROGRESS_MIN_BYTES = 64 << 20
STAT_CACHE_NAME = "stat-cache.json"
# 2: entries also record ctime_ns; version-1 entries are ignored (re-hashed once).
STAT_CACHE_VERSION = 2
LOCK_TIMEOUT_S = 120.0

VerificationStatus = Literal["verified", "missing", "mismatch"]


def sha256_stream(
    handle: BinaryIO, *, total: int | None = None, progress: bool = False, label: str = ""
) -> str:
    """Hash an open binary file from its current position to EOF."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    bar = progress_bar(total, label) if progress else None
    try:
        while True:
            count = handle.readinto(view)  # type: ignore[attr-defined]
            if not count:
                break
            digest.update(view[:count])
            if bar is not None:
                bar.update(count)
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest()


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """Hash a file in large blocks; a progress bar only for big files on a terminal."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        show = progress and size >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
        return sha256_stream(handle, total=size, progress=show, label=f"hashing {Path(path).name}")


def progress_bar(total: int | None, label: str) -> Any:
    from tqdm import tqdm  # deferred: only a terminal run with a big file draws a bar

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        leave=False,
        file=sys.stderr,
    )


@dataclass(frozen=True)
class FileIdentity:
    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        resolved = os.path.realpath(path)
        info = os.stat(resolved)
        return cls(
            resolved, info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_ctime_ns
        )

    def matches(self, entry: object) -> bool:
        return (
            isinstance(entry, dict)
            and entry.get("size") == self.size
            and entry.get("mtime_ns") == self.mtime_ns
            and entry.get("inode") == self.inode
            and entry.get("device") == self.device
            and entry.get("ctime_ns") == self.ctime_ns
        )


class StatCache:
    """(path, size, mtime_ns, ctime_ns, inode, device) -> sha256, persisted in ``cache_dir``."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / STAT_CACHE_NAME
        self._lock_path = Path(cache_dir) / f"{STAT_CACHE_NAME}.lock"

    def _read_entries(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or corrupt: start over, the next write rebuilds it
        if not isinstance(document, dict) or document.get("version") != STAT_CACHE_VERSION:
            return {}
        entries = document.get("entries")
        return entries if isinstance(entries, dict) else {}

    def lookup(self, identity: FileIdentity) -> str | None:
        entry = self._read_entries().get(identity.path)
        if identity.matches(entry):
            digest = entry.get("sha256")  # type: ignore[union-attr]
            if isinstance(digest, str):
                return digest
        return None

    def store(self, identity: FileIdentity, sha256: str) -> None:
        """Record a hash; failures to write the cache never fail a verification."""
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(self._lock_path, timeout=LOCK_TIMEOUT_S):
                entries = self._read_entries()
                entries[identity.path] = {
                    "size": identity.size,
                    "mtime_ns": identity.mtime_ns,
                    "inode": identity.inode,
                    "device": identity.device,
                    "ctime_ns": identity.ctime_ns,
                    "sha256": sha256,
                }
                document = {"version": STAT_CACHE_VERSION, "entries": dict(sorted(entries.items()))}
                atomic_write_text(self.path, json.dumps(document, indent=1) + "\n")
        except (OSError, FileSystemError, Timeout):
            # A read-only or contended cache only costs a re-hash next time.
            return


def hash_with_cache(
    path: Path, cache: StatCache, *, full: bool = False, progress: bool = False
) -> str:
    """The file's sha256, from the stat cache unless ``full`` or the file changed."""
    identity = FileIdentity.of(path)
    if not full:
        cached = cache.lookup(identity)
        if cached is not None:
            # The stat cache knows the bytes, not whether this user may still read them: a
            # file made unreadable since would pass here and fail when loaded.
            os.close(os.open(identity.path, os.O_RDONLY))
            return cached
    digest = sha256_file(Path(identity.path), progress=progress)
    # Only cache if the file did not change while we were reading it.
    if FileIdentity.of(path) == identity:
        cache.store(identity, digest)
    return digest


@dataclass(frozen=True)
class Verification:
    name: str
    path: Path | None
    status: VerificationStatus
    expected: str
    actual: str | None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    @property
    def message(self) -> str:
        if self.status == "verified":
            return f"{self.name}: verified {self.path} (sha256 {self.expected})"
        if self.status == "missing":
            where = f" (expected at {self.path})" if self.path is not None else ""
            fix = self.fix or f"Run `smallmodel pull {self.name}` to download and verify it."
            return f"{self.name}: model file is missing{where}. {fix}"
        fix = self.fix or (
            f"The file is corrupt, truncated or was replaced: delete it and run "
            f"`smallmodel pull {self.name}`; if the new file is intended, run "
            f"`smallmodel lock --upgrade {self.name}` and commit models.lock."
        )
        return (
            f"{self.name}: {self.path} does not match models.lock\n"
            f"  expected sha256: {self.expected}\n"
            f"  actual sha256:   {self.actual}\n"
            f"  {fix}"
        )

    def raise_for_status(self) -> None:
        """Raise VerificationError with the full message unless the file is verified."""
        if not self.ok:
            raise VerificationError(self.message)


class ModelUnavailable(VerificationError):
    """The pinned file is missing or does not match the lock; ``verification`` says which."""

    def __init__(self, verification: Verification) -> None:
        super().__init__(verification.message)
        self.verification = verification

    @property
    def missing(self) -> bool:
        return self.verification.status == "missing"


def verify_file(
    name: str,
    path: Path | None,
    expected: str,
    cache_dir: Path,
    *,
    full: bool = False,
    progress: bool = False,
    missing_fix: str | None = None,
    mismatch_fix: str | None = None,
) -> Verification:
    """Compare a local file with its pinned sha256 (no network).

    A file that exists but cannot be read, or a directory at its path, is not "missing": that
    raises a FileSystemError saying so, since pulling again would not help.
    """
    if path is not None and os.path.isdir(path):
        raise FileSystemError(
            f"{name}: {path} is a directory, not a model file. Put the model file there or fix "
            "the model's spec in [tool.smallmodel.models]."
        )
    if path is None or not os.path.isfile(path):
        return Verification(name, path, "missing", expected, None, missing_fix)
    try:
        actual = hash_with_cache(path, StatCache(cache_dir), full=full, progress=progress)
    except FileNotFoundError:
        return Verification(name, path, "missing", expected, None, missing_fix)
    except OSError as error:
        raise file_error(f"read model {name!r} at", path, error) from None
    if actual == expected:
        return Verification(name, path, "verified", expected, actual)
    return Verification(name, path, "mismatch", expected, actual, mismatch_fix)


# -- what every kind of source shares (pins/sources/base.Source) ---------------------------------


class PinnedSource(Protocol):
    """What verifying a pin asks of its kind of source (``pins.sources.base.Source``)."""

    def local_path(self, project: Project, locked: LockedModel) -> Path | None: ...

    def expected_path(self, project: Project, locked: LockedModel) -> Path | None: ...

    def missing_fix(self, locked: LockedModel) -> str | None: ...

    def mismatch_fix(self, locked: LockedModel) -> str | None: ...


def verify_pin(
    source: PinnedSource,
    project: Project,
    locked: LockedModel,
    *,
    full: bool = False,
    progress: bool = False,
) -> Verification:
    """Check the local file of a pin against it, using the stat cache unless ``full``."""
    path = source.local_path(project, locked) or source.expected_path(project, locked)
    return verify_file(
        locked.name,
        path,
        locked.sha256,
        project.cache_dir,
        full=full,
        progress=progress,
        missing_fix=source.missing_fix(locked),
        mismatch_fix=source.mismatch_fix(locked),
    )


def hash_local(project: Project, path: Path, progress: bool) -> tuple[str, int, GGUFFacts]:
    """sha256 (stat cache), size and GGUF facts of a file on this machine."""
    facts = read_facts(path)
    sha256 = hash_with_cache(path, StatCache(project.cache_dir), progress=progress)
    return sha256, path.stat().st_size, facts


def downloaded_mismatch(result: Verification) -> Verification:
    """A fresh download that does not match its pin (it was deleted): the source changed."""
    fix = (
        "The downloaded file did not match the pin and was deleted. The source now serves "
        f"different bytes: if that is intended, run `smallmodel lock --upgrade {result.name}` "
        "and commit models.lock; otherwise retry later or check the source."
    )
    return Verification(result.name, result.path, "mismatch", result.expected, result.actual, fix)
