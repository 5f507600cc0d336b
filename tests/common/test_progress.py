"""The progress bar: drawn on a terminal (a real pseudo-terminal here), never in CI or when
stderr is not a terminal."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import sys
import termios

import pytest

from pytest_smallmodel.common.progress import progress
from pytest_smallmodel.evaluation.cases import cases_from
from pytest_smallmodel.evaluation.run import run_cases


def _evaluate(what: str) -> None:
    if what == "cases evaluated":  # the evaluation layer's loop draws this bar
        cases = cases_from(
            [{"id": f"c{i}", "input": "Ticket", "expected": "billing"} for i in range(5)]
        )
        report = run_cases(cases, lambda case: "billing", cached_calls=lambda: 0)
        assert report.accuracy.successes == 5
    else:
        assert list(progress(range(5), what=what)) == list(range(5))


def _through_a_terminal(monkeypatch: pytest.MonkeyPatch, what: str = "cases evaluated") -> str:
    leader, follower = os.openpty()
    # A terminal has a size; tqdm draws nothing on one of zero columns.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    terminal = os.fdopen(follower, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        _evaluate(what)
        terminal.flush()
        # The terminal hands the bytes over asynchronously: wait for them (or for nothing).
        ready, _, _ = select.select([leader], [], [], 1.0)
        return os.read(leader, 65536).decode("utf-8", "replace") if ready else ""
    finally:
        monkeypatch.undo()
        terminal.close()
        os.close(leader)


def test_a_terminal_shows_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    shown = _through_a_terminal(monkeypatch)
    assert "cases evaluated" in shown and "/5" in shown
    monkeypatch.delenv("CI", raising=False)
    assert "goldens replayed" in _through_a_terminal(monkeypatch, "goldens replayed")


def test_ci_and_pipes_stay_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert _through_a_terminal(monkeypatch) == ""
    monkeypatch.delenv("CI", raising=False)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress(range(5), what="cases evaluated")) == list(range(5))
    assert captured.getvalue() == ""
