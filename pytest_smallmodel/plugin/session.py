"""One pytest session of the plugin: its state and what each hook does with it.

``plugin/__init__.py`` declares the hooks, options and fixtures and hands each to the
``SmallModelSession`` stashed on the config in a line or two, as syrupy's ``__init__`` hands
its hooks to its session. Here: the project, registry and goldens of the session, the ``model``
fixture's handle (built once, with the test's goldens), the unused-golden judgement, the
reports, the terminal summary and the merge of xdist workers' figures.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_smallmodel.common.atomic import check_writable
from pytest_smallmodel.common.errors import (
    ConfigError,
    FileSystemError,
    GoldenError,
    SmallModelError,
)
from pytest_smallmodel.drift.batched import GoldenSource
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.drift.rules import DriftPolicy
from pytest_smallmodel.engine.backend import ModelStats
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.registry import ModelReference, ModelRegistry
from pytest_smallmodel.engine.result_cache import ResultCache
from pytest_smallmodel.goldens.orphans import write_record as write_orphans
from pytest_smallmodel.goldens.pending import PendingStore
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.goldens.unused import (
    GoldenLedger,
    UnusedReport,
    failing_goldens,
    summary_lines,
)
from pytest_smallmodel.pins.hashing import ModelUnavailable
from pytest_smallmodel.pins.project import Project, load_project
from pytest_smallmodel.plugin.golden import (
    GoldenExtension,
    golden_assertion,
    golden_extension_class,
    parse_golden,
)

if TYPE_CHECKING:
    from pytest_smallmodel.engine.variants import Triager

MARKER = "model"
_WORKER_STATS_KEY = "smallmodel_stats"
_WORKER_DRIFT_KEY = "smallmodel_drift"
_WORKER_LEDGER_KEY = "smallmodel_goldens"
_WORKER_PENDING_KEY = "smallmodel_pending"
_REPORT_OPTIONS = (
    ("--smallmodel-report", "smallmodel_report"),
    ("--smallmodel-report-json", "smallmodel_report_json"),
)


@dataclass(kw_only=True)
class ModelUsage(ModelStats):
    """One model's figures for the terminal summary (summed over workers under xdist)."""

    name: str
    short_sha: str


@dataclass
class SmallModelSession:
    config: pytest.Config
    drift_log: DriftLog = field(default_factory=DriftLog)
    _project: Project | ConfigError | None = None
    _registry: ModelRegistry | None = None
    worker_usage: dict[str, ModelUsage] = field(default_factory=dict)
    ledger: GoldenLedger = field(default_factory=GoldenLedger)
    unused: UnusedReport | None = None
    _pending: PendingStore | None = None
    worker_pending: set[str] = field(default_factory=set)
    _triager: Triager | None = None

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
                    self.project.result_cache_dir,
                    allow_gpu=bool(self.config.getoption("smallmodel_cache_gpu")),
                )
            self._registry = registry
        return self._registry

    def drift_policy(self) -> DriftPolicy:
        options = self.project.options  # validated when the project was read
        option = self.config.getoption("smallmodel_tolerance")
        tolerance = options.tolerance if option is None else float(option)
        kwargs: dict[str, Any] = {"strict": bool(self.config.getoption("smallmodel_strict"))}
        if tolerance is not None:
            kwargs["tolerance"] = tolerance
        if option is None:  # --smallmodel-tolerance is this run's tolerance for every model
            kwargs["model_tolerances"] = tuple(
                (name, spec.tolerance)
                for name, spec in self.project.models.items()
                if spec.tolerance is not None
            )
        if options.embedding_min_cosine is not None:
            kwargs["embedding_min_cosine"] = options.embedding_min_cosine
        try:
            return DriftPolicy(**kwargs)
        except ValueError as error:
            raise ConfigError(f"{self.project.pyproject} [tool.smallmodel]: {error}") from None

    def golden_extension(self) -> type[GoldenExtension]:
        return golden_extension_class(
            golden_dir=(self.config.rootpath / self.project.options.golden_dir).resolve(),
            rootdir=self.config.rootpath,
            policy=self.drift_policy(),
            log=self.drift_log,
            pending=self.pending_store(),
            triage=self.triager(),
        )

    def triager(self) -> Triager | None:
        """--smallmodel-triage: replays failing goldens under the benign variants."""
        if not self.config.getoption("smallmodel_triage"):
            return None
        if self._triager is None:
            from pytest_smallmodel.engine.variants import Triager  # only with the option

            self._triager = Triager(self.registry.base_spec, ModelPool())
        return self._triager

    def pending_store(self) -> PendingStore:
        if self._pending is None:
            option = self.config.getoption("smallmodel_pending")
            directory = self.config.rootpath / (option or self.project.options.pending_dir)
            self._pending = PendingStore(
                directory, golden_dir=self.golden_dir(), root=self.config.rootpath
            )
        return self._pending

    def golden_dir(self) -> Path:
        return (self.config.rootpath / self.project.options.golden_dir).resolve()

    def pending_written(self) -> list[str]:
        """Pending goldens written in this session, by this process or the xdist workers."""
        local = self._pending.written if self._pending is not None else set()
        return sorted({str(p) for p in local} | self.worker_pending)

    def usage(self) -> list[ModelUsage]:
        totals: dict[str, ModelUsage] = {}
        for usage in [*self._local_usage(), *self.worker_usage.values()]:
            empty = ModelUsage(name=usage.name, short_sha=usage.short_sha)
            totals.setdefault(usage.name, empty).add(usage)
        return [totals[name] for name in sorted(totals)]

    def _local_usage(self) -> Iterator[ModelUsage]:
        if self._registry is None:
            return
        for model in self._registry.pool:
            yield ModelUsage(name=model.name, short_sha=model.sha256[:8], **asdict(model.stats))

    def close(self) -> None:
        if self._triager is not None:
            self._triager.close()
        if self._registry is not None:
            self._registry.close()

    @staticmethod
    def of(config: pytest.Config) -> SmallModelSession:
        return config.stash[_session_key]

    @staticmethod
    def end(config: pytest.Config) -> None:
        """Close the session's models (a config whose configure failed has none)."""
        if _session_key in config.stash:
            config.stash[_session_key].close()

    @staticmethod
    def start(config: pytest.Config) -> SmallModelSession:
        """The session of ``config``: stashed, its report paths checked, its hooks registered."""
        state = SmallModelSession(config)
        config.stash[_session_key] = state
        for option, name in _REPORT_OPTIONS:
            report = config.getoption(name)
            if report and getattr(config, "workerinput", None) is None:
                # Checked now: finding out after the whole suite ran would lose the report.
                try:
                    check_writable(Path(report))
                except FileSystemError as error:
                    raise pytest.UsageError(f"{option}={report}: {error}") from None
        config.pluginmanager.register(_OutcomeHooks(config), "smallmodel-outcomes")
        # syrupy matches golden files to tests through the extension class; the xdist controller,
        # which runs no test, must know it too, or it may misjudge hashed names as unused.
        with contextlib.suppress(SmallModelError):
            state.golden_extension()
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistHooks(), "smallmodel-xdist")
            _warn_if_loadgroup_is_ignored(config)
        return state

    # -- fixtures -------------------------------------------------------------------------------

    def handle_for(self, request: pytest.FixtureRequest) -> ModelHandle:
        """The ``model`` fixture's value: the marker's (or parameter's) model, built once with
        the test's goldens when tolerance mode may verify them in a batched pass."""
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
                    f"{node.nodeid}: @pytest.mark.model takes one model reference; to run on "
                    "several models use @pytest.mark.parametrize('model', [...], indirect=True)"
                )
            raw = marker.args[0]
        overrides = dict(marker.kwargs) if marker is not None else {}
        reference = ModelReference.parse(raw)
        goldens = None
        if (
            "golden" in request.fixturenames
            and isinstance(node, pytest.Item)
            and request.config.getoption("smallmodel_verify") == "batched"
        ):
            goldens = GoldenSource(
                load=_goldens_of(node, self.golden_extension()), policy=self.drift_policy()
            )
        try:
            where = f"{node.nodeid} @pytest.mark.model(...)"
            return self.registry.handle(reference, overrides, where=where, goldens=goldens)
        except ModelUnavailable as error:
            if error.missing and request.config.getoption("smallmodel_missing") == "skip":
                pytest.skip(str(error))
            raise

    def golden_for(self, snapshot: Any) -> Iterator[Any]:
        """The ``golden`` fixture: the assertion, then every golden it asserted is noted."""
        assertion = golden_assertion(snapshot, self.golden_extension())
        yield assertion
        # Every golden this test asserted, whatever the result: only goldens never asserted by a
        # test that passed can be unused (unused.py).
        self.ledger.add_used(result.snapshot_location for result in assertion.executions.values())

    # -- collection -----------------------------------------------------------------------------

    def collection_finished(self, session: pytest.Session) -> None:
        """Note where each collected test keeps its goldens (the unused-golden rules need it)."""
        if any("::" in str(arg) for arg in session.config.args):
            self.ledger.partial_collection = True
        try:
            extension = self.golden_extension()
        except SmallModelError:
            return  # the configuration error is reported by the tests that use the model
        from syrupy.location import PyTestLocation

        for item in session.items:
            if "golden" not in getattr(item, "fixturenames", ()) or not isinstance(
                item, pytest.Function
            ):
                continue
            location = PyTestLocation(item)
            self.ledger.add_test(
                item.nodeid,
                Path(extension.dirname(test_location=location)),
                extension.get_snapshot_name(test_location=location, index=0),
            )

    # -- the end of the session -----------------------------------------------------------------

    def finish(self, session: pytest.Session) -> None:
        """Hand this worker's figures to the xdist controller, or judge unused goldens and write
        the orphan record and reports (the controller, or a run without xdist)."""
        config = session.config
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[_WORKER_STATS_KEY] = json.dumps([vars(u) for u in self.usage()])
            workeroutput[_WORKER_DRIFT_KEY] = self.drift_log.to_json()
            workeroutput[_WORKER_LEDGER_KEY] = self.ledger.to_json()
            workeroutput[_WORKER_PENDING_KEY] = json.dumps(self.pending_written())
            return  # the controller writes the reports, with every worker's verdicts merged
        _judge_unused(session, self)
        orphans_json = config.getoption("smallmodel_orphans_json")
        if orphans_json:
            write_orphans(
                Path(orphans_json),
                self.unused.orphans if self.unused is not None else (),
                root=config.rootpath,
                partial=self.ledger.partial_collection,
            )
        writers = {
            "smallmodel_report": self.drift_log.write_markdown,
            "smallmodel_report_json": self.drift_log.write_json,
        }
        for option, name in _REPORT_OPTIONS:
            report_path = config.getoption(name)
            if not report_path:
                continue
            try:
                writers[name](Path(report_path))
            except FileSystemError as error:  # the disk filled up during the run
                reporter = config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"ERROR: {option}: {error}", red=True)
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def summary(self, terminalreporter: Any) -> None:
        """The ``smallmodel`` section of the terminal summary."""
        usage = self.usage()
        drift_lines = self.drift_log.summary_lines()
        golden_lines = _golden_lines(self)
        if not usage and not drift_lines and not golden_lines:
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
            if item.identity_unverified:
                weights += " [model identity unverified: a running server served it]"
            loaded = (
                f"loaded in {item.load_seconds:.2f}s{weights} "
                f"incl. worker start {item.worker_start_seconds:.2f}s"
                if item.worker_starts
                else "not loaded (no engine worker started: every result came from the cache)"
            )
            terminalreporter.write_line(
                f"{item.name}@{item.short_sha}: {loaded}, "
                f"{item.calls} calls{cached}{verified}, {item.generated_tokens} tokens generated, "
                f"{speed:.1f} tokens/s{crashes}"
            )
        for line in [*drift_lines, *golden_lines]:
            terminalreporter.write_line(line)


_session_key = pytest.StashKey[SmallModelSession]()


def _warn_if_loadgroup_is_ignored(config: pytest.Config) -> None:
    """pytest 9.2 ignores the node-id suffix through which pytest-xdist <= 3.8 groups tests
    (pytest-xdist issue 1386): `--dist loadgroup` then silently spreads a model's tests, and every
    worker loads every model. Say so rather than let memory use surprise the user."""
    if getattr(config, "workerinput", None) is not None or config.getoption("dist", "no") != (
        "loadgroup"
    ):
        return
    import importlib.metadata

    def release(distribution: str) -> tuple[int, ...]:
        version = importlib.metadata.version(distribution)
        return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())

    if release("pytest") >= (9, 2) and release("pytest-xdist") <= (3, 8):
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                "--dist loadgroup has no effect with pytest >= 9.2 and pytest-xdist <= 3.8 "
                "(pytest-xdist issue 1386): every worker may load every model. Use pytest < 9.2 "
                "until pytest-xdist is fixed, or plain --dist load."
            ),
            stacklevel=2,
        )


def _model_reference(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "model" in callspec.params:
        return str(callspec.params["model"])
    marker = item.get_closest_marker(MARKER)
    if marker is not None and marker.args:
        return str(marker.args[0])
    return None


def group_by_model(item: pytest.Item) -> None:
    """Group tests by model so that ``--dist loadgroup`` loads each model in one worker only.

    Done as each item is collected: xdist turns ``xdist_group`` markers into node-id suffixes
    in its worker's ``pytest_collection_modifyitems``, before this plugin's would run.
    """
    if not item.config.pluginmanager.hasplugin("xdist"):
        return  # without xdist the marker is unregistered and --strict-markers would reject it
    if "model" not in getattr(item, "fixturenames", ()):
        return
    reference = _model_reference(item)
    if reference and not item.get_closest_marker("xdist_group"):
        name = reference.split("@", 1)[0]
        item.add_marker(pytest.mark.xdist_group(name=f"smallmodel-{name}"))


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


class _OutcomeHooks:
    """Records test outcomes into the session's golden ledger."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the xdist controller these are the workers' reports; outcomes come from each
        # worker's own ledger instead, together with the goldens its tests asserted, so that a
        # crashed worker (whose ledger never arrives) cannot make a golden look unused.
        if self.config.pluginmanager.has_plugin("dsession"):
            return
        ledger = SmallModelSession.of(self.config).ledger
        ledger.add_outcome(report.nodeid, report.when, report.outcome)


def _judge_unused(session: pytest.Session, state: SmallModelSession) -> None:
    option = session.config.option
    if getattr(option, "disable_unused_snapshots", False) or not state.ledger.tests:
        return
    updating = bool(option.update_snapshots)
    session_ok = (
        session.exitstatus == pytest.ExitCode.OK
        and session.testsfailed == 0
        and not session.shouldstop
        and not session.shouldfail
    )
    complete = state.ledger.complete(session_ok=session_ok)
    if updating and not getattr(option, "no_cleanup", False):
        state.unused = state.ledger.delete_unused(complete=complete)
        return
    state.unused = state.ledger.report(complete=complete)
    # syrupy's rule, kept: unused goldens fail the session unless --snapshot-warn-unused; the
    # summary line says so ("5 passed, 1 orphaned golden"), since every test passed.
    if (
        (state.unused.unused or state.unused.orphans)
        and not updating
        and not option.warn_unused_snapshots
        and not option.collectonly
        and session.exitstatus == pytest.ExitCode.OK
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for words, count in failing_goldens(state.unused).items():
                reporter.stats.setdefault(words, []).extend([words] * count)


def _golden_lines(state: SmallModelSession) -> list[str]:
    root = state.config.rootpath
    lines = []
    if state.unused is not None:
        lines += summary_lines(
            state.unused, root=root, updating=bool(state.config.option.update_snapshots)
        )
    written = state.pending_written()
    if written:
        where = state.pending_store().pending_dir
        try:
            shown = where.relative_to(root.resolve()).as_posix()
        except ValueError:
            shown = str(where)
        count = len(written)
        lines.append(
            f"{count} pending golden{'s' if count != 1 else ''} written to {shown}: review with "
            "`smallmodel review` (the accepted goldens were not changed)"
        )
    return lines


class _XdistHooks:
    """Collects per-worker figures on the xdist controller (registered only under xdist)."""

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        state = SmallModelSession.of(node.config)
        for raw in json.loads(output.get(_WORKER_STATS_KEY, "[]")):
            usage = ModelUsage(**raw)
            worker_key = f"{output.get('workerid', id(node))}:{usage.name}"
            state.worker_usage[worker_key] = usage
        if _WORKER_DRIFT_KEY in output:
            state.drift_log.merge_json(output[_WORKER_DRIFT_KEY])
        if _WORKER_LEDGER_KEY in output:
            state.ledger.merge_json(output[_WORKER_LEDGER_KEY])
        state.worker_pending.update(json.loads(output.get(_WORKER_PENDING_KEY, "[]")))
