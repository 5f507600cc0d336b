"""The pytest plugin: the ``model`` marker and fixture, the ``golden`` fixture, options, reports.

Registered through the ``pytest11`` entry point. It only adapts pytest to the core
(``registry``, ``engine``, ``golden``, ``drift``): every decision about models lives there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_smallmodel.atomic import check_writable
from pytest_smallmodel.drift import DriftLog, DriftPolicy, GoldenRecord
from pytest_smallmodel.engine import ModelHandle
from pytest_smallmodel.errors import ConfigError, FileSystemError, GoldenError, SmallModelError
from pytest_smallmodel.golden import (
    GoldenExtension,
    golden_assertion,
    golden_extension_class,
    parse_golden,
)
from pytest_smallmodel.project import Project, load_project
from pytest_smallmodel.registry import ModelReference, ModelRegistry, ModelUnavailable
from pytest_smallmodel.result_cache import ResultCache
from pytest_smallmodel.verify import GoldenSource

MARKER = "model"
_WORKER_STATS_KEY = "smallmodel_stats"
_WORKER_DRIFT_KEY = "smallmodel_drift"


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


@dataclass
class ModelUsage:
    """Per-model figures for the terminal summary (summed over workers under xdist)."""

    name: str
    short_sha: str
    load_seconds: float = 0.0
    worker_start_seconds: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    crashes: int = 0
    verified_calls: int = 0
    weights_loaded: bool = False

    def add(self, other: ModelUsage) -> None:
        self.verified_calls += other.verified_calls
        self.weights_loaded = self.weights_loaded or other.weights_loaded
        self.load_seconds += other.load_seconds
        self.worker_start_seconds += other.worker_start_seconds
        self.crashes += other.crashes
        self.calls += other.calls
        self.cached_calls += other.cached_calls
        self.generated_tokens += other.generated_tokens
        self.decode_seconds += other.decode_seconds


@dataclass
class SmallModelSession:
    config: pytest.Config
    drift_log: DriftLog = field(default_factory=DriftLog)
    _project: Project | ConfigError | None = None
    _registry: ModelRegistry | None = None
    worker_usage: dict[str, ModelUsage] = field(default_factory=dict)

    @property
    def project(self) -> Project:
        if self._project is None:
            try:
                self._project = load_project(self.config.rootpath)
            except ConfigError as error:
                self._project = error
        if isinstance(self._project, ConfigError):
            raise self._project
        return self._project

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            registry = ModelRegistry(self.project)
            if self.config.getoption("smallmodel_cache"):
                registry.result_cache = ResultCache(
                    registry.default_result_cache_dir(),
                    allow_gpu=bool(self.config.getoption("smallmodel_cache_gpu")),
                )
            self._registry = registry
        return self._registry

    def drift_policy(self) -> DriftPolicy:
        option = self.config.getoption("smallmodel_tolerance")
        configured = self.project.options.get("tolerance") if option is None else option
        kwargs: dict[str, Any] = {"strict": bool(self.config.getoption("smallmodel_strict"))}
        if configured is not None:
            kwargs["tolerance"] = self._number("tolerance", configured, "a number of nats >= 0")
        cosine = self.project.options.get("embedding_min_cosine")
        if cosine is not None:
            kwargs["embedding_min_cosine"] = self._number(
                "embedding_min_cosine", cosine, "a cosine similarity between 0 and 1"
            )
        try:
            return DriftPolicy(**kwargs)
        except ValueError as error:
            raise ConfigError(f"{self.project.pyproject} [tool.smallmodel]: {error}") from None

    def _number(self, key: str, value: object, expected: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{self.project.pyproject} [tool.smallmodel] {key} = {value!r}: expected {expected}"
            )
        return float(value)

    def golden_extension(self) -> type[GoldenExtension]:
        return golden_extension_class(
            golden_dir=self.golden_dir(),
            rootdir=self.config.rootpath,
            policy=self.drift_policy(),
            log=self.drift_log,
        )

    def golden_dir(self) -> Path:
        configured = self.project.options.get("golden_dir", "golden")
        if not isinstance(configured, str) or not configured:
            raise ConfigError(
                f"{self.project.pyproject} [tool.smallmodel] golden_dir = {configured!r}: "
                "expected a directory path relative to the pytest rootdir"
            )
        return (self.config.rootpath / configured).resolve()

    def usage(self) -> list[ModelUsage]:
        totals: dict[str, ModelUsage] = {}
        for usage in [*self._local_usage(), *self.worker_usage.values()]:
            totals.setdefault(usage.name, ModelUsage(usage.name, usage.short_sha)).add(usage)
        return [totals[name] for name in sorted(totals)]

    def _local_usage(self) -> Iterator[ModelUsage]:
        if self._registry is None:
            return
        for model in self._registry.pool:
            stats = model.stats
            yield ModelUsage(
                name=model.name,
                short_sha=model.sha256[:8],
                load_seconds=stats.load_seconds,
                worker_start_seconds=stats.worker_start_seconds,
                calls=stats.calls,
                cached_calls=stats.cached_calls,
                generated_tokens=stats.generated_tokens,
                decode_seconds=stats.decode_seconds,
                crashes=stats.crashes,
                verified_calls=stats.verified_calls,
                weights_loaded=stats.weights_loaded,
            )

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


_session_key = pytest.StashKey[SmallModelSession]()


def _session(config: pytest.Config) -> SmallModelSession:
    return config.stash[_session_key]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "model(reference, **settings): run this test on the model pinned in models.lock "
        "(reference 'name' or 'name@sha256prefix'; settings override [tool.smallmodel.settings])",
    )
    state = SmallModelSession(config)
    config.stash[_session_key] = state
    report = config.getoption("smallmodel_report")
    if report and getattr(config, "workerinput", None) is None:
        # Checked now: finding out after the whole suite ran would lose the report.
        try:
            check_writable(Path(report))
        except FileSystemError as error:
            raise pytest.UsageError(f"--smallmodel-report={report}: {error}") from None
    # syrupy matches golden files to tests through the extension class; the xdist controller,
    # which runs no test, must know it too, or it may misjudge hashed names as unused.
    with contextlib.suppress(SmallModelError):
        state.golden_extension()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "smallmodel-xdist")


def _model_reference(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "model" in callspec.params:
        return str(callspec.params["model"])
    marker = item.get_closest_marker(MARKER)
    if marker is not None and marker.args:
        return str(marker.args[0])
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests by model so that ``--dist loadgroup`` loads each model in one worker only."""
    if not config.pluginmanager.hasplugin("xdist"):
        return  # without xdist the marker is unregistered and --strict-markers would reject it
    for item in items:
        if "model" not in getattr(item, "fixturenames", ()):
            continue
        reference = _model_reference(item)
        if reference and not item.get_closest_marker("xdist_group"):
            name = reference.split("@", 1)[0]
            item.add_marker(pytest.mark.xdist_group(name=f"smallmodel-{name}"))


@pytest.fixture
def model(request: pytest.FixtureRequest) -> ModelHandle:
    """A loaded, verified model chosen by ``@pytest.mark.model`` or indirect parametrization."""
    node = request.node
    marker = node.get_closest_marker(MARKER)
    raw = getattr(request, "param", None)
    if raw is None:
        if marker is None or not marker.args:
            raise ConfigError(
                f"{node.nodeid} uses the `model` fixture but names no model: add "
                "@pytest.mark.model('NAME') or @pytest.mark.parametrize('model', ['NAME'], "
                "indirect=True)"
            )
        if len(marker.args) > 1:
            raise ConfigError(
                f"{node.nodeid}: @pytest.mark.model takes one model reference; to run on several "
                "models use @pytest.mark.parametrize('model', [...], indirect=True)"
            )
        raw = marker.args[0]
    overrides = dict(marker.kwargs) if marker is not None else {}
    session = _session(request.config)
    reference = ModelReference.parse(raw)
    try:
        handle = session.registry.handle(
            reference, overrides, where=f"{node.nodeid} @pytest.mark.model(...)"
        )
    except ModelUnavailable as error:
        if error.missing and request.config.getoption("smallmodel_missing") == "skip":
            pytest.skip(str(error))
        raise
    if "golden" in request.fixturenames and isinstance(node, pytest.Item):
        handle.goldens = GoldenSource(
            load=_goldens_of(node, session.golden_extension()), policy=session.drift_policy()
        )
        handle.verify_batched = request.config.getoption("smallmodel_verify") == "batched"
    return handle


def _goldens_of(
    item: pytest.Item, extension: type[GoldenExtension]
) -> Callable[[], list[tuple[str, GoldenRecord]]]:
    """Reads the goldens of ``item`` (every assertion index), for tolerance-mode checks made
    before decoding. A golden that cannot be read is left to the comparison, which reports it."""

    def load() -> list[tuple[str, GoldenRecord]]:
        from syrupy.location import PyTestLocation

        location = PyTestLocation(item)
        directory = Path(extension.dirname(test_location=location))
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.glob("*.json")):
            if not extension.matches_test_location(
                test_location=location, snapshot_location=str(path)
            ):
                continue
            try:
                shown = path.relative_to(extension.rootdir).as_posix()
            except ValueError:
                shown = str(path)
            try:
                found.append((shown, parse_golden(path.read_text("utf-8"), path=shown)))
            except (OSError, UnicodeDecodeError, GoldenError):
                continue
        return found

    return load


@pytest.fixture
def golden(snapshot: Any, request: pytest.FixtureRequest) -> Any:
    """A syrupy snapshot assertion storing model outputs under ``golden/``; explains drift."""
    return golden_assertion(snapshot, _session(request.config).golden_extension())


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
    config = session.config
    state = _session(config)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKER_STATS_KEY] = json.dumps([vars(u) for u in state.usage()])
        workeroutput[_WORKER_DRIFT_KEY] = state.drift_log.to_json()
    report_path = config.getoption("smallmodel_report")
    if report_path and workeroutput is None:
        try:
            state.drift_log.write_markdown(Path(report_path))
        except FileSystemError as error:  # the disk filled up during the run
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"ERROR: --smallmodel-report: {error}", red=True)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_key in config.stash:
        _session(config).close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _session(config)
    usage = state.usage()
    drift_lines = state.drift_log.summary_lines()
    if not usage and not drift_lines:
        return
    terminalreporter.section("smallmodel")
    for item in usage:
        speed = item.generated_tokens / item.decode_seconds if item.decode_seconds > 0 else 0.0
        cached = f", {item.cached_calls} cached" if item.cached_calls else ""
        crashes = f", {item.crashes} worker crash(es)" if item.crashes else ""
        verified = (
            f", {item.verified_calls} verified by a batched pass" if item.verified_calls else ""
        )
        weights = "" if item.weights_loaded else " (vocabulary only: weights not loaded)"
        terminalreporter.write_line(
            f"{item.name}@{item.short_sha}: loaded in {item.load_seconds:.2f}s{weights} "
            f"incl. worker start {item.worker_start_seconds:.2f}s, "
            f"{item.calls} calls{cached}{verified}, {item.generated_tokens} tokens generated, "
            f"{speed:.1f} tokens/s{crashes}"
        )
    for line in drift_lines:
        terminalreporter.write_line(line)


class _XdistHooks:
    """Collects per-worker figures on the xdist controller (registered only under xdist)."""

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        state = _session(node.config)
        for raw in json.loads(output.get(_WORKER_STATS_KEY, "[]")):
            usage = ModelUsage(**raw)
            worker_key = f"{output.get('workerid', id(node))}:{usage.name}"
            state.worker_usage[worker_key] = usage
        if _WORKER_DRIFT_KEY in output:
            state.drift_log.merge_json(output[_WORKER_DRIFT_KEY])
