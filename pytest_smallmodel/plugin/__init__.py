"""The pytest plugin: the ``model`` marker and fixture, the ``golden`` fixture, options, reports.

Registered through the ``pytest11`` entry point. Each hook hands off to the session
(``plugin/session.py``) in a line or two; every decision about models lives in the core
(``engine``, ``goldens``, ``drift``).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from pytest_smallmodel.common.errors import SmallModelError
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.pins.project import DEFAULT_PENDING_DIR
from pytest_smallmodel.plugin.session import (
    MARKER,
    SmallModelSession,
    group_by_model,
)

__all__ = ["MARKER", "SmallModelSession"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smallmodel", "pinned small-model regression tests")
    group.addoption(
        "--smallmodel-missing",
        choices=("fail", "skip"),
        default="fail",
        help="what to do with tests whose model file is not present locally (default: fail)",
    )
    group.addoption(
        "--smallmodel-strict",
        action="store_true",
        default=False,
        help="require identical tokens even when the runtime fingerprint changed (no tolerance)",
    )
    group.addoption(
        "--smallmodel-tolerance",
        type=float,
        default=None,
        help="nats a golden token may trail the best token when the fingerprint changed "
        "(default: [tool.smallmodel] tolerance, else the documented default)",
    )
    group.addoption(
        "--smallmodel-cache",
        action="store_true",
        default=False,
        help="reuse stored results whose whole key (model sha256, request, settings, runtime "
        "fingerprint) matches instead of decoding; see docs/configuration.md",
    )
    group.addoption(
        "--smallmodel-cache-gpu",
        action="store_true",
        default=False,
        help="allow --smallmodel-cache on GPU backends, which are not always deterministic",
    )
    group.addoption(
        "--smallmodel-verify",
        choices=("batched", "decode"),
        default="batched",
        help="how tolerance mode checks a golden: one batched teacher-forced pass, decoding only "
        "when it fails (default), or always decode first (the slower path, for comparison)",
    )
    group.addoption(
        "--smallmodel-report",
        metavar="PATH",
        default=None,
        help="write every drift and tolerance pass as Markdown to PATH (for a CI comment)",
    )
    group.addoption(
        "--smallmodel-report-json",
        metavar="PATH",
        default=None,
        help="write every golden verdict of the session as JSON to PATH (format: the package's "
        "report.schema.json; see docs/drift.md)",
    )
    group.addoption(
        "--smallmodel-triage",
        action="store_true",
        default=False,
        help="replay each failing golden under benign runtime variants and label the failure "
        "numerical or behavioural in its report (docs/drift.md)",
    )
    group.addoption(
        "--smallmodel-orphans-json",
        metavar="PATH",
        default=None,
        help="write the goldens no collected test owns to PATH as JSON (what `smallmodel "
        "review --orphans` collects with)",
    )
    group.addoption(
        "--smallmodel-pending",
        metavar="DIR",
        default=None,
        help="where failed golden assertions leave their new results for `smallmodel review` "
        f"(default: [tool.smallmodel] pending_dir, else {DEFAULT_PENDING_DIR}; relative to "
        "the rootdir)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "model(reference, **settings): run this test on the model pinned in models.lock "
        "(reference 'name' or 'name@sha256prefix'; settings override [tool.smallmodel.settings])",
    )
    SmallModelSession.start(config)


def pytest_itemcollected(item: pytest.Item) -> None:
    group_by_model(item)


@pytest.fixture
def model(request: pytest.FixtureRequest) -> ModelHandle:
    """A loaded, verified model chosen by ``@pytest.mark.model`` or indirect parametrization."""
    return SmallModelSession.of(request.config).handle_for(request)


@pytest.fixture
def golden(snapshot: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A syrupy snapshot assertion storing model outputs under ``golden/``; explains drift."""
    yield from SmallModelSession.of(request.config).golden_for(snapshot)


def pytest_collection_finish(session: pytest.Session) -> None:
    SmallModelSession.of(session.config).collection_finished(session)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        SmallModelSession.of(items[0].config).ledger.partial_collection = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Expected errors (bad model, bad settings, bad input) read as one message, not a traceback."""
    report = yield
    excinfo = call.excinfo
    if report.failed and excinfo is not None and isinstance(excinfo.value, SmallModelError):
        where = "setup" if call.when == "setup" else "call"
        report.longrepr = f"{item.nodeid} ({where}): {excinfo.value}"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    SmallModelSession.of(session.config).finish(session)


def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: Any, right: Any
) -> list[str] | None:
    """A failed quality gate prints the figure, its interval and the cases behind it."""
    from pytest_smallmodel.evaluation.report import gate_failure  # on a failed assert only

    return gate_failure(op, left, right)


def pytest_unconfigure(config: pytest.Config) -> None:
    SmallModelSession.end(config)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    SmallModelSession.of(config).summary(terminalreporter)
