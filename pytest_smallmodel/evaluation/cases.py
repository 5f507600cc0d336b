"""Labelled cases: an id, an input (a prompt or chat messages) and what the output should be.

What a case expects is one of three kinds, told apart by the row's key:

- ``"expected": "billing"`` -- a label (for ``classify``);
- ``"expected": {"amount": 12, "currency": "EUR"}`` -- fields of an object (for ``extract``);
- ``"checks": {"contains": "Paris", "max_chars": 80}`` -- checks on a text (``generate``,
  ``chat``): ``equals``, ``contains`` (a string or a list of them), ``regex``, ``schema`` (the
  text parsed as JSON must validate), ``max_chars``, and ``embedding`` with ``min_cosine``
  (for ``embed``: the cosine with the reference vector).

``load_cases`` reads a JSONL or CSV file; ``cases_from`` takes a Python list of such rows (or of
``Case`` objects). Every problem is one error naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.errors import ConfigError

Messages = tuple[Mapping[str, Any], ...]
CHECK_NAMES = ("equals", "contains", "regex", "schema", "max_chars", "embedding", "min_cosine")


@dataclass(frozen=True)
class ExpectedLabel:
    label: str

    def describe(self) -> str:
        return repr(self.label)


@dataclass(frozen=True)
class ExpectedFields:
    fields: Mapping[str, Any]

    def describe(self) -> str:
        return json.dumps(dict(self.fields), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class TextChecks:
    equals: str | None = None
    contains: tuple[str, ...] = ()
    regex: str | None = None
    schema: Mapping[str, Any] | None = None
    max_chars: int | None = None
    embedding: tuple[float, ...] | None = None
    min_cosine: float | None = None

    def describe(self) -> str:
        parts = []
        if self.equals is not None:
            parts.append(f"equals {self.equals!r}")
        parts += [f"contains {text!r}" for text in self.contains]
        if self.regex is not None:
            parts.append(f"matches /{self.regex}/")
        if self.schema is not None:
            parts.append("valid against the schema")
        if self.max_chars is not None:
            parts.append(f"at most {self.max_chars} characters")
        if self.embedding is not None:
            parts.append(f"cosine with the reference >= {self.min_cosine}")
        return ", ".join(parts)


Expected = ExpectedLabel | ExpectedFields | TextChecks


@dataclass(frozen=True)
class Case:
    """One labelled case; ``where`` names its file and line (or list index) in messages."""

    id: str
    input: str | Messages
    expected: Expected
    where: str = field(default="", compare=False)


def case_row(case: Case) -> dict[str, Any]:
    """The case as a dataset row without its id (what ``cases_from`` reads back)."""
    shown = case.input if isinstance(case.input, str) else [dict(m) for m in case.input]
    expected = case.expected
    if isinstance(expected, ExpectedLabel):
        return {"input": shown, "expected": expected.label}
    if isinstance(expected, ExpectedFields):
        return {"input": shown, "expected": dict(expected.fields)}
    checks: dict[str, Any] = {}
    if expected.equals is not None:
        checks["equals"] = expected.equals
    if expected.contains:
        checks["contains"] = list(expected.contains)
    for name in ("regex", "schema", "max_chars", "min_cosine"):
        if getattr(expected, name) is not None:
            checks[name] = getattr(expected, name)
    if expected.embedding is not None:
        checks["embedding"] = list(expected.embedding)
    return {"input": shown, "checks": checks}


def load_cases(path: str | Path) -> list[Case]:
    """Read a dataset: ``.jsonl`` (one JSON object a line) or ``.csv`` (columns ``id``,
    ``input``, and ``expected`` or ``checks``; a JSON object in ``expected`` means fields, an
    ``input`` that is a JSON list means chat messages)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ConfigError(
            f"{path}: a dataset is a .jsonl or .csv file, not {suffix or 'no suffix'}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the dataset ({error.strerror or error})") from None
    rows = list(_jsonl_rows(path, text) if suffix == ".jsonl" else _csv_rows(path, text))
    return _build(rows, path=str(path))


def cases_from(rows: Iterable[Case | Mapping[str, Any]], *, name: str = "cases") -> list[Case]:
    """Cases from a Python list of rows (dicts as in a JSONL file) or ``Case`` objects."""
    numbered: list[tuple[str, Case | Mapping[str, Any]]] = []
    for index, row in enumerate(rows):
        if isinstance(row, Case):
            numbered.append((f"{name}[{index}]", row))
        elif isinstance(row, Mapping):
            numbered.append((f"{name}[{index}]", dict(row)))
        else:
            raise ConfigError(f"{name}[{index}]: a case is a dict or a Case, not {row!r}")
    return _build(numbered, path=name)


def _jsonl_rows(path: Path, text: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: a case is a JSON object, not {type(row).__name__}")
        yield where, row


def _csv_rows(path: Path, text: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    missing = {"id", "input"} - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(f"{path}:1: the header needs the column(s) {', '.join(sorted(missing))}")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise ConfigError(f"{where}: more values than the header has columns")
        parsed: dict[str, Any] = {key: value for key, value in row.items() if value not in ("",)}
        for column, opening in (("input", "["), ("expected", "{"), ("checks", "{")):
            value = parsed.get(column)
            if isinstance(value, str) and value.lstrip().startswith(opening):
                try:
                    parsed[column] = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ConfigError(
                        f"{where}: field {column!r} starts like JSON but is not ({error.msg})"
                    ) from None
        yield where, parsed


def _build(rows: Sequence[tuple[str, Case | Mapping[str, Any]]], *, path: str) -> list[Case]:
    if not rows:
        raise ConfigError(f"{path}: the dataset has no cases")
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        case = row if isinstance(row, Case) else _case(where, row)
        if case.id in seen:
            raise ConfigError(
                f"{where}: field 'id': {case.id!r} is already the id of the case at "
                f"{seen[case.id]}; ids must be unique"
            )
        seen[case.id] = where
        cases.append(case)
    return cases


def _case(where: str, row: Mapping[str, Any]) -> Case:
    unknown = sorted(set(row) - {"id", "input", "expected", "checks"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; a case has id, input "
            "and expected (a label or an object of fields) or checks"
        )
    identifier = row.get("id")
    if isinstance(identifier, bool) or not isinstance(identifier, str | int) or identifier == "":
        raise ConfigError(f"{where}: field 'id' is missing or not a string or integer")
    if "input" not in row:
        raise ConfigError(f"{where}: field 'input' is missing (a prompt or chat messages)")
    return Case(str(identifier), _input(where, row["input"]), _expected(where, row), where)


def _input(where: str, value: Any) -> str | Messages:
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{where}: field 'input' is empty")
        return value
    if isinstance(value, list) and value:
        for index, message in enumerate(value):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise ConfigError(
                    f"{where}: field 'input', message {index}: a chat message is "
                    '{"role": "...", "content": "..."}'
                )
        return tuple(dict(message) for message in value)
    raise ConfigError(f"{where}: field 'input' is a prompt string or a list of chat messages")


def _expected(where: str, row: Mapping[str, Any]) -> Expected:
    if "expected" in row and "checks" in row:
        raise ConfigError(f"{where}: a case has either 'expected' or 'checks', not both")
    if "checks" in row:
        return _checks(where, row["checks"])
    if "expected" not in row:
        raise ConfigError(
            f"{where}: field 'expected' is missing (a label, an object of fields, or use "
            "'checks' for checks on a text)"
        )
    value = row["expected"]
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{where}: field 'expected' is an empty label")
        return ExpectedLabel(value)
    if isinstance(value, dict):
        if not value:
            raise ConfigError(f"{where}: field 'expected' is an object without fields")
        return ExpectedFields(dict(value))
    raise ConfigError(
        f"{where}: field 'expected' is a label (string) or an object of fields, not "
        f"{type(value).__name__}"
    )


def _checks(where: str, value: Any) -> TextChecks:
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{where}: field 'checks' is an object of checks ({', '.join(CHECK_NAMES)})"
        )
    unknown = sorted(set(value) - set(CHECK_NAMES))
    if unknown:
        raise ConfigError(
            f"{where}: field 'checks' has unknown check(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(CHECK_NAMES)}"
        )

    def bad(name: str, expected: str) -> ConfigError:
        return ConfigError(f"{where}: field 'checks.{name}' = {value[name]!r}: expected {expected}")

    equals = value.get("equals")
    if equals is not None and not isinstance(equals, str):
        raise bad("equals", "a string")
    contains = value.get("contains", ())
    if isinstance(contains, str):
        contains = (contains,)
    if not isinstance(contains, list | tuple) or not all(
        isinstance(text, str) and text for text in contains
    ):
        raise bad("contains", "a non-empty string or a list of them")
    regex = value.get("regex")
    if regex is not None:
        if not isinstance(regex, str):
            raise bad("regex", "a regular expression")
        try:
            re.compile(regex)
        except re.error as error:
            raise bad("regex", f"a valid regular expression ({error})") from None
    schema = value.get("schema")
    if schema is not None:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise bad("schema", f"a valid JSON Schema ({error.message})") from None
    max_chars = value.get("max_chars")
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
    ):
        raise bad("max_chars", "a positive integer")
    embedding = value.get("embedding")
    min_cosine = value.get("min_cosine")
    vector: tuple[float, ...] | None = None
    if (embedding is None) != (min_cosine is None):
        raise ConfigError(
            f"{where}: field 'checks': 'embedding' (the reference vector) and 'min_cosine' go "
            "together"
        )
    if embedding is not None:
        if (
            not isinstance(embedding, list)
            or not embedding
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in embedding
            )
        ):
            raise bad("embedding", "a non-empty list of finite numbers")
        vector = tuple(float(x) for x in embedding)
        if (
            isinstance(min_cosine, bool)
            or not isinstance(min_cosine, int | float)
            or not -1 <= min_cosine <= 1
        ):
            raise bad("min_cosine", "a number from -1 to 1")
    return TextChecks(
        equals=equals,
        contains=tuple(contains),
        regex=regex,
        schema=schema,
        max_chars=max_chars,
        embedding=vector,
        min_cosine=float(min_cosine) if min_cosine is not None else None,
    )


__all__ = [
    "Case",
    "Expected",
    "ExpectedFields",
    "ExpectedLabel",
    "TextChecks",
    "cases_from",
    "load_cases",
]
