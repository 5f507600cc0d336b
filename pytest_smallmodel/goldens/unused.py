"""Which goldens are unused, and which of those may be deleted: the rules that never lose one.

A golden is *unused* only when the test that owns it ran to completion and passed without
asserting it. Nothing else counts: a test that failed, errored, was skipped or xfailed, was
deselected (``-k``, ``-m``), was not collected (path arguments) or never ran because the session
stopped early (``-x``, ``--maxfail``, Ctrl-C, a crash) owns goldens that are kept, because they
may be the only record of the behaviour before the change being tested.

Goldens that no collected test owns (their test was renamed or removed) are *orphans*. A test
that exists but was not collected looks the same from inside one session, so orphans are deleted
only after a *complete* run: the whole suite collected (no test ids, nothing deselected), every
test that uses goldens ran and passed, and nothing stopped the session early. After any partial
run they are reported with their path and kept.

Under pytest-xdist each worker keeps its own ledger (tests it collected, outcomes of the tests it
ran, goldens they asserted) and ships it to the controller, which merges them and decides. A
worker that crashes ships nothing, so nothing it ran can be judged unused.

This module is pure: no pytest, no syrupy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_smallmodel.goldens.records import GOLDEN_SUFFIX


def owns_golden(own_stem: str, file_stem: str) -> bool:
    """Whether a test whose first golden is ``own_stem`` owns the golden file ``file_stem``.

    A test's goldens are ``<own>``, ``<own>.<n>`` (further assertions) and ``<own>[<name>]``
    (named assertions); see ``golden.snapshot_stem``.
    """
    if file_stem == own_stem:
        return True
    if file_stem.startswith(f"{own_stem}."):
        return file_stem[len(own_stem) + 1 :].isdigit()
    return file_stem.startswith(f"{own_stem}[") and file_stem.endswith("]")


@dataclass(frozen=True)
class UnusedGolden:
    path: Path
    test: str  # the test that passed without asserting it


@dataclass(frozen=True)
class UnusedReport:
    """The decision for one session; ``deleted`` and ``deleted_orphans`` are filled only when
    deleting was asked for; ``complete`` says whether this run proves which goldens are orphans
    (``GoldenLedger.complete``) and so may delete them."""

    unused: tuple[UnusedGolden, ...]
    orphans: tuple[Path, ...]
    deleted: tuple[UnusedGolden, ...] = ()
    complete: bool = False
    deleted_orphans: tuple[Path, ...] = ()


@dataclass
class GoldenLedger:
    """What one session knows about tests that use goldens (merged across xdist workers)."""

    # nodeid -> (absolute golden directory, file stem of the test's first golden)
    tests: dict[str, tuple[str, str]] = field(default_factory=dict)
    # nodeid -> {"setup": "passed", "call": "failed", ...} for the tests that ran here
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    # absolute paths of every golden asserted, whatever the assertion's result
    used: set[str] = field(default_factory=set)
    # True when some tests were deselected or collection was restricted to test ids: then a
    # golden that no collected test owns may belong to a test that exists.
    partial_collection: bool = False

    def add_test(self, nodeid: str, directory: Path, stem: str) -> None:
        self.tests[nodeid] = (str(directory), stem)

    def add_outcome(self, nodeid: str, when: str, outcome: str) -> None:
        if nodeid in self.tests:
            self.outcomes.setdefault(nodeid, {})[when] = outcome

    def add_used(self, paths: Iterable[str]) -> None:
        self.used.update(str(Path(p).resolve()) for p in paths)

    def complete(self, *, session_ok: bool) -> bool:
        """Whether this run proves that no test owns its orphans: the whole suite was collected
        and every test that uses goldens ran to completion and passed (``session_ok``: no
        failure, error or interruption elsewhere either)."""
        return (
            session_ok
            and not self.partial_collection
            and all(self.passed(nodeid) for nodeid in self.tests)
        )

    def passed(self, nodeid: str) -> bool:
        """Ran to completion: setup, call and teardown all passed (xfail and skip do not)."""
        phases = self.outcomes.get(nodeid, {})
        return phases.get("call") == "passed" and all(v == "passed" for v in phases.values())

    # -- xdist ----------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "tests": self.tests,
                "outcomes": self.outcomes,
                "used": sorted(self.used),
                "partial_collection": self.partial_collection,
            }
        )

    def merge_json(self, payload: str) -> None:
        data = json.loads(payload)
        self.tests.update({k: (v[0], v[1]) for k, v in data["tests"].items()})
        for nodeid, phases in data["outcomes"].items():
            self.outcomes.setdefault(nodeid, {}).update(phases)
        self.used.update(data["used"])
        self.partial_collection |= bool(data["partial_collection"])

    # -- the decision ---------------------------------------------------------------------------

    def report(self, *, complete: bool = False) -> UnusedReport:
        by_directory: dict[str, list[tuple[str, str]]] = {}
        for nodeid, (directory, stem) in self.tests.items():
            by_directory.setdefault(directory, []).append((nodeid, stem))
        unused: list[UnusedGolden] = []
        orphans: list[Path] = []
        for directory, owners in sorted(by_directory.items()):
            for path in _golden_files(Path(directory)):
                claimants = [nodeid for nodeid, stem in owners if owns_golden(stem, path.stem)]
                if not claimants:
                    if not self.partial_collection:
                        orphans.append(path)
                    continue
                if str(path.resolve()) in self.used:
                    continue
                # Every claimant must have passed: a name shared by a test that did not pass
                # (only possible with odd parametrize ids) keeps the golden.
                if all(self.passed(nodeid) for nodeid in claimants):
                    unused.append(UnusedGolden(path, claimants[0]))
        return UnusedReport(tuple(unused), tuple(orphans), complete=complete)

    def delete_unused(self, *, complete: bool = False) -> UnusedReport:
        """Delete the unused goldens (``--snapshot-update``), and the orphans too when the run
        was ``complete``; report each one."""
        report = self.report(complete=complete)
        deleted = []
        for golden in report.unused:
            golden.path.unlink(missing_ok=True)
            deleted.append(golden)
        removed_orphans = []
        if complete:
            for path in report.orphans:
                path.unlink(missing_ok=True)
                removed_orphans.append(path)
        return replace(report, deleted=tuple(deleted), deleted_orphans=tuple(removed_orphans))


def _golden_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix == GOLDEN_SUFFIX and not path.name.startswith(".") and path.is_file()
    )


def summary_lines(report: UnusedReport, *, root: Path, updating: bool) -> list[str]:
    """Terminal lines: every deletion and every unused or orphaned golden, by path."""

    def shown(path: Path) -> str:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)

    lines: list[str] = []
    for golden in report.deleted:
        lines.append(
            f"deleted unused golden {shown(golden.path)} ({golden.test} passed without "
            "asserting it)"
        )
    if not updating:
        for golden in report.unused:
            lines.append(
                f"unused golden {shown(golden.path)}: {golden.test} passed without asserting it; "
                "`pytest --snapshot-update` deletes it"
            )
    for path in report.deleted_orphans:
        lines.append(f"deleted orphaned golden {shown(path)} (no test of the complete run owns it)")
    if not report.deleted_orphans:
        for path in report.orphans:
            how = (
                "`pytest --snapshot-update` deletes it"
                if report.complete
                else "kept: this run was partial; a complete `pytest --snapshot-update` deletes it"
            )
            lines.append(
                f"orphaned golden {shown(path)}: no collected test owns it ({how}, or "
                "`smallmodel review --orphans`)"
            )
    return lines


def failing_goldens(report: UnusedReport) -> dict[str, int]:
    """What makes a run without ``--snapshot-update`` fail although its tests passed, as the
    words and counts of pytest's summary line ("5 passed, 1 orphaned golden")."""
    counts = {"unused golden": len(report.unused), "orphaned golden": len(report.orphans)}
    return {
        f"{words}{'s' if count != 1 else ''}": count for words, count in counts.items() if count
    }


__all__ = [
    "GoldenLedger",
    "UnusedGolden",
    "UnusedReport",
    "failing_goldens",
    "owns_golden",
    "summary_lines",
]
