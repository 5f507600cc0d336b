"""Orphaned goldens outside a test run: the record a collection writes, and deleting one by one.

``smallmodel review --orphans`` collects the suite afresh (``pytest --collect-only
--smallmodel-orphans-json=FILE``), so the list it offers is proved by the tests as they are now,
not by an earlier run. The record names each orphan with its sha256: a golden edited or
replaced since the collection is not deleted, and a path outside the golden directory (a link,
``..``) is refused, never followed. This module is pure: no pytest, no click.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import ConfigError

ORPHANS_FORMAT = 1


@dataclass(frozen=True)
class Orphan:
    """A golden that no collected test owns."""

    path: Path
    name: str  # relative to the project root, as shown
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"golden": self.name, "sha256": self.sha256}


@dataclass(frozen=True)
class OrphanScan:
    """What one collection found: ``partial`` when it could not see the whole suite."""

    orphans: tuple[Orphan, ...]
    partial: bool


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def write_record(target: Path, orphans: Sequence[Path], *, root: Path, partial: bool) -> None:
    """The collection's findings, for ``smallmodel review --orphans``."""
    record = {
        "orphans_format": ORPHANS_FORMAT,
        "partial": partial,
        "orphans": [
            {"golden": _shown(path, root), "sha256": _sha256(path)}
            for path in orphans
            if path.is_file()
        ],
    }
    atomic_write_text(target, json.dumps(record, indent=2) + "\n")


def read_record(source: Path, *, root: Path, golden_dir: Path) -> OrphanScan:
    """The record ``write_record`` wrote; every path must lie inside ``golden_dir``."""
    try:
        data: Any = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{source}: the orphan record of the collection is unreadable ({error})"
        ) from None
    if not isinstance(data, dict) or data.get("orphans_format") != ORPHANS_FORMAT:
        raise ConfigError(f"{source}: not an orphan record of this pytest-smallmodel version")
    inside = golden_dir.resolve()
    orphans = []
    for entry in data.get("orphans", []):
        path = (root / str(entry["golden"])).resolve()
        if not path.is_relative_to(inside):
            raise ConfigError(
                f"{source}: orphan {entry['golden']!r} lies outside the golden directory "
                f"{golden_dir}: refused"
            )
        orphans.append(Orphan(path, str(entry["golden"]), str(entry["sha256"])))
    return OrphanScan(tuple(orphans), bool(data.get("partial")))


def delete(orphan: Orphan) -> tuple[bool, str]:
    """Delete one orphan if it is still the file the collection saw: ``(deleted, message)``."""
    try:
        current = _sha256(orphan.path)
    except FileNotFoundError:
        return False, f"{orphan.name}: already gone"
    if current != orphan.sha256:
        return False, f"{orphan.name}: changed since the collection; kept (review it again)"
    orphan.path.unlink()
    return True, f"deleted {orphan.name}"


__all__ = ["Orphan", "OrphanScan", "delete", "read_record", "write_record"]
