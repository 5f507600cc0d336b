"""Goldens on disk: a syrupy extension with one reviewable JSON file per snapshot.

Layout: ``<golden_dir>/<test file's directory relative to rootdir>/<test file stem>/<name>.json``,
where ``<name>`` is syrupy's snapshot name (``TestClass.test_x[param].1``) made safe for any
filesystem. The comparison itself lives in ``drift.py``; this module only reads, writes, names
files and hands syrupy the verdicts.

How syrupy 7 reports a failed ``assert value == snapshot``: ``SnapshotAssertion._assert`` calls
``serialize`` then ``matches`` (only the serialized strings); on failure its
``pytest_assertrepr_compare`` hook prints ``get_assert_diff()``, which calls ``diff_lines``. Pytest
truncates such explanations to 8 lines unless ``-vv`` or CI, so ``GoldenAssertion`` raises the
full explanation as the assertion error instead.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from syrupy.assertion import SnapshotAssertion
from syrupy.data import SnapshotCollections
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import FileSystemError, GoldenError, SmallModelError
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.drift.rules import DriftPolicy, compare, corrupt_verdict, missing_verdict
from pytest_smallmodel.drift.verdict import Verdict
from pytest_smallmodel.goldens.file_format import (
    FORMAT_VERSION,
    NewerGoldenError,
    parse_golden,
    serialize_record,
)
from pytest_smallmodel.goldens.kinds import record_of
from pytest_smallmodel.goldens.pending import PendingStore
from pytest_smallmodel.goldens.unused import owns_golden

if TYPE_CHECKING:
    from syrupy.assertion import AssertionResult
    from syrupy.data import SnapshotCollection
    from syrupy.location import PyTestLocation
    from syrupy.types import PropertyFilter, PropertyMatcher, SerializableData, SnapshotIndex

FILE_EXTENSION = "json"

# Filenames are limited to 255 bytes; leave room for ".json" and atomic.py's ".<name>.XXXXXXXX.tmp".
_MAX_TEST_NAME_BYTES = 160
_MAX_CUSTOM_INDEX_BYTES = 48
_HASH_LENGTH = 8
# Characters kept verbatim in file names (besides letters and digits of any script).
_SAFE_PUNCTUATION = frozenset("-_.,=+[]()@#%&!'{}~ ")


# -- safe names ----------------------------------------------------------------------------------


class VerdictHook(Protocol):
    """Rewrites a verdict before it is reported (``engine/variants.Triager``); an object, not a
    function, so that as a class attribute it is never bound as a method."""

    def __call__(self, verdict: Verdict) -> Verdict: ...


def safe_name_part(name: str, max_bytes: int) -> str:
    """``name`` as a filename fragment; altered or shortened names get a hash of the original.

    The hash keeps distinct ids distinct after replacing characters (``a/b`` vs ``a_b``) or
    truncating long ids that share a prefix.
    """
    normal = unicodedata.normalize("NFC", name)
    cleaned = "".join(c if c.isalnum() or c in _SAFE_PUNCTUATION else "_" for c in normal)
    if cleaned == name and len(cleaned.encode("utf-8")) <= max_bytes:
        return cleaned
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]
    budget = max_bytes - _HASH_LENGTH - 1
    shortened = cleaned.encode("utf-8")[:budget].decode("utf-8", "ignore")
    return f"{shortened}~{digest}"


def snapshot_stem(test_name: str, index: SnapshotIndex) -> str:
    """File stem of assertion ``index``: ``test_x[id]``, ``test_x[id].1``, ``test_x[id][name]``."""
    stem = safe_name_part(test_name, _MAX_TEST_NAME_BYTES)
    if isinstance(index, str):
        return f"{stem}[{safe_name_part(index, _MAX_CUSTOM_INDEX_BYTES)}]"
    return f"{stem}.{index}" if index else stem


# -- the syrupy extension ------------------------------------------------------------------------


class GoldenExtension(SingleFileSnapshotExtension):
    """Base class; ``golden_extension_class`` makes a configured subclass per session."""

    file_extension = FILE_EXTENSION
    _write_mode = WriteMode.TEXT
    write_immediately = True

    golden_dir: ClassVar[Path] = Path("golden")
    rootdir: ClassVar[Path] = Path()
    policy: ClassVar[DriftPolicy] = DriftPolicy()
    log: ClassVar[DriftLog] = DriftLog()
    pending: ClassVar[PendingStore | None] = None
    # --smallmodel-triage: labels a failing verdict before it is reported (engine/variants.Triager)
    triage: ClassVar[VerdictHook | None] = None

    def __init__(self) -> None:
        # syrupy makes one extension instance per assertion object and calls read, serialize,
        # matches and diff_lines on it in that order, passing only strings: the live result and
        # the verdict are kept here between those calls.
        self.live: object = None
        self.has_live = False
        self.location: str | None = None
        self.verdict: Verdict | None = None
        self.test_id: str | None = None
        self.rewriting = False

    # -- layout ---------------------------------------------------------------------------------

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        test_file = Path(test_location.filepath)
        try:
            relative = test_file.parent.resolve().relative_to(cls.rootdir.resolve())
        except ValueError:  # a test file outside rootdir: keep it under golden_dir anyway
            relative = Path("_outside_rootdir")
        return str(cls.golden_dir / relative / test_file.stem)

    @classmethod
    def get_snapshot_name(cls, *, test_location: PyTestLocation, index: SnapshotIndex = 0) -> str:
        return snapshot_stem(test_location.snapshot_name, index)

    @classmethod
    def matches_test_location(
        cls, *, test_location: PyTestLocation, snapshot_location: str
    ) -> bool:
        location = Path(snapshot_location)
        if location.parent != Path(cls.dirname(test_location=test_location)):
            return False
        if location.suffix != f".{FILE_EXTENSION}":
            return False
        stem = location.name[: -len(FILE_EXTENSION) - 1]
        return owns_golden(snapshot_stem(test_location.snapshot_name, 0), stem)

    def discover_snapshots(
        self, *, test_location: PyTestLocation, ignore_extensions: list[str] | None = None
    ) -> SnapshotCollections:
        # syrupy's unused detection deletes goldens of tests that errored, were deselected or
        # never ran (interrupted session). Showing it no golden turns it off without its
        # "detection is disabled" warning; unused.py decides instead, from test outcomes.
        return SnapshotCollections()

    def display_path(self, location: str | None) -> str:
        if location is None:
            return "(unknown golden)"
        try:
            return Path(location).resolve().relative_to(self.rootdir.resolve()).as_posix()
        except ValueError:
            return location

    # -- storage --------------------------------------------------------------------------------

    def read_snapshot_data_from_location(
        self, *, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> str | None:
        self.location = snapshot_location
        try:
            raw = Path(snapshot_location).read_bytes()
        except FileNotFoundError:
            return None
        # Never raise here: syrupy would record an error and --snapshot-update could not replace
        # a corrupt file. parse_golden() reports undecodable bytes instead.
        return raw.decode("utf-8", "surrogateescape")

    @classmethod
    def write_snapshot_collection(
        cls, *, snapshot_collection: SnapshotCollection, name_order: dict[str, int] | None = None
    ) -> None:
        data = next(iter(snapshot_collection)).data
        if not isinstance(data, str):
            raise TypeError(f"golden data must be text, got {type(data).__name__}")
        location = Path(snapshot_collection.location)
        inside = cls.golden_dir.resolve()
        if not location.resolve().is_relative_to(inside):
            # A link committed into golden/ must not turn --snapshot-update into a write
            # anywhere else (atomic writes follow links to regular files).
            raise FileSystemError(
                f"cannot write golden {location}: it is a link to {location.resolve()}, outside "
                f"the golden directory {inside}. Replace the link with the golden file"
            )
        atomic_write_text(location, data)

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        Path(snapshot_location).unlink(missing_ok=True)

    # -- comparison -----------------------------------------------------------------------------

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> str:
        self.live, self.has_live = data, True
        try:
            record = record_of(data)
        except TypeError as error:  # a set, bytes, an object: check_plain says which and where
            raise GoldenError(str(error)) from None
        return serialize_record(record)

    def matches(
        self, *, serialized_data: SerializableData, snapshot_data: SerializableData
    ) -> bool:
        path = self.display_path(self.location)
        try:
            golden = parse_golden(str(snapshot_data), path=path)
        except NewerGoldenError:
            raise  # no verdict: nothing may replace it, and syrupy writes nothing after a raise
        except GoldenError as error:
            self.verdict = corrupt_verdict(
                path, str(error).removeprefix(f"golden {path} is invalid: ")
            )
        else:
            live = (
                self.live
                if self.has_live
                else parse_golden(str(serialized_data), path="(this run)")
            )
            self.verdict = compare(golden, live, policy=self.policy, golden_path=path)
            if self.triage is not None:
                self.verdict = self.triage(self.verdict)
        self.log.add(self.verdict, test=self.test_id, rewriting=self.rewriting)
        return self.verdict.passed

    def diff_lines(
        self, serialized_data: SerializableData, snapshot_data: SerializableData
    ) -> Iterator[str]:
        if self.verdict is not None:
            yield from explanation.lines(self.verdict)
        else:
            yield from explanation.lines(missing_verdict(self.display_path(self.location)))


def golden_extension_class(
    *,
    golden_dir: Path,
    rootdir: Path,
    policy: DriftPolicy,
    log: DriftLog,
    pending: PendingStore | None = None,
    triage: VerdictHook | None = None,
) -> type[GoldenExtension]:
    """A GoldenExtension subclass configured for this session (same arguments, same class).

    The class is published in this module under a name derived from the directories, so the
    pytest-xdist controller (which calls this with the same arguments) can import it by name:
    syrupy's controller uses the extension to tell which goldens belong to which tests.
    """
    golden_dir, rootdir = Path(golden_dir).resolve(), Path(rootdir).resolve()
    # One class per configuration: syrupy discovers goldens once per extension class and
    # directory, so a fresh class per test would rescan golden/ for every test.
    cache_key = (golden_dir, rootdir, policy, id(log), id(pending), id(triage))
    cached = _CLASSES.get(cache_key)
    if cached is not None and cached.log is log and cached.pending is pending:
        return cached
    key = hashlib.sha256(
        f"{Path(golden_dir).resolve()}\0{Path(rootdir).resolve()}".encode()
    ).hexdigest()
    name = f"GoldenExtension_{key[:12]}"
    cls = type(
        name,
        (GoldenExtension,),
        {
            "golden_dir": golden_dir,
            "rootdir": rootdir,
            "policy": policy,
            "log": log,
            "pending": pending,
            "triage": triage,
            "__module__": __name__,
            "__qualname__": name,
        },
    )
    globals()[name] = cls
    _CLASSES[cache_key] = cls
    return cls


_CLASSES: dict[tuple[Path, Path, DriftPolicy, int, int, int], type[GoldenExtension]] = {}


class GoldenMismatch(AssertionError):
    """A golden comparison failed; the message is the whole drift report."""


class GoldenAssertion(SnapshotAssertion):
    """The ``golden`` fixture's value: a syrupy assertion that fails with the full report.

    pytest truncates assertion explanations to 8 lines (unless -vv or CI), so instead of letting
    syrupy's assertrepr hook print the report, a failed comparison raises it.
    """

    def __eq__(self, other: SerializableData) -> bool:
        __tracebackhide__ = True
        extension = self.extension
        if isinstance(extension, GoldenExtension):
            extension.test_id = self.test_location.nodeid
            extension.rewriting = self.update_snapshots
            extension.verdict = None
        passed = self._assert(other)
        result = self.executions[self.num_executions - 1]
        if isinstance(extension, GoldenExtension) and extension.pending is not None:
            self._keep_pending(extension, extension.pending, result)
        if passed:
            return True
        if isinstance(result.exception, SmallModelError):
            # A value no golden can store, a newer golden, a write that failed: one message
            # (the plugin shows it without syrupy's traceback), never counted as rewritten.
            if isinstance(result.exception, FileSystemError) and isinstance(
                extension, GoldenExtension
            ):
                extension.log.write_failed(
                    extension.display_path(result.snapshot_location),
                    str(result.exception),
                    test=self.test_location.nodeid,
                )
            raise result.exception
        if (
            isinstance(extension, GoldenExtension)
            and extension.verdict is None
            and result.exception is None
        ):
            extension.log.add(
                missing_verdict(extension.display_path(result.snapshot_location)),
                test=self.test_location.nodeid,
            )
        raise GoldenMismatch("\n".join(self.get_assert_diff()))

    def _keep_pending(
        self, extension: GoldenExtension, store: PendingStore, result: AssertionResult
    ) -> None:
        """A failed comparison leaves this run's result pending; a passing one clears it."""
        golden = Path(result.snapshot_location)
        if result.success:
            store.discard(golden)  # matched, or rewritten by --snapshot-update: nothing to review
            return
        if result.exception is not None or not isinstance(result.asserted_data, str):
            return  # the value could not be stored (e.g. not JSON-serialisable): nothing pending
        verdict = extension.verdict or missing_verdict(extension.display_path(str(golden)))
        store.write(
            golden,
            result.asserted_data,
            test=self.test_location.nodeid,
            outcome=verdict.outcome.value,
            headline=explanation.headline(verdict),
            report=explanation.lines(verdict),
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # pytest prints fixture values above a failure; syrupy's repr would dump the whole golden.
        return f"<golden for {self.test_location.nodeid}>"


def golden_assertion(
    snapshot: SnapshotAssertion, extension_class: type[GoldenExtension]
) -> GoldenAssertion:
    """Build the ``golden`` fixture value from syrupy's ``snapshot`` fixture."""
    return GoldenAssertion(
        session=snapshot.session,
        extension_class=extension_class,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
        update_new_snapshots_only=snapshot.update_new_snapshots_only,
    )


__all__ = [
    "FORMAT_VERSION",
    "GoldenAssertion",
    "GoldenExtension",
    "GoldenMismatch",
    "golden_assertion",
    "golden_extension_class",
    "parse_golden",
    "safe_name_part",
    "serialize_record",
    "snapshot_stem",
]
