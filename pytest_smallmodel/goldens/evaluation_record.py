"""An evaluation as a golden: every case's id, input, expected value, output and verdict, the model
call its task made, and the metrics with their intervals (never the timings: they change on every
run).

The model call (its request, and the label scores or tokens it produced, a nested record of the
kind a ``classify``/``extract``/``generate`` golden holds) is what lets drift teacher-force a case
in tolerance mode and ``smallmodel compare`` replay it on another model. The model's name, file
digest and fingerprint are stored once, for the evaluation; the nested records share them.

``file_format`` hands in its own writer and reader for the nested records (``document_of``,
``parse``), so this module only knows the evaluation's own fields. Pure: no pytest, no syrupy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_smallmodel.common.errors import GoldenError
from pytest_smallmodel.goldens.records import GoldenRecord

CaseVerdict = Literal["correct", "wrong", "error"]
CASE_VERDICTS: tuple[CaseVerdict, ...] = ("correct", "wrong", "error")
# What a nested record shares with its evaluation, written once at the top.
_SHARED = ("golden_format", "model", "sha256", "fingerprint")


@dataclass(frozen=True)
class CaseRecord:
    id: str
    row: Mapping[str, Any]  # the case as a dataset row: "input", and "expected" or "checks"
    output: Any  # what the task returned, as JSON (None when it raised)
    verdict: CaseVerdict
    detail: str  # why it is wrong, or the exception it raised ("" when correct)
    result: GoldenRecord | None  # the last model call the task made (None: none finished)
    # That call's live result, this run only: drift teacher-forces its stored tokens on it.
    live: object = field(default=None, compare=False, repr=False)

    @property
    def expected(self) -> Any:
        return self.row.get("expected", {"checks": self.row.get("checks")})


@dataclass(frozen=True)
class EvaluationRecord:
    cases: tuple[CaseRecord, ...]
    # accuracy, per label and per field: counts with estimate and interval (EvaluationReport's
    # to_dict without latency and cases)
    metrics: Mapping[str, Any]

    def by_id(self) -> dict[str, CaseRecord]:
        return {case.id: case for case in self.cases}


def evaluation_golden(cases: Sequence[CaseRecord], metrics: Mapping[str, Any]) -> GoldenRecord:
    """The golden record of an evaluation; model and fingerprint are those of its first call."""
    first = next((case.result for case in cases if case.result is not None), None)
    plain_metrics = json.loads(json.dumps(metrics, allow_nan=False))
    return GoldenRecord(
        kind="evaluation",
        model=first.model if first else None,
        sha256=first.sha256 if first else None,
        fingerprint=first.fingerprint if first else None,
        evaluation=EvaluationRecord(tuple(cases), plain_metrics),
    )


def document(
    record: GoldenRecord, document_of: Callable[[GoldenRecord], dict[str, Any]]
) -> dict[str, Any]:
    """The file's document (``file_format`` renders it); ``document_of`` is its writer of one
    model result's document, from which the fields the evaluation holds once are left out."""
    evaluation = record.evaluation
    assert isinstance(evaluation, EvaluationRecord)
    cases = []
    for case in evaluation.cases:
        entry: dict[str, Any] = {"id": case.id, **case.row, "output": case.output}
        entry["verdict"] = case.verdict
        entry["detail"] = case.detail
        if case.result is not None:
            nested = document_of(case.result)
            entry["result"] = {k: v for k, v in nested.items() if k not in _SHARED}
        else:
            entry["result"] = None
        cases.append(entry)
    return {
        "metrics": evaluation.metrics,
        "cases": cases,
        "golden_format": None,  # file_format fills in its version (kept in this order)
        "kind": "evaluation",
        "model": record.model,
        "sha256": record.sha256,
        "fingerprint": record.fingerprint,
    }


def parse(
    data: Mapping[str, Any],
    *,
    invalid: Callable[[str], GoldenError],
    parse_result: Callable[[str], GoldenRecord],
) -> GoldenRecord:
    """An evaluation golden's record from its (schema-checked) JSON; ``parse_result`` reads one
    nested model result's text, ``invalid(problem)`` is the error naming the file."""
    cases: list[CaseRecord] = []
    seen: set[str] = set()
    for index, entry in enumerate(data["cases"]):
        where = f"cases[{index}]"
        if entry["id"] in seen:
            return _raise(invalid(f"{where}.id {entry['id']!r} appears twice: case ids are unique"))
        seen.add(entry["id"])
        result = None
        if entry["result"] is not None:
            nested = {**entry["result"], **{k: data[k] for k in _SHARED}}
            try:
                result = parse_result(json.dumps(nested, ensure_ascii=False))
            except GoldenError as error:
                problem = str(error).partition(" is invalid: ")[2] or str(error)
                problem = problem.partition("; run `pytest --snapshot-update`")[0]
                return _raise(invalid(f"{where}.result ({entry['id']!r}): {problem}"))
        row = {key: entry[key] for key in ("input", "expected", "checks") if key in entry}
        cases.append(
            CaseRecord(
                id=entry["id"],
                row=row,
                output=entry["output"],
                verdict=entry["verdict"],
                detail=entry["detail"],
                result=result,
            )
        )
    record = GoldenRecord(
        kind="evaluation",
        model=data["model"],
        sha256=data["sha256"],
        fingerprint=data["fingerprint"],
        evaluation=EvaluationRecord(tuple(cases), data["metrics"]),
    )
    inconsistent = consistency_problem(record)
    if inconsistent is not None:
        return _raise(invalid(inconsistent))
    return record


def _raise(error: GoldenError) -> GoldenRecord:
    raise error


def consistency_problem(record: GoldenRecord) -> str | None:
    """What a hand edit broke: the accuracy counts the verdicts, and a case that raised has no
    output."""
    evaluation = record.evaluation
    assert isinstance(evaluation, EvaluationRecord)
    accuracy = evaluation.metrics.get("accuracy", {})
    correct = sum(case.verdict == "correct" for case in evaluation.cases)
    if accuracy.get("total") != len(evaluation.cases):
        return (
            f"field 'metrics.accuracy.total' is {accuracy.get('total')!r} but the golden has "
            f"{len(evaluation.cases)} cases"
        )
    if accuracy.get("successes") != correct:
        return (
            f"field 'metrics.accuracy.successes' is {accuracy.get('successes')!r} but "
            f"{correct} case(s) have verdict 'correct': a verdict or the accuracy was edited"
        )
    for index, case in enumerate(evaluation.cases):
        if case.verdict == "error" and case.output is not None:
            return f"field 'cases[{index}].output' of a case that raised must be null"
    return None


__all__ = [
    "CASE_VERDICTS",
    "CaseRecord",
    "CaseVerdict",
    "EvaluationRecord",
    "consistency_problem",
    "document",
    "evaluation_golden",
    "parse",
]
