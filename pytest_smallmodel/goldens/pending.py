"""Pending goldens: a failed golden assertion's new result, kept beside the accepted golden.

A failed comparison never touches the accepted golden. Instead the result the test produced is
written to ``<pending_dir>/<path of the golden below golden_dir>``, together with the golden it
would replace (path and sha256 of its bytes, ``null`` when there was none) and the drift report
that explained the failure. ``smallmodel review`` (``review.py``) accepts or rejects them.

The pending file is JSON:

    {
      "pending_format": 1,
      "golden": "golden/tests/test_x/test_y.json",     # relative to the project root
      "replaces_sha256": "9f2c...",                      # null: no golden existed
      "test": "tests/test_x.py::test_y",
      "outcome": "drift",
      "headline": "output differs from the golden from step 3 ...",
      "report": ["...the drift report, one line per entry..."],
      "golden_text": ["...the new golden file, split on \\n..."]
    }

``golden_text`` joined with ``\\n`` is the exact text ``pytest --snapshot-update`` would have
written. This module is pure: no pytest, no syrupy, no click.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import GoldenError
from pytest_smallmodel.goldens.file_format import parse_golden
from pytest_smallmodel.goldens.records import GOLDEN_SUFFIX

PENDING_FORMAT = 1
PENDING_SUFFIX = GOLDEN_SUFFIX  # a pending result is a golden file beside its report


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def current_sha256(path: Path) -> str | None:
    """sha256 of the file's bytes now; ``None`` when there is no file."""
    try:
        return sha256_bytes(Path(path).read_bytes())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Pending:
    """One pending golden, as read from (or about to be written to) its file."""

    golden: str  # POSIX path relative to the project root
    replaces_sha256: str | None
    test: str
    outcome: str
    headline: str
    report: tuple[str, ...]
    golden_text: str
    path: Path | None = None  # the pending file, once on disk

    def to_json(self) -> str:
        document = {
            "pending_format": PENDING_FORMAT,
            "golden": self.golden,
            "replaces_sha256": self.replaces_sha256,
            "test": self.test,
            "outcome": self.outcome,
            "headline": self.headline,
            "report": list(self.report),
            "golden_text": self.golden_text.split("\n"),
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


@dataclass(frozen=True)
class CorruptPending:
    """A file under the pending directory that cannot be used; it is reported, never removed.

    ``refused``: it is readable but asks for something review never does (write outside the
    golden directory); a pending directory from CI is untrusted input.
    """

    path: Path
    problem: str
    refused: bool = False

    @property
    def state(self) -> str:
        return "refused" if self.refused else "corrupt"

    @property
    def message(self) -> str:
        if self.refused:
            return (
                f"pending golden {self.path} was refused: {self.problem}; nothing was written "
                "(delete it; if the golden belongs elsewhere, run the test again)"
            )
        return (
            f"pending golden {self.path} cannot be used: {self.problem}; it was left in place "
            "(delete it, or run the failing test again to rewrite it)"
        )


def safe_relative(raw: str) -> PurePosixPath | None:
    """``raw`` as a relative path that stays inside its base directory, else ``None``."""
    if not raw or "\\" in raw or "\0" in raw:
        return None
    path = PurePosixPath(raw)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts):
        return None
    return path


class RefusedPath(ValueError):
    """A pending file names a golden that review must never write."""


def parse_pending(text: str, *, path: Path) -> Pending:
    """Read a pending file; any problem raises ValueError naming the field and what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError("the top level must be a JSON object")
    version = data.get("pending_format")
    if version != PENDING_FORMAT:
        raise ValueError(
            f"'pending_format' is {version!r}; this pytest-smallmodel reads version "
            f"{PENDING_FORMAT}"
        )

    def string(key: str, *, nullable: bool = False) -> Any:
        value = data.get(key)
        if value is None and nullable and key in data:
            return None
        if not isinstance(value, str):
            raise ValueError(f"field {key!r} must be a string")
        return value

    def lines(key: str) -> list[str]:
        value = data.get(key)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError(f"field {key!r} must be a list of strings (lines)")
        return value

    golden = string("golden")
    relative = safe_relative(golden)
    if relative is None or relative.suffix != ".json":
        raise RefusedPath(
            f"field 'golden' is {golden!r}: expected a relative path (no '..') to a .json "
            "golden inside the golden directory"
        )
    replaces = string("replaces_sha256", nullable=True)
    if replaces is not None and (
        len(replaces) != 64 or any(c not in "0123456789abcdef" for c in replaces)
    ):
        raise ValueError("field 'replaces_sha256' must be a sha256 hex digest or null")
    golden_text = "\n".join(lines("golden_text"))
    try:
        # The whole golden, as pytest would read it: a golden it refuses must not be accepted.
        parse_golden(golden_text, path=relative.as_posix())
    except GoldenError as error:
        raise ValueError(f"field 'golden_text' is not a golden pytest can use: {error}") from None
    return Pending(
        golden=relative.as_posix(),
        replaces_sha256=replaces,
        test=string("test"),
        outcome=string("outcome"),
        headline=string("headline"),
        report=tuple(lines("report")),
        golden_text=golden_text,
        path=path,
    )


class PendingStore:
    """Where a session writes pending goldens: ``pending_dir`` mirrors ``golden_dir``."""

    def __init__(self, pending_dir: Path, *, golden_dir: Path, root: Path) -> None:
        self.pending_dir = Path(pending_dir).resolve()
        self.golden_dir = Path(golden_dir).resolve()
        self.root = Path(root).resolve()
        self.written: set[Path] = set()

    def path_for(self, golden: Path) -> Path | None:
        """The pending file of ``golden``; ``None`` for a golden outside ``golden_dir``."""
        try:
            relative = Path(golden).resolve().relative_to(self.golden_dir)
        except ValueError:
            return None
        return self.pending_dir / relative

    def golden_name(self, golden: Path) -> str:
        resolved = Path(golden).resolve()
        try:
            return resolved.relative_to(self.root).as_posix()
        except ValueError:
            return resolved.as_posix()

    def write(
        self,
        golden: Path,
        golden_text: str,
        *,
        test: str,
        outcome: str,
        headline: str,
        report: Sequence[str],
    ) -> Path | None:
        """Record ``golden_text`` as the pending replacement of ``golden`` (atomically)."""
        target = self.path_for(golden)
        if target is None:
            return None
        pending = Pending(
            golden=self.golden_name(golden),
            replaces_sha256=current_sha256(golden),
            test=test,
            outcome=outcome,
            headline=headline,
            report=tuple(report),
            golden_text=golden_text,
        )
        atomic_write_text(target, pending.to_json())
        self.written.add(target)
        return target

    def discard(self, golden: Path) -> None:
        """Forget the pending replacement of a golden that now passes or was rewritten."""
        target = self.path_for(golden)
        if target is not None:
            target.unlink(missing_ok=True)
            self.written.discard(target)


def iter_pending(pending_dir: Path) -> Iterator[Pending | CorruptPending]:
    """Every pending file under ``pending_dir`` in path order; unusable ones as CorruptPending.

    A link is refused, not followed: reading through it could show a file from elsewhere, and
    rejecting or accepting the entry deletes the file it names.
    """
    root = Path(pending_dir)
    if not root.is_dir():
        return
    inside = root.resolve()
    for path in sorted(root.rglob(f"*{PENDING_SUFFIX}")):
        if path.name.startswith("."):
            continue  # atomic.py's temporary files of an interrupted write
        if path.is_symlink() or not path.resolve().is_relative_to(inside):
            yield CorruptPending(
                path,
                f"it is a link (to {path.resolve()}); a pending golden must be a regular file "
                f"inside {root}",
                refused=True,
            )
            continue
        if not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            yield CorruptPending(path, "it is not UTF-8 text")
            continue
        except OSError as error:
            yield CorruptPending(path, f"it cannot be read ({error.strerror})")
            continue
        try:
            yield parse_pending(text, path=path)
        except RefusedPath as error:
            yield CorruptPending(path, str(error), refused=True)
        except ValueError as error:
            yield CorruptPending(path, str(error))


__all__ = [
    "PENDING_FORMAT",
    "CorruptPending",
    "Pending",
    "PendingStore",
    "RefusedPath",
    "current_sha256",
    "iter_pending",
    "parse_pending",
    "safe_relative",
    "sha256_bytes",
]
