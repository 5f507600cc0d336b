"""One output against what its case expects: the verdict as data (correct, why not, fields).

A label must equal the expected one and the expected label must be among the task's labels; an
object of fields is compared field by field with deepdiff (so ``1`` and ``1.0`` are the same
number, and nested values are compared whole); text checks all have to hold. An output of the
wrong kind for the case (a dict where a label was expected) is a mistake in the dataset or the
task, not a wrong answer, and stops the evaluation with a message naming the case.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.evaluation.cases import Case, ExpectedFields, ExpectedLabel, TextChecks
from pytest_smallmodel.evaluation.stats import EvaluationError


@dataclass(frozen=True)
class Verdict:
    correct: bool
    detail: str  # why it is wrong ("" when correct)
    field_hits: Mapping[str, bool] = field(default_factory=dict)  # expected field -> matched
    extra_fields: int = 0  # fields the output has and the case does not expect


def score(case: Case, output: Any, labels: Sequence[str] | None = None) -> Verdict:
    expected = case.expected
    if isinstance(expected, ExpectedLabel):
        return _label(case, expected, output, labels)
    if isinstance(expected, ExpectedFields):
        return _fields(case, expected, output)
    return _text(case, expected, output)


def _wrong_kind(case: Case, wanted: str, output: Any) -> EvaluationError:
    shown = repr(output)
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    return EvaluationError(
        f"case {case.id!r} ({case.where}): it expects {wanted}, but the task returned "
        f"{type(output).__name__} {shown}: the dataset's 'expected' and the task do not fit "
        "(a label for classify, an object of fields for extract, checks for a text)"
    )


def _label(
    case: Case, expected: ExpectedLabel, output: Any, labels: Sequence[str] | None
) -> Verdict:
    if not isinstance(output, str):
        raise _wrong_kind(case, f"the label {expected.label!r}", output)
    known = list(labels) if labels is not None else list(getattr(output, "logprobs", {}) or [])
    if known and expected.label not in known:
        raise EvaluationError(
            f"case {case.id!r} ({case.where}): its expected label {expected.label!r} is not "
            f"among the task's labels ({', '.join(map(repr, known))}): fix the dataset or the "
            "labels the task passes to classify"
        )
    if str(output) == expected.label:
        return Verdict(True, "")
    return Verdict(False, f"expected {expected.label!r}, got {str(output)!r}")


def _same(expected: Any, actual: Any) -> bool:
    from deepdiff import DeepDiff

    return not DeepDiff(expected, actual, ignore_numeric_type_changes=True)


def _fields(case: Case, expected: ExpectedFields, output: Any) -> Verdict:
    if not isinstance(output, Mapping):
        raise _wrong_kind(case, "an object of fields", output)
    hits = {
        name: name in output and _same(value, output[name])
        for name, value in expected.fields.items()
    }
    extra = len(set(output) - set(expected.fields))
    wrong = [
        f"{name}: expected {json.dumps(expected.fields[name], ensure_ascii=False)}, got "
        + (json.dumps(output[name], ensure_ascii=False) if name in output else "nothing")
        for name, hit in hits.items()
        if not hit
    ]
    return Verdict(not wrong, "; ".join(wrong), hits, extra)


def _text(case: Case, checks: TextChecks, output: Any) -> Verdict:
    if checks.embedding is not None:
        if not isinstance(output, list) or not all(isinstance(x, int | float) for x in output):
            raise _wrong_kind(case, "an embedding (checks.embedding)", output)
        cosine = _cosine(checks.embedding, output)
        if len(output) != len(checks.embedding):
            return Verdict(
                False,
                f"the embedding has {len(output)} dimensions, the reference "
                f"{len(checks.embedding)}",
            )
        assert checks.min_cosine is not None
        if cosine < checks.min_cosine:
            return Verdict(False, f"cosine {cosine:.4f} < {checks.min_cosine}")
        if not (
            checks.equals or checks.contains or checks.regex or checks.schema or checks.max_chars
        ):
            return Verdict(True, "")
    if not isinstance(output, str):
        raise _wrong_kind(case, "a text (checks)", output)
    text = str(output)
    failed = []
    if checks.equals is not None and text != checks.equals:
        failed.append(f"not equal to {checks.equals!r}")
    failed += [f"does not contain {part!r}" for part in checks.contains if part not in text]
    if checks.regex is not None and re.search(checks.regex, text) is None:
        failed.append(f"does not match /{checks.regex}/")
    if checks.max_chars is not None and len(text) > checks.max_chars:
        failed.append(f"{len(text)} characters > {checks.max_chars}")
    if checks.schema is not None:
        failed += _schema_problems(text, checks.schema)
    return Verdict(not failed, "; ".join(failed))


def _schema_problems(text: str, schema: Mapping[str, Any]) -> list[str]:
    import jsonschema

    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"not JSON ({error.msg})"]
    problems = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path)
    )
    return [f"schema: {problems[0].message}"] if problems else []


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return -1.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else -1.0
