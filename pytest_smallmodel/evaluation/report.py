"""What an evaluation found: every case's verdict, and the metrics with their intervals.

``EvaluationReport`` is data; ``describe()`` renders it as text (what a failed gate shows) and
``to_dict()`` as JSON. Accuracy counts a case whose task raised as wrong (it is listed among the
errors too): a model that crashes on a case did not get it right. Per-label precision and
recall and per-field exact match are proportions with Wilson intervals; F1, a ratio of them,
has no binomial interval and is given as an estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.evaluation.cases import Case, ExpectedFields, ExpectedLabel, case_row
from pytest_smallmodel.evaluation.stats import Estimate, EvaluationError, Figure
from pytest_smallmodel.goldens.records import CaseRecord, CaseVerdict

if TYPE_CHECKING:  # a result holds the verdict scoring gave it
    from pytest_smallmodel.evaluation.scoring import Verdict

_WORST_SHOWN = 5


@dataclass(frozen=True)
class CaseResult:
    case: Case
    output: Any  # what the task returned (None when it raised)
    verdict: Verdict
    error: str | None = None  # the exception the task raised, as "Type: message"
    latency_ms: float | None = None  # None: not measured (from the result cache, or raised)
    tokens: int | None = None  # generated tokens, where the output says
    # The last model call the task made (a Label, Generation, extraction): what an evaluation
    # golden stores as the case's request and result, so that it can be replayed.
    call: object = field(default=None, compare=False, repr=False)

    @property
    def correct(self) -> bool:
        return self.error is None and self.verdict.correct

    def describe(self) -> str:
        shown = (
            self.case.input if isinstance(self.case.input, str) else self.case.input[-1]["content"]
        )
        shown = shown if len(shown) <= 70 else shown[:69] + "…"
        if self.error:
            return (
                f"{self.case.id}: {shown!r}: raised {self.error} (expected "
                f"{self.case.expected.describe()})"
            )
        return f"{self.case.id}: {shown!r}: {self.verdict.detail}"


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None if precision is None or recall is None else 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class LabelMetrics:
    label: str
    precision: Estimate  # of the cases predicted as this label, how many are
    recall: Estimate  # of the cases that are this label, how many were predicted so
    support: int

    @property
    def f1(self) -> float | None:
        p = self.precision.successes / self.precision.total if self.precision.total else None
        r = self.recall.successes / self.recall.total if self.recall.total else None
        return _f1(p, r)


@dataclass(frozen=True)
class FieldMetrics:
    """Extraction: per-field exact match, and micro precision/recall/F1 over all fields (an
    output field the case does not expect counts against precision)."""

    exact: Mapping[str, Estimate]
    matched: int
    expected: int
    produced: int

    @property
    def precision(self) -> float | None:
        return self.matched / self.produced if self.produced else None

    @property
    def recall(self) -> float | None:
        return self.matched / self.expected if self.expected else None

    @property
    def micro_f1(self) -> float | None:
        return _f1(self.precision, self.recall)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """Per-case wall time of the task, measured after one warm-up call; a result that came from
    the result cache was not measured, and a figure over such cases is an error, not a pass."""

    measured_ms: tuple[float, ...]
    not_measured: tuple[str, ...]  # case ids
    tokens: int
    seconds_with_tokens: float

    def _figure(self, q: float | None, part: str) -> Figure:
        if self.not_measured:
            raise EvaluationError(
                f"latency {part}: not measured for {len(self.not_measured)} case(s) "
                f"({', '.join(self.not_measured[:5])}{', …' if len(self.not_measured) > 5 else ''}"
                "): their results came from the result cache or the task raised. Run without "
                "--smallmodel-cache to gate on latency"
            )
        if not self.measured_ms:
            raise EvaluationError(f"latency {part}: no case was measured")
        value = max(self.measured_ms) if q is None else percentile(self.measured_ms, q)
        return Figure(value, self, part)

    @property
    def p50_ms(self) -> Figure:
        return self._figure(50, "p50_ms")

    @property
    def p95_ms(self) -> Figure:
        return self._figure(95, "p95_ms")

    @property
    def max_ms(self) -> Figure:
        return self._figure(None, "max_ms")

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds_with_tokens if self.seconds_with_tokens > 0 else None

    def describe(self) -> str:
        if not self.measured_ms:
            return (
                f"latency: not measured ({len(self.not_measured)} cases from the cache or errors)"
            )
        values = self.measured_ms
        line = (
            f"latency over {len(values)} cases: p50 {percentile(values, 50):.1f} ms, "
            f"p95 {percentile(values, 95):.1f} ms, max {max(values):.1f} ms"
        )
        if self.tokens_per_second is not None:
            line += f", {self.tokens_per_second:.1f} tokens/s"
        if self.not_measured:
            line += f" ({len(self.not_measured)} not measured)"
        return line

    def to_dict(self) -> dict[str, Any]:
        measured = bool(self.measured_ms)
        return {
            "measured": len(self.measured_ms),
            "not_measured": list(self.not_measured),
            "p50_ms": percentile(self.measured_ms, 50) if measured else None,
            "p95_ms": percentile(self.measured_ms, 95) if measured else None,
            "max_ms": max(self.measured_ms) if measured else None,
            "tokens_per_second": self.tokens_per_second,
        }


@dataclass(frozen=True)
class EvaluationReport:
    results: tuple[CaseResult, ...]
    accuracy: Estimate
    latency: Latency
    labels: Mapping[str, LabelMetrics] = field(default_factory=dict)
    confusion: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # expected -> got
    fields: FieldMetrics | None = None

    @property
    def wrong(self) -> list[CaseResult]:
        return [result for result in self.results if not result.correct]

    @property
    def errors(self) -> list[CaseResult]:
        return [result for result in self.results if result.error is not None]

    def describe(self) -> str:
        lines = [self.accuracy.describe()]
        for metrics in self.labels.values():
            f1 = metrics.f1
            lines.append(
                f"  {metrics.label!r}: support {metrics.support}, "
                f"{metrics.precision.describe()}, {metrics.recall.describe()}, "
                f"F1 {'n/a' if f1 is None else format(f1, '.3f')}"
            )
        if self.fields is not None:
            f1 = self.fields.micro_f1
            lines.append(f"  fields: micro F1 {'n/a' if f1 is None else format(f1, '.3f')}")
            lines += [f"  {estimate.describe()}" for estimate in self.fields.exact.values()]
        lines.append(self.latency.describe())
        return "\n".join(lines + self.wrong_lines())

    def wrong_lines(self) -> list[str]:
        """The cases that raised and the first wrong ones, with input, expected and output."""
        lines = []
        if self.errors:
            lines.append(f"{len(self.errors)} case(s) raised:")
            lines += [f"  {result.describe()}" for result in self.errors[:_WORST_SHOWN]]
        wrong = [result for result in self.wrong if result.error is None]
        if wrong:
            first = f", the first {_WORST_SHOWN}" if len(wrong) > _WORST_SHOWN else ""
            lines.append(f"{len(wrong)} wrong case(s){first}:")
            lines += [f"  {result.describe()}" for result in wrong[:_WORST_SHOWN]]
        return lines

    def golden_cases(self) -> tuple[list[CaseRecord], dict[str, Any]]:
        """What ``assert report == golden`` stores (goldens/kinds/evaluation.py): each case with
        its verdict and its live model call (the golden's kind makes that call's record), and
        the metrics without latency."""
        metrics = self.to_dict()
        del metrics["latency"], metrics["cases"]
        cases = []
        for result in self.results:
            verdict: CaseVerdict = (
                "error" if result.error else "correct" if result.correct else "wrong"
            )
            cases.append(
                CaseRecord(
                    id=result.case.id,
                    row=case_row(result.case),
                    output=None if result.error else plain_output(result.output),
                    verdict=verdict,
                    detail=result.error or result.verdict.detail,
                    result=None,
                    live=result.call,
                )
            )
        return cases, metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy.to_dict(),
            "labels": {
                label: {
                    "support": m.support,
                    "precision": m.precision.to_dict(),
                    "recall": m.recall.to_dict(),
                    "f1": m.f1,
                }
                for label, m in self.labels.items()
            },
            "confusion": {k: dict(v) for k, v in self.confusion.items()},
            "fields": None
            if self.fields is None
            else {
                "exact": {name: e.to_dict() for name, e in self.fields.exact.items()},
                "precision": self.fields.precision,
                "recall": self.fields.recall,
                "micro_f1": self.fields.micro_f1,
            },
            "latency": self.latency.to_dict(),
            "cases": [
                {
                    "id": r.case.id,
                    "correct": r.correct,
                    "output": _jsonable(r.output),
                    "detail": r.verdict.detail,
                    "error": r.error,
                }
                for r in self.results
            ],
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value if not isinstance(value, str) else str(value)


def plain_output(value: Any) -> Any:
    """An output as JSON: a Label or Generation as its text, an extraction as its value."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return {str(k): plain_output(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_output(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)


def build_report(results: Sequence[CaseResult]) -> EvaluationReport:
    """Metrics from the verdicts; the label and field figures only where cases expect them."""
    if not results:
        raise EvaluationError("the evaluation has no cases")
    correct = sum(result.correct for result in results)
    labelled = [r for r in results if isinstance(r.case.expected, ExpectedLabel)]
    fielded = [r for r in results if isinstance(r.case.expected, ExpectedFields)]
    measured = tuple(r.latency_ms for r in results if r.latency_ms is not None)
    with_tokens = [r for r in results if r.latency_ms is not None and r.tokens is not None]
    latency = Latency(
        measured_ms=measured,
        not_measured=tuple(r.case.id for r in results if r.latency_ms is None),
        tokens=sum(r.tokens or 0 for r in with_tokens),
        seconds_with_tokens=sum((r.latency_ms or 0.0) for r in with_tokens) / 1000,
    )
    report = EvaluationReport(
        results=tuple(results),
        accuracy=Estimate("accuracy", correct, len(results)),
        latency=latency,
        labels=_label_metrics(labelled),
        confusion=_confusion(labelled),
        fields=_field_metrics(fielded) if fielded else None,
    )
    # Every figure knows its report, so a failed gate on any of them shows the wrong cases.
    sources: list[object] = [report.accuracy, report.latency]
    for metrics in report.labels.values():
        sources += [metrics.precision, metrics.recall]
    if report.fields is not None:
        sources += list(report.fields.exact.values())
    for source in sources:
        object.__setattr__(source, "report", report)
    return report


def _predicted(result: CaseResult) -> str | None:
    return str(result.output) if result.error is None and isinstance(result.output, str) else None


def _confusion(results: Sequence[CaseResult]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for result in results:
        assert isinstance(result.case.expected, ExpectedLabel)
        row = table.setdefault(result.case.expected.label, {})
        got = _predicted(result) or "(error)"
        row[got] = row.get(got, 0) + 1
    return table


def _label_metrics(results: Sequence[CaseResult]) -> dict[str, LabelMetrics]:
    labels: list[str] = []
    for result in results:
        assert isinstance(result.case.expected, ExpectedLabel)
        for label in (result.case.expected.label, _predicted(result)):
            if label is not None and label not in labels:
                labels.append(label)
        for label in getattr(result.output, "logprobs", None) or ():
            if label not in labels:
                labels.append(label)
    metrics = {}
    for label in labels:
        actual = [r for r in results if r.case.expected.label == label]  # type: ignore[union-attr]
        predicted = [r for r in results if _predicted(r) == label]
        hits = sum(_predicted(r) == label for r in actual)
        metrics[label] = LabelMetrics(
            label,
            precision=Estimate(f"precision of {label!r}", hits, len(predicted)),
            recall=Estimate(f"recall of {label!r}", hits, len(actual)),
            support=len(actual),
        )
    return metrics


def _field_metrics(results: Sequence[CaseResult]) -> FieldMetrics:
    names: list[str] = []
    for result in results:
        assert isinstance(result.case.expected, ExpectedFields)
        names += [name for name in result.case.expected.fields if name not in names]
    exact = {}
    matched = expected = produced = 0
    for name in names:
        with_field = [r for r in results if name in r.case.expected.fields]  # type: ignore[union-attr]
        hits = sum(r.error is None and r.verdict.field_hits.get(name, False) for r in with_field)
        exact[name] = Estimate(f"field {name!r} exact", hits, len(with_field))
    for result in results:
        assert isinstance(result.case.expected, ExpectedFields)
        expected += len(result.case.expected.fields)
        if result.error is None and isinstance(result.output, Mapping):
            hits = sum(result.verdict.field_hits.values())
            matched += hits
            present = sum(1 for name in result.case.expected.fields if name in result.output)
            produced += present + result.verdict.extra_fields
    return FieldMetrics(exact, matched, expected, produced)


def gate_failure(op: str, left: Any, right: Any) -> list[str] | None:
    """What a failed gate (``assert report.accuracy.lower >= 0.8``) shows instead of two bare
    floats: the figure and threshold, the figure's interval, the wrong cases first (pytest
    shows 8 lines unless -vv or CI), then the rest of the report. None for other comparisons."""
    figure = left if isinstance(left, Figure) else right if isinstance(right, Figure) else None
    if figure is None:
        return None
    threshold = right if figure is left else left
    describe = getattr(figure.source, "describe", None)
    lines = [
        f"{figure.part} {float(figure):.4f} {op} {threshold} does not hold",
        describe() if callable(describe) else "",
    ]
    report = getattr(figure.source, "report", None)
    if isinstance(report, EvaluationReport):
        wrong = report.wrong_lines()
        lines += wrong
        lines += [line for line in report.describe().splitlines() if line not in (*wrong, lines[1])]
    return lines
