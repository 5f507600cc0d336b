"""Reviewing pending goldens: accept (replace the golden), reject (drop the pending result), skip.

Decisions are data: ``load_review`` reads the pending directory into ``ReviewItem``s (each knows
whether its golden changed since the pending result was written), ``decide`` applies one action
to one item and returns a ``ReviewEntry``, ``run_review`` drives a whole review from a chooser
(the CLI's keyboard prompt, or a fixed action with a pattern), and ``ReviewResult`` renders as
terminal lines or JSON. This module is pure: no pytest, no syrupy, no click.

Safety: accepting writes the golden atomically and only then removes the pending file; a pending
result whose golden changed since it was written (conflict) is never accepted; an unreadable
pending file, or one whose golden is not a valid golden, is reported and left alone; one that
names a golden outside the golden directory (links resolved) or is a link itself is refused.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.goldens.pending import CorruptPending, Pending, current_sha256, iter_pending

_SHORT = 12


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    SKIP = "skip"


class Key(StrEnum):
    """What an interactive reviewer can answer for one pending golden."""

    ACCEPT = "a"
    REJECT = "r"
    SKIP = "s"
    ACCEPT_ALL = "A"
    REJECT_ALL = "R"
    QUIT = "q"


KEY_HELP = "[a]ccept, [r]eject, [s]kip, [A]ccept all, [R]eject all, [q]uit"


class Status(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    CONFLICT = "conflict"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class ReviewItem:
    pending: Pending
    golden_path: Path  # absolute
    conflict: str | None  # why accepting is refused; None when the golden is as recorded

    @property
    def name(self) -> str:
        return self.pending.golden

    def describe(self) -> list[str]:
        """What a reviewer reads before deciding: the drift report of the failed assertion."""
        lines = [
            f"{self.name} ({self.pending.test}): {self.pending.outcome}",
            *[f"  {line}" for line in self.pending.report],
        ]
        if self.conflict:
            lines.append(f"  CONFLICT: {self.conflict}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "golden": self.name,
            "pending": str(self.pending.path),
            "test": self.pending.test,
            "outcome": self.pending.outcome,
            "headline": self.pending.headline,
            "replaces_sha256": self.pending.replaces_sha256,
            "status": "conflict" if self.conflict else "pending",
            "conflict": self.conflict,
        }


def _conflict(pending: Pending, golden_path: Path) -> str | None:
    now = current_sha256(golden_path)
    if now == pending.replaces_sha256:
        return None
    where = f"golden {pending.golden}"
    if pending.replaces_sha256 is None:
        change = "was created"
    elif now is None:
        change = "was deleted"
    else:
        change = (
            f"changed (sha256 {pending.replaces_sha256[:_SHORT]}… when the test ran, "
            f"{now[:_SHORT]}… now)"
        )
    return (
        f"{where} {change} since this pending result was written; accepting it would discard "
        f"that change. Run the test again for a fresh pending result, or reject this one"
    )


def load_review(
    pending_dir: Path, root: Path, golden_dir: Path
) -> tuple[list[ReviewItem], list[CorruptPending]]:
    """Every pending golden under ``pending_dir``; goldens are resolved against ``root``.

    A pending directory may come from CI, built by anyone's pull request: an entry whose golden
    is not a file inside ``golden_dir`` once links are resolved is refused, never written.
    """
    items: list[ReviewItem] = []
    corrupt: list[CorruptPending] = []
    for found in iter_pending(pending_dir):
        if isinstance(found, CorruptPending):
            corrupt.append(found)
            continue
        golden_path = (Path(root) / found.golden).resolve()
        refusal = _outside(found, golden_path, Path(golden_dir), Path(root))
        if refusal is not None:
            assert found.path is not None
            corrupt.append(CorruptPending(found.path, refusal, refused=True))
            continue
        items.append(ReviewItem(found, golden_path, _conflict(found, golden_path)))
    return items, corrupt


def _outside(pending: Pending, golden_path: Path, golden_dir: Path, root: Path) -> str | None:
    """Why accepting ``pending`` would write somewhere review must not, or None."""
    inside = golden_dir.resolve()
    shown = _shown(inside, root)
    if not golden_path.is_relative_to(inside):
        return (
            f"its field 'golden' is {pending.golden!r}, which resolves to {golden_path}, outside "
            f"the golden directory {shown}/; review writes only goldens inside it"
        )
    if golden_path.exists() and not golden_path.is_file():
        return (
            f"its field 'golden' is {pending.golden!r}, which is not a regular file "
            f"({golden_path}); review only replaces golden files"
        )
    return None


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def matches(item: ReviewItem, pattern: str | None) -> bool:
    """Shell-style ``pattern`` on the golden path (an exact path matches too, brackets and all)."""
    if pattern is None:
        return True
    return item.name == pattern or fnmatch.fnmatchcase(item.name, pattern)


@dataclass(frozen=True)
class ReviewEntry:
    golden: str
    test: str
    status: Status
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "golden": self.golden,
            "test": self.test,
            "status": self.status.value,
            "message": self.message,
        }


def decide(item: ReviewItem, action: Action) -> ReviewEntry:
    """Apply one action; the conflict check is repeated just before writing."""
    pending = item.pending
    if action is Action.SKIP:
        return ReviewEntry(item.name, pending.test, Status.SKIPPED, "left pending")
    if action is Action.REJECT:
        if pending.path is not None:
            pending.path.unlink(missing_ok=True)
        return ReviewEntry(
            item.name, pending.test, Status.REJECTED, "pending result removed; golden unchanged"
        )
    conflict = _conflict(pending, item.golden_path)
    if conflict:
        return ReviewEntry(item.name, pending.test, Status.CONFLICT, conflict)
    atomic_write_text(item.golden_path, pending.golden_text)
    if pending.path is not None:
        pending.path.unlink(missing_ok=True)
    return ReviewEntry(item.name, pending.test, Status.ACCEPTED, f"wrote {item.name}")


@dataclass
class ReviewResult:
    entries: list[ReviewEntry] = field(default_factory=list)
    corrupt: list[CorruptPending] = field(default_factory=list)
    # A --accept/--reject PATTERN that matched none of these pending goldens (a typo, likely).
    unmatched: str | None = None
    pending: tuple[str, ...] = ()

    def count(self, status: Status) -> int:
        return sum(1 for entry in self.entries if entry.status is status)

    @property
    def ok(self) -> bool:
        """False when something asked for could not be done (a conflict, a corrupt or refused
        file, a pattern that matched nothing while goldens are pending)."""
        return not self.corrupt and self.count(Status.CONFLICT) == 0 and self.unmatched is None

    def summary(self) -> str:
        parts = [
            f"{self.count(status)} {status.value}"
            for status in (Status.ACCEPTED, Status.REJECTED, Status.SKIPPED, Status.CONFLICT)
            if self.count(status)
        ]
        for state in ("corrupt", "refused"):
            count = sum(1 for bad in self.corrupt if bad.state == state)
            if count:
                parts.append(f"{count} {state}")
        if self.unmatched is not None:
            parts.append(f"{len(self.pending)} left pending")
        return ", ".join(parts) if parts else "nothing to review"

    def unmatched_message(self) -> str | None:
        if self.unmatched is None:
            return None
        return (
            f"no pending golden matches {self.unmatched!r}; pending: {', '.join(self.pending)} "
            "(give one of these paths, or a shell pattern such as 'golden/tests/test_x/*')"
        )

    def lines(self) -> list[str]:
        out = [f"{entry.status.value}: {entry.golden}: {entry.message}" for entry in self.entries]
        out += [f"{bad.state}: {bad.message}" for bad in self.corrupt]
        unmatched = self.unmatched_message()
        if unmatched is not None:
            out.append(f"error: {unmatched}")
        return [*out, self.summary()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": [entry.to_dict() for entry in self.entries],
            "corrupt": _problems(self.corrupt),
            "unmatched": self.unmatched_message(),
            "summary": self.summary(),
        }


def _problems(corrupt: Sequence[CorruptPending]) -> list[dict[str, str]]:
    return [
        {"pending": str(bad.path), "state": bad.state, "problem": bad.problem} for bad in corrupt
    ]


Chooser = Callable[[ReviewItem, int, int], Key]


def run_review(
    items: Sequence[ReviewItem],
    corrupt: Iterable[CorruptPending],
    choose: Chooser,
) -> ReviewResult:
    """Walk the items in order, asking ``choose(item, position, total)`` until one of *all/quit*."""
    result = ReviewResult(corrupt=list(corrupt))
    sticky: Action | None = None
    for position, item in enumerate(items, start=1):
        if sticky is not None:
            result.entries.append(decide(item, sticky))
            continue
        key = choose(item, position, len(items))
        if key is Key.QUIT:
            sticky = Action.SKIP
            action = Action.SKIP
        elif key is Key.ACCEPT_ALL:
            sticky = action = Action.ACCEPT
        elif key is Key.REJECT_ALL:
            sticky = action = Action.REJECT
        else:
            action = {Key.ACCEPT: Action.ACCEPT, Key.REJECT: Action.REJECT}.get(key, Action.SKIP)
        result.entries.append(decide(item, action))
    return result


def apply_to_matching(
    items: Sequence[ReviewItem],
    corrupt: Iterable[CorruptPending],
    action: Action,
    pattern: str | None,
) -> ReviewResult:
    """Non-interactive ``--accept [PATTERN]`` / ``--reject [PATTERN]``."""
    key = Key.ACCEPT if action is Action.ACCEPT else Key.REJECT
    chosen = [item for item in items if matches(item, pattern)]
    result = run_review(chosen, corrupt, lambda _item, _position, _total: key)
    if items and not chosen and pattern is not None:
        result.unmatched = pattern
        result.pending = tuple(item.name for item in items)
    return result


def listing_lines(items: Sequence[ReviewItem], corrupt: Sequence[CorruptPending]) -> list[str]:
    lines = []
    for item in items:
        state = "CONFLICT" if item.conflict else "pending"
        lines.append(f"{state}  {item.name}  {item.pending.test}: {item.pending.headline}")
    lines += [f"{bad.state}  {bad.message}" for bad in corrupt]
    total = len(items) + len(corrupt)
    lines.append(f"{total} pending golden{'s' if total != 1 else ''}")
    return lines


def listing_json(items: Sequence[ReviewItem], corrupt: Sequence[CorruptPending]) -> str:
    return json.dumps(
        {
            "pending": [item.to_dict() for item in items],
            "corrupt": _problems(corrupt),
        },
        indent=2,
        ensure_ascii=False,
    )


__all__ = [
    "KEY_HELP",
    "Action",
    "Key",
    "ReviewEntry",
    "ReviewItem",
    "ReviewResult",
    "Status",
    "apply_to_matching",
    "decide",
    "listing_json",
    "listing_lines",
    "load_review",
    "matches",
    "run_review",
]
