"""The golden file format: one reviewable JSON document per assertion (docs/drift.md, "Files").

``serialize_record`` writes a ``GoldenRecord`` (output first, as lines, then the record; the same
record always gives the same bytes) and ``parse_golden`` reads one back, turning every problem
into a ``GoldenError`` that names the file and the field. Pure: no pytest, no syrupy, so the
CLI (``smallmodel review``, ``smallmodel compare``) reads goldens without loading pytest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from pytest_smallmodel.common.errors import GoldenError
from pytest_smallmodel.goldens.document import (
    DocumentProblem,
    Inline,
    joined,
    lines,
    quoted,
    render,
)
from pytest_smallmodel.goldens.kinds import FORMATS
from pytest_smallmodel.goldens.records import GoldenRecord

FORMAT_VERSION = 1


def serialize_record(record: GoldenRecord) -> str:
    """The golden file's text: output first (as lines), then the record. Same record, same bytes."""
    return render(_document(record), 0) + "\n"


def _document(record: GoldenRecord) -> dict[str, Any]:
    kind = FORMATS[record.kind]
    document: dict[str, Any] = kind.output(record, _Files(""))
    document["golden_format"] = FORMAT_VERSION
    document["kind"] = record.kind
    if kind.model_result:
        document["model"] = record.model
        document["sha256"] = record.sha256
        document["request"] = _request_for_file(record.request or {})
    document.update(kind.fields(record))
    if kind.model_result:
        document["fingerprint"] = record.fingerprint
    return document


class _Files:
    """This module's writer and reader, for a kind whose goldens hold others (``GoldenFiles``);
    a nested golden's problems name the file that holds it."""

    def __init__(self, path: str) -> None:
        self._path = path

    def document(self, record: GoldenRecord) -> dict[str, Any]:
        return _document(record)

    def parse(self, text: str) -> GoldenRecord:
        return parse_golden(text, path=f"{self._path} (a case)")


def _request_for_file(request: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in request.items():
        if key == "prompt":
            shown[key] = lines(str(value))
        elif key in ("prompt_tokens", "settings", "stop", "labels"):
            shown[key] = Inline(value)
        else:
            shown[key] = value
    return shown


def _invalid(path: str, problem: str) -> GoldenError:
    return GoldenError(
        f"golden {path} is invalid: {problem}; run `pytest --snapshot-update` to "
        "replace it with this run's result"
    )


@cache
def golden_schema() -> dict[str, Any]:
    text = resources.files("pytest_smallmodel").joinpath("golden.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Any:
    """A validator of golden.schema.json with its ``$ref``s written out in place (the schema is
    not recursive): the same rules, checked twice as fast as resolving references per item."""
    import jsonschema

    schema = golden_schema()
    return jsonschema.Draft202012Validator(_inline_refs(schema, schema["$defs"]))


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, Mapping):
        if set(node) == {"$ref"}:
            return _inline_refs(defs[str(node["$ref"]).removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(value, defs) for value in node]
    return node


@lru_cache(maxsize=256)
def _schema_problem_of(text: str) -> str | None:
    """``_schema_problem`` of a golden's text, remembered: a test's golden is read before the
    engine decodes (tolerance mode's batched check) and again by the comparison."""
    return _schema_problem(json.loads(text))


def _schema_problem(data: Mapping[str, Any]) -> str | None:
    """The most telling schema violation, in words that name the field, or None."""
    # The first problem in document order: the same error whatever jsonschema version ranks.
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    error = errors[0]
    where = _field_path(error.absolute_path)
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else error.message
        return f"missing field {(where + '.' if where else '') + name!r}"
    if error.validator in ("type", "oneOf", "prefixItems", "minItems", "maxItems"):
        return f"field {where!r} has the wrong type ({type(error.instance).__name__})"
    if error.validator in ("enum", "const"):
        allowed = error.schema.get("enum", [error.schema.get("const")])
        return f"{where} {error.instance!r} is not one of {', '.join(map(repr, allowed))}"
    return f"field {where!r}: {error.message}"


def _field_path(parts: Sequence[str | int]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class NewerGoldenError(GoldenError):
    """A golden of a format newer than this version reads: only upgrading can compare it."""


def parse_golden(text: str, *, path: str) -> GoldenRecord:
    """Read a golden file's text; any problem raises GoldenError naming ``path`` and the problem.

    The file's shape is checked against golden.schema.json; what one field cannot say alone
    (tokens agree with steps, dimensions with the vector) is checked here.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(path, "it is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid(
            path, f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise _invalid(path, "the top level must be a JSON object")
    version = data.get("golden_format")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise NewerGoldenError(
                f"golden {path} was written by a newer pytest-smallmodel (golden format "
                f"{version}; this version reads format {FORMAT_VERSION}): upgrade "
                "pytest-smallmodel. --snapshot-update would rewrite it in the older format, so "
                "it leaves this golden alone"
            )
        if isinstance(version, int) and not isinstance(version, bool):
            raise _invalid(
                path,
                f"format version {version} is not supported (this pytest-smallmodel reads "
                f"version {FORMAT_VERSION})",
            )
        raise _invalid(path, "missing or invalid 'golden_format' version")
    name = data.get("kind")
    kind = FORMATS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise _invalid(path, f"unknown kind {name!r} (expected one of {', '.join(FORMATS)})")
    problem = _schema_problem_of(text)
    if problem is not None:
        raise _invalid(path, problem)
    common: dict[str, Any] = {}
    if kind.model_result:
        request = dict(data["request"])
        if "prompt" in request:
            request["prompt"] = joined(request["prompt"])
        common = {
            "model": data["model"],
            "sha256": data["sha256"],
            "request": request,
            "fingerprint": data["fingerprint"],
        }
    try:
        record = kind.read(data, common, _Files(path))
    except DocumentProblem as error:
        raise _invalid(path, str(error)) from None
    if kind.model_result:
        problem = consistency_problem(record)
        if problem is not None:
            raise _invalid(path, problem)
    return record


# -- consistency: what a reviewer reads must follow from what is compared -------------------------


def consistency_problem(record: GoldenRecord) -> str | None:
    """What in a model result's golden does not follow from its tokens and scores, or None.

    Comparisons read token ids, label scores and vectors; a reviewer reads the text, the step
    texts, the label and the fields. A hand edit of the latter would pass unnoticed, so the
    golden must be one that a model could have written. The checks need no model: the model
    fields agree with the fingerprint, and each kind checks its own fields (a generation's text
    is what detokenizing the step pieces gives, a label is the best scored one, ...).
    ``drift.rules.text_problem`` adds what only the model can tell (the pieces of its token ids).
    """
    for key in ("model", "sha256"):
        recorded = (record.fingerprint or {}).get(key)
        if recorded is not None and recorded != getattr(record, key):
            return (
                f"field {key!r} is {getattr(record, key)!r} but 'fingerprint.{key}' is "
                f"{recorded!r}: both name the model that made this result"
            )
    return FORMATS[record.kind].consistency_problem(record)


__all__ = ["FORMAT_VERSION", "consistency_problem", "parse_golden", "quoted", "serialize_record"]
