"""How an evaluation golden is judged: each case as its own golden would be, and how that reads.

An evaluation holds many model calls; each case is compared as its own golden would be (the
whole comparison of the case's stored call and this run's, so tolerance mode applies per case:
a label or extraction that changed within tolerance counts as the same). The evaluation fails
when a case's output or verdict changed otherwise, when cases were added, removed or redefined
(the test's input changed), or when the model file changed; the failure lists the cases by id,
old -> new, and the metrics that moved with both intervals. Its rule decides the model and
request changes itself (``shared_wording`` is False): they count its cases too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.drift.kinds.base import KindDefaults
from pytest_smallmodel.drift.text import OUTPUT_DIFF, unified
from pytest_smallmodel.drift.verdict import (
    CaseChange,
    EvaluationDrift,
    FieldChange,
    MetricChange,
    Mode,
    Outcome,
    Reason,
    Verdict,
)
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer

_CASES_SHOWN = 20


class EvaluationKind(KindDefaults):
    kind = "evaluation"
    shared_wording = False
    requests: tuple[str, ...] = ()  # each case's call is replayed (cli/compare_accuracy.py)

    def compare(self, check: Check) -> Verdict:
        golden, current, golden_path = check.golden, check.current, check.golden_path
        changed = check.fingerprint_changes()
        old, new = golden.evaluation, current.evaluation
        assert old is not None and new is not None
        old_cases, new_cases = old.by_id(), new.by_id()
        added = tuple(case_id for case_id in new_cases if case_id not in old_cases)
        removed = tuple(case_id for case_id in old_cases if case_id not in new_cases)
        redefined = tuple(
            case.id
            for case in new.cases
            if case.id in old_cases and old_cases[case.id].row != case.row
        )
        request_changed = bool(added or removed or redefined)
        differing: list[CaseChange] = []
        tolerated: list[CaseChange] = []
        for case in new.cases:
            before = old_cases.get(case.id)
            if before is None:
                continue
            call = None
            if before.result is not None and case.result is not None and case.live is not None:
                call = check.compare_nested(before.result, case.live, f"{golden_path} {case.id}")
                request_changed |= call.reason in (Reason.REQUEST_CHANGED, Reason.KIND_CHANGED)
            change = CaseChange(
                case.id, before.output, case.output, before.verdict, case.verdict, call
            )
            same = (before.output, before.verdict) == (case.output, case.verdict)
            if call is not None and call.passed and call.outcome is Outcome.TOLERATED:
                if not same:
                    tolerated.append(change)
            elif not same or (call is not None and not call.passed):
                differing.append(change)
        mode = (
            None
            if golden.sha256 != current.sha256 or request_changed
            else _mode(changed, check.strict)
        )
        drift = EvaluationDrift(
            changed=tuple(differing),
            tolerated=tuple(tolerated),
            added=added,
            removed=removed,
            redefined=redefined,
            metrics=_metric_changes(old.metrics, new.metrics),
            cases=len(new.cases),
        )
        if golden.sha256 != current.sha256:
            outcome, passed, reason = Outcome.MODEL_CHANGED, False, Reason.MODEL_CHANGED
        elif request_changed:
            outcome, passed, reason = Outcome.REQUEST_CHANGED, False, Reason.REQUEST_CHANGED
        elif differing:
            outcome = Outcome.DRIFT if changed else Outcome.MISMATCH
            passed, reason = False, Reason.CASES_CHANGED
        elif tolerated:
            outcome, passed, reason = Outcome.TOLERATED, True, Reason.WITHIN_TOLERANCE
        else:
            outcome = Outcome.IDENTICAL_NEW_FINGERPRINT if changed else Outcome.IDENTICAL
            passed, reason = True, Reason.IDENTICAL
        return Verdict(
            outcome=outcome,
            passed=passed,
            golden_path=golden_path,
            reason=reason,
            golden=golden,
            current=current,
            mode=mode,
            tolerance=check.tolerance,
            changed=changed,
            evaluation=drift,
        )

    def headline(self, verdict: Verdict) -> str:
        return headline(verdict)

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        return evidence(verdict, describe)

    def summary(self, record: GoldenRecord) -> list[str]:
        evaluation = record.evaluation
        assert evaluation is not None
        return [f"{case.id}: {_shown(case.output)} ({case.verdict})" for case in evaluation.cases]

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified(self.summary(golden), self.summary(current))]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        raise AssertionError("an evaluation has no request of its own (requests = ())")


KIND = EvaluationKind()


def _mode(changed: tuple[FieldChange, ...], strict: bool) -> Mode:
    if not changed:
        return Mode.EXACT
    return Mode.STRICT if strict else Mode.TOLERANCE


def proportions(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every proportion in an evaluation's metrics, by the name a report gives it."""
    found: dict[str, Mapping[str, Any]] = {"accuracy": metrics.get("accuracy") or {}}
    for label, figures in (metrics.get("labels") or {}).items():
        found[f"precision of {label!r}"] = figures.get("precision") or {}
        found[f"recall of {label!r}"] = figures.get("recall") or {}
    for name, figures in ((metrics.get("fields") or {}).get("exact") or {}).items():
        found[f"field {name!r} exact"] = figures or {}
    return found


def _counts(figures: Mapping[str, Any]) -> tuple[Any, Any]:
    return figures.get("successes"), figures.get("total")


def _metric_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[MetricChange, ...]:
    before, after = proportions(old), proportions(new)
    names = [*before, *(name for name in after if name not in before)]
    return tuple(
        MetricChange(name, before.get(name, {}), after.get(name, {}))
        for name in names
        if _counts(before.get(name, {})) != _counts(after.get(name, {}))
    )


# -- how it reads ----------------------------------------------------------------------------------


def headline(verdict: Verdict) -> str:
    drift = verdict.evaluation
    assert drift is not None and verdict.golden is not None and verdict.current is not None
    accuracy = next((m for m in drift.metrics if m.name == "accuracy"), None)
    moved = f"; {describe_metric(accuracy)}" if accuracy is not None else ""
    if verdict.reason is Reason.IDENTICAL:
        return "evaluation identical to the golden" + (
            " under a changed fingerprint" if verdict.changed else ""
        )
    if verdict.reason is Reason.WITHIN_TOLERANCE:
        return (
            f"passed within tolerance: {len(drift.tolerated)} of {drift.cases} cases changed "
            f"output, each within {verdict.tolerance:g} nats{moved}"
        )
    count = f"{len(drift.changed)} of {drift.cases} cases changed output or verdict"
    if verdict.reason is Reason.MODEL_CHANGED:
        return (
            f"evaluation recorded with {verdict.golden.model_ref}, this run uses "
            f"{verdict.current.model_ref}: {count}{moved}; review and run --snapshot-update"
        )
    if verdict.reason is Reason.REQUEST_CHANGED:
        return (
            "the evaluation's cases or requests changed since the golden was recorded: "
            f"{count}{moved}; review and run --snapshot-update"
        )
    how = (
        "beyond tolerance"
        if verdict.mode is Mode.TOLERANCE
        else "strict mode"
        if verdict.mode is Mode.STRICT
        else "exact mode"
    )
    return f"{count} ({how}){moved}"


def describe_metric(change: MetricChange) -> str:
    """``accuracy 0.275 [0.161, 0.428] -> 0.300 [0.181, 0.454] (11/40 -> 12/40)``."""
    return (
        f"{change.name} {_figure(change.golden)} -> {_figure(change.current)} "
        f"({_fraction(change.golden)} -> {_fraction(change.current)})"
    )


def _figure(figures: Mapping[str, Any]) -> str:
    if not figures.get("total"):
        return "n/a"
    return f"{figures['estimate']:.3f} [{figures['lower']:.3f}, {figures['upper']:.3f}]"


def _fraction(figures: Mapping[str, Any]) -> str:
    return f"{figures.get('successes', 0)}/{figures.get('total', 0)}"


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


def _case_line(change: CaseChange, describe_call: Describe) -> str:
    line = f"  {change.id}: {_shown(change.golden_output)} -> {_shown(change.output)}"
    if change.golden_verdict != change.verdict:
        line += f" ({change.golden_verdict} -> {change.verdict})"
    else:
        line += f" (still {change.verdict})"
    if change.call is not None and change.call.reason is not Reason.IDENTICAL:
        line += f": {describe_call(change.call)}"
    return line


def evidence(verdict: Verdict, describe_call: Describe) -> list[str]:
    """The cases by id (old -> new), then the metrics that moved with both intervals."""
    drift = verdict.evaluation
    assert drift is not None
    lines: list[str] = []
    for title, ids in (
        ("cases added", drift.added),
        ("cases removed", drift.removed),
        ("cases whose input or expected value changed", drift.redefined),
    ):
        if ids:
            lines.append(f"{title}: {', '.join(ids[:_CASES_SHOWN])}" + _more(ids))
    for title, changes in (
        ("cases whose output or verdict changed (golden -> this run):", drift.changed),
        ("cases that changed within tolerance (counted as the same):", drift.tolerated),
    ):
        if changes:
            lines.append(title)
            lines += [_case_line(change, describe_call) for change in changes[:_CASES_SHOWN]]
            if len(changes) > _CASES_SHOWN:
                lines.append(f"  … and {len(changes) - _CASES_SHOWN} more")
    if drift.metrics:
        lines.append("metrics that changed (golden -> this run, 95 % intervals):")
        lines += [f"  {describe_metric(change)}" for change in drift.metrics]
    return lines


def _more(ids: tuple[str, ...]) -> str:
    return f" … and {len(ids) - _CASES_SHOWN} more" if len(ids) > _CASES_SHOWN else ""
