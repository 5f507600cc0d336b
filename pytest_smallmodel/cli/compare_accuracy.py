"""Swap decisions with ground truth, and OLD's figures beside NEW's, for ``smallmodel compare``.

An evaluation golden stores every case's expected value and the model call its task made; each
call is replayed on NEW and both results are scored against the expected value the same way (OLD
from the result its golden stores), giving both accuracies with Wilson intervals, the cases each
model wins and loses, and the exact McNemar test on them (``compare_report.AccuracyComparison``).
The ``Meter`` times every replayed call, so that OLD, when its file is still pinned and present,
is measured by replaying the same requests on it. The gates (``--fail-under``,
``--fail-if-worse``) are decided here, as data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.cli.compare_report import AccuracyComparison, GateResult, PairedCase
from pytest_smallmodel.common.errors import SmallModelError
from pytest_smallmodel.common.results import generation_of
from pytest_smallmodel.evaluation.cases import ExpectedLabel, cases_from
from pytest_smallmodel.evaluation.report import percentile, plain_output
from pytest_smallmodel.evaluation.scoring import score
from pytest_smallmodel.goldens.records import EvaluationRecord, GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.engine.handle import ModelHandle


@dataclass
class Meter:
    """What replaying on one model cost: per-call wall time (the first call, which pays for
    loading, left out), generated tokens over decode time, load time, and its workers."""

    latencies_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_seconds: float = 0.0
    load_seconds: float = 0.0
    pids: set[int] = field(default_factory=set)
    # compare.replay: sends a stored request through the handle's public API
    send: Callable[[ModelHandle, GoldenRecord], object] | None = None
    _calls: int = 0

    def opened(self, started: float) -> None:
        """A model was opened for a replay, from ``started`` (``time.perf_counter()``) on."""
        self.load_seconds += time.perf_counter() - started

    def replay(self, handle: ModelHandle, record: GoldenRecord) -> object:
        assert self.send is not None
        started = time.perf_counter()
        live = self.send(handle, record)
        elapsed = (time.perf_counter() - started) * 1000
        self._calls += 1
        if self._calls > 1:
            self.latencies_ms.append(elapsed)
        generation = generation_of(live)
        if generation is not None:
            self.tokens += generation.timings.generated_tokens
            self.decode_seconds += generation.timings.decode_ms / 1000
        if handle.worker_pid is not None:
            self.pids.add(handle.worker_pid)
        return live

    def peak_mib(self) -> float | None:
        """The largest peak resident memory of this model's worker processes (Linux: VmHWM
        while they still run); None where it cannot be read."""
        peaks = [peak for pid in self.pids if (peak := _vm_hwm_mib(pid)) is not None]
        return max(peaks) if peaks else None

    def figures(self) -> dict[str, float | None]:
        measured = bool(self.latencies_ms)
        return {
            "tokens_per_second": (
                round(self.tokens / self.decode_seconds, 1) if self.decode_seconds > 0 else None
            ),
            "load_seconds": round(self.load_seconds, 3),
            "peak_rss_mib": self.peak_mib(),
            "latency_p50_ms": round(percentile(self.latencies_ms, 50), 1) if measured else None,
            "latency_p95_ms": round(percentile(self.latencies_ms, 95), 1) if measured else None,
        }


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def stored_calls(record: GoldenRecord) -> list[GoldenRecord]:
    """The model calls a golden holds: its own, or each case's of an evaluation."""
    if isinstance(record.evaluation, EvaluationRecord):
        return [case.result for case in record.evaluation.cases if case.result is not None]
    return [record]


def output_of(record: GoldenRecord) -> Any:
    """What the stored call returned, as a task would have: a label, the extracted value, the
    text or the vector."""
    if record.kind == "label":
        return record.label
    if record.kind == "extraction":
        try:
            return json.loads(record.text or "")
        except ValueError:
            return record.text
    if record.kind == "embedding":
        return list(record.vector or ())
    return record.text


def compare_accuracy(
    name: str,
    record: GoldenRecord,
    run: Callable[[GoldenRecord], object],
) -> AccuracyComparison:
    """Replay each case's stored call with ``run`` (NEW) and score both models' results."""
    evaluation = record.evaluation
    assert isinstance(evaluation, EvaluationRecord)
    paired: list[PairedCase] = []
    not_replayed: list[str] = []
    labels: list[str] = []
    for stored in evaluation.cases:
        if stored.result is None:
            not_replayed.append(stored.id)
            continue
        (case,) = cases_from([{"id": stored.id, **stored.row}], name=f"{name} case {stored.id}")
        task_labels = (stored.result.request or {}).get("labels")
        if isinstance(case.expected, ExpectedLabel):
            labels += [x for x in (task_labels or [case.expected.label]) if x not in labels]
        old_output = output_of(stored.result)
        old_correct = _correct(case, old_output, task_labels)
        try:
            live = run(stored.result)
            new_output: Any = plain_output(live)
            new_correct = _correct(case, live, task_labels)
            error = None
        except SmallModelError as failure:
            new_output, new_correct, error = None, False, str(failure)
        paired.append(
            PairedCase(
                stored.id,
                case.expected.describe(),
                old_output,
                new_output,
                bool(old_correct),
                bool(new_correct),
                error,
                case.expected.label if isinstance(case.expected, ExpectedLabel) else None,
            )
        )
    return AccuracyComparison(name, tuple(paired), tuple(not_replayed), tuple(labels))


def _correct(case: Any, output: Any, labels: Sequence[str] | None) -> bool:
    return score(case, output, labels).correct


def gates(
    comparisons: Sequence[AccuracyComparison],
    *,
    fail_under: float | None,
    fail_if_worse: bool,
) -> list[GateResult]:
    """The gates asked for, one result per evaluation golden; a gate with no evaluation golden
    to check fails: it could never have caught anything."""
    asked: list[str] = []
    if fail_under is not None:
        asked.append(f"--fail-under {fail_under:g}")
    if fail_if_worse:
        asked.append("--fail-if-worse")
    if not comparisons:
        return [
            GateResult(
                gate,
                None,
                False,
                "no evaluation golden (one with expected values) was recorded with OLD, so "
                "there is no accuracy to gate on: record one with `assert report == golden`",
            )
            for gate in asked
        ]
    results: list[GateResult] = []
    for comparison in comparisons:
        if not comparison.cases:
            results += [
                GateResult(gate, comparison.golden, False, "no case could be replayed")
                for gate in asked
            ]
            continue
        new = comparison.new_accuracy
        if fail_under is not None:
            passed = float(new.estimate) >= fail_under
            results.append(
                GateResult(
                    asked[0],
                    comparison.golden,
                    passed,
                    f"NEW's accuracy {float(new.estimate):.3f} ({new.successes}/{new.total}) is "
                    f"{'not ' if passed else ''}below {fail_under:g}",
                )
            )
        if fail_if_worse:
            worse = comparison.significantly_worse
            results.append(
                GateResult(
                    "--fail-if-worse",
                    comparison.golden,
                    not worse,
                    f"NEW loses {len(comparison.losses)} case(s) and wins "
                    f"{len(comparison.wins)}: McNemar p = {comparison.p_value:.4f} "
                    + (
                        "< 0.05, NEW is significantly worse"
                        if worse
                        else "(not significantly worse at 0.05)"
                    ),
                )
            )
    return results


__all__ = ["Meter", "compare_accuracy", "gates", "output_of", "stored_calls"]
