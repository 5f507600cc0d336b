"""An evaluation as a golden: every case's id, input, expected value, output and verdict, the model
call its task made, and the metrics with their intervals (never the timings: they change on every
run).

The model call (its request, and the label scores or tokens it produced, a nested record of the
kind a ``classify``/``extract``/``generate`` golden holds) is what lets drift teacher-force a case
in tolerance mode and ``smallmodel compare`` replay it on another model. The model's name, file
digest and fingerprint are stored once, for the evaluation; the nested records share them.

``file_format`` hands in its own writer and reader of a whole golden (``GoldenFiles``) for the
nested records, so this module only knows the evaluation's own fields. The live value is an
``evaluation.report.EvaluationReport``, a folder above: this kind stores whatever lists its cases
as it does (``Evaluated``), and stores each case's live call as the kind of model result it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pytest_smallmodel.common.errors import GoldenError
from pytest_smallmodel.goldens.document import DocumentProblem, GoldenFiles
from pytest_smallmodel.goldens.records import (
    CaseRecord,
    EvaluationRecord,
    GoldenRecord,
    json_normal,
)

# What a nested record shares with its evaluation, written once at the top.
_SHARED = ("golden_format", "model", "sha256", "fingerprint")


@runtime_checkable
class Evaluated(Protocol):
    """A live evaluation (an ``EvaluationReport``): its cases, each with the live model call its
    task made (``result`` still None), and its metrics."""

    def golden_cases(self) -> tuple[Sequence[CaseRecord], Mapping[str, Any]]: ...


class _CallFormat(Protocol):
    """The kind of golden a case's model call is stored as (``KindFormat``'s part for it)."""

    @property
    def stores(self) -> tuple[type, ...]: ...

    def record(self, value: Any) -> GoldenRecord: ...


class EvaluationFormat:
    kind = "evaluation"
    # It names a model and a fingerprint but holds no request of its own: each case's call does.
    model_result = False
    stores = (Evaluated,)

    def __init__(self, calls: Sequence[_CallFormat]) -> None:
        self._calls = tuple(calls)  # the kinds of model result a case's call may be

    def record(self, value: Evaluated) -> GoldenRecord:
        """Model and fingerprint are those of the first call."""
        cases, metrics = value.golden_cases()
        cases = [
            dataclasses.replace(case, result=self._call_record(case.live))
            if case.live is not None
            else case
            for case in cases
        ]
        first = next((case.result for case in cases if case.result is not None), None)
        return GoldenRecord(
            kind=self.kind,
            model=first.model if first else None,
            sha256=first.sha256 if first else None,
            fingerprint=first.fingerprint if first else None,
            evaluation=EvaluationRecord(tuple(cases), json_normal(metrics)),
        )

    def _call_record(self, live: object) -> GoldenRecord:
        kind = next(kind for kind in self._calls if isinstance(live, kind.stores))
        return kind.record(live)

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        evaluation = record.evaluation
        assert evaluation is not None
        cases = []
        for case in evaluation.cases:
            entry: dict[str, Any] = {"id": case.id, **case.row, "output": case.output}
            entry["verdict"] = case.verdict
            entry["detail"] = case.detail
            if case.result is not None:
                nested = files.document(case.result)
                entry["result"] = {k: v for k, v in nested.items() if k not in _SHARED}
            else:
                entry["result"] = None
            cases.append(entry)
        return {"metrics": evaluation.metrics, "cases": cases}

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {"model": record.model, "sha256": record.sha256, "fingerprint": record.fingerprint}

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        cases: list[CaseRecord] = []
        seen: set[str] = set()
        for index, entry in enumerate(data["cases"]):
            where = f"cases[{index}]"
            if entry["id"] in seen:
                raise DocumentProblem(
                    f"{where}.id {entry['id']!r} appears twice: case ids are unique"
                )
            seen.add(entry["id"])
            result = None
            if entry["result"] is not None:
                nested = {**entry["result"], **{k: data[k] for k in _SHARED}}
                try:
                    result = files.parse(json.dumps(nested, ensure_ascii=False))
                except GoldenError as error:
                    problem = str(error).partition(" is invalid: ")[2] or str(error)
                    problem = problem.partition("; run `pytest --snapshot-update`")[0]
                    raise DocumentProblem(f"{where}.result ({entry['id']!r}): {problem}") from None
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
            kind=self.kind,
            model=data["model"],
            sha256=data["sha256"],
            fingerprint=data["fingerprint"],
            evaluation=EvaluationRecord(tuple(cases), data["metrics"]),
        )
        inconsistent = self.consistency_problem(record)
        if inconsistent is not None:
            raise DocumentProblem(inconsistent)
        return record

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        """What a hand edit broke: the accuracy counts the verdicts, and a case that raised has
        no output."""
        evaluation = record.evaluation
        assert evaluation is not None
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
