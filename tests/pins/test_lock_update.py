"""locking.py: which pins `lock` keeps, re-resolves and writes, and what `lock --check` finds."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_factory import write_tiny_gguf
from source_helpers import MakeProject

from pytest_smallmodel.common.errors import LockError
from pytest_smallmodel.pins.lock_update import (
    IgnoredLock,
    LockEvent,
    Resolved,
    check_lock,
    update_lock,
)
from pytest_smallmodel.pins.lockfile import read_lock
from pytest_smallmodel.pins.project import Project, load_project

TWO_MODELS = 'a = { path = "a.gguf" }\nb = { path = "b.gguf" }'


def two_model_project(make_project: MakeProject) -> Project:
    root = make_project(TWO_MODELS)
    write_tiny_gguf(root / "a.gguf", seed=1)
    write_tiny_gguf(root / "b.gguf", seed=2)
    return load_project(root)


def test_first_lock_resolves_every_model_reports_each_and_writes(
    make_project: MakeProject,
) -> None:
    project = two_model_project(make_project)
    seen: list[LockEvent] = []
    update = update_lock(project, ["a", "b"], on_event=seen.append)
    assert update.written and update.failures == ()
    assert [(e.name, e.changed, e.previous) for e in update.events if isinstance(e, Resolved)] == [
        ("a", True, None),
        ("b", True, None),
    ]
    assert seen == list(update.events)
    assert read_lock(project.lock_path).models == update.pins


def test_fresh_pins_are_kept_and_only_changed_or_upgraded_ones_resolved(
    make_project: MakeProject,
) -> None:
    project = two_model_project(make_project)
    first = update_lock(project, ["a", "b"])
    assert update_lock(project, ["a", "b"]).events == ()  # nothing stale: nothing resolved

    write_tiny_gguf(project.root / "b.gguf", seed=3)  # the file changed, the spec did not
    assert update_lock(project, ["a", "b"]).events == ()
    upgraded = update_lock(project, ["b"], upgrade=True)
    (event,) = upgraded.events
    assert isinstance(event, Resolved) and event.name == "b" and event.changed
    assert event.previous == first.pins["b"]
    assert upgraded.pins["a"] == first.pins["a"]
    again = update_lock(project, ["a"], upgrade=True)
    assert [(e.name, e.changed) for e in again.events if isinstance(e, Resolved)] == [("a", False)]


def test_a_failure_writes_nothing_and_keeps_the_old_pin(make_project: MakeProject) -> None:
    project = two_model_project(make_project)
    update_lock(project, ["a", "b"])
    before = project.lock_path.read_bytes()
    (project.root / "a.gguf").unlink()
    update = update_lock(project, ["a", "b"], upgrade=True)
    assert not update.written
    (failure,) = update.failures
    assert failure.startswith("a: path = 'a.gguf' does not exist")
    assert update.pins["a"] == read_lock(project.lock_path).models["a"]
    assert project.lock_path.read_bytes() == before


def test_an_unreadable_lock_is_ignored_and_rewritten(make_project: MakeProject) -> None:
    project = two_model_project(make_project)
    project.lock_path.write_text("version = [\n")
    update = update_lock(project, ["a", "b"])
    assert isinstance(update.events[0], IgnoredLock)
    assert "invalid TOML" in update.events[0].error
    assert update.written and set(read_lock(project.lock_path).models) == {"a", "b"}


def test_a_newer_lock_is_never_downgraded(make_project: MakeProject) -> None:
    project = two_model_project(make_project)
    project.lock_path.write_text("version = 99\n")
    with pytest.raises(LockError, match="newer pytest-smallmodel"):
        update_lock(project, ["a"])
    assert project.lock_path.read_text() == "version = 99\n"


def test_check_lock_reasons(make_project: MakeProject, tmp_path: Path) -> None:
    project = two_model_project(make_project)
    missing = check_lock(project, ["a", "b"], check_removed=True)
    assert missing.missing and not missing.ok

    update_lock(project, ["a"])
    stale = check_lock(project, ["a", "b"], check_removed=True)
    assert stale.stale == ("b: declared but not locked",) and stale.checked == 2

    update_lock(project, ["a", "b"])
    assert check_lock(project, ["a", "b"], check_removed=True).ok
    fewer = load_project(make_project('a = { path = "other.gguf" }'))
    reasons = check_lock(fewer, ["a"], check_removed=True).stale
    assert reasons[0].startswith("a: spec changed (locked {path = 'a.gguf'}")
    assert reasons[1:] == ("b: locked but no longer declared",)
    assert check_lock(fewer, ["a"], check_removed=False).stale == reasons[:1]

    project.lock_path.write_text("version = [\n")
    unreadable = check_lock(project, ["a"], check_removed=True)
    assert unreadable.unreadable is not None and "invalid TOML" in unreadable.unreadable
