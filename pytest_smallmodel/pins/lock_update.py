"""Updating and checking models.lock: which pins are kept, which are re-resolved, what is written.

``smallmodel lock`` and ``smallmodel lock --check`` render what these functions return; the
decisions live here so that any other front end (a review tool, an upgrade report) makes the
same ones. A lock is one consistent set of pins: nothing is written until every model resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pytest_smallmodel.common.atomic import check_writable
from pytest_smallmodel.common.errors import LockError, SourceError
from pytest_smallmodel.pins.lockfile import (
    LOCK_VERSION,
    Lock,
    LockedModel,
    NewerLockError,
    read_lock,
    write_lock,
)
from pytest_smallmodel.pins.project import Project
from pytest_smallmodel.pins.sources import pin_staleness, resolve_model


@dataclass(frozen=True)
class IgnoredLock:
    """The existing models.lock could not be read: every pin is resolved anew."""

    error: str


@dataclass(frozen=True)
class Resolved:
    """One model resolved by this update; ``previous`` is the pin it replaces, if any."""

    name: str
    pin: LockedModel
    previous: LockedModel | None

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.sha256 != self.pin.sha256


LockEvent = IgnoredLock | Resolved


@dataclass(frozen=True)
class LockUpdate:
    lock_path: Path
    # What was written, or with failures what would have been (failed models keep their pin).
    pins: Mapping[str, LockedModel]
    events: tuple[LockEvent, ...]
    # One message per model whose source could not be resolved (SourceError).
    failures: tuple[str, ...]

    @property
    def written(self) -> bool:
        return not self.failures


def update_lock(
    project: Project,
    targets: Sequence[str],
    *,
    upgrade: bool = False,
    progress: bool = False,
    on_event: Callable[[LockEvent], None] | None = None,
) -> LockUpdate:
    """Re-resolve the ``targets`` whose pin is missing or stale (all of them with ``upgrade``),
    keep every other pin, and write models.lock when every model resolved.

    ``on_event`` sees each event as it happens (resolving can take minutes). Raises
    NewerLockError rather than downgrade a lock of a newer format, and a FileSystemError before
    any download when models.lock cannot be written.
    """
    events: list[LockEvent] = []

    def record(event: LockEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    check_writable(project.lock_path)
    existing = Lock(LOCK_VERSION)
    if project.lock_path.exists():
        try:
            existing = read_lock(project.lock_path)
        except NewerLockError:
            raise  # re-resolving would downgrade the file and drop what the newer one records
        except LockError as exc:
            record(IgnoredLock(str(exc)))

    pins: dict[str, LockedModel] = {}
    failures: list[str] = []
    for name, spec in sorted(project.models.items()):
        kept = existing.models.get(name)
        fresh = kept is not None and pin_staleness(project, spec, kept) is None
        if name not in targets or (fresh and not upgrade):
            if kept is not None:
                pins[name] = kept
            continue
        try:
            pin = resolve_model(project, spec, progress=progress)
        except SourceError as exc:
            failures.append(str(exc))
            if kept is not None:
                pins[name] = kept
            continue
        pins[name] = pin
        record(Resolved(name, pin, kept))

    if not failures:
        # url downloads and hashes are cached, so after a failure the next run redoes little.
        write_lock(project.lock_path, Lock(LOCK_VERSION, MappingProxyType(pins)))
    return LockUpdate(project.lock_path, MappingProxyType(pins), tuple(events), tuple(failures))


@dataclass(frozen=True)
class LockCheck:
    """What ``smallmodel lock --check`` found; ``ok`` when models.lock matches the specs."""

    lock_path: Path
    checked: int
    missing: bool = False
    # The lock exists but cannot be read (LockError message).
    unreadable: str | None = None
    # "NAME: why" for each model whose pin does not match its declaration.
    stale: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing and self.unreadable is None and not self.stale


def check_lock(project: Project, targets: Sequence[str], *, check_removed: bool) -> LockCheck:
    """Compare models.lock with the specs of ``targets`` (and, with ``check_removed``, report
    pins whose model is no longer declared); writes nothing."""
    if not project.lock_path.exists():
        return LockCheck(project.lock_path, len(targets), missing=True)
    try:
        current = read_lock(project.lock_path)
    except LockError as exc:
        return LockCheck(project.lock_path, len(targets), unreadable=str(exc))
    reasons = stale_reasons(project, current, targets)
    if check_removed:
        undeclared = sorted(set(current.models) - set(project.models))
        reasons += stale_reasons(project, current, undeclared)
    return LockCheck(project.lock_path, len(targets), stale=tuple(reasons))


def stale_reasons(project: Project, lock: Lock, names: Sequence[str]) -> list[str]:
    """ "NAME: why" for each of ``names`` whose pin does not match its declaration."""
    reasons = []
    for name in names:
        reason = pin_staleness(project, project.models.get(name), lock.models.get(name))
        if reason is not None:
            reasons.append(f"{name}: {reason}")
    return reasons
