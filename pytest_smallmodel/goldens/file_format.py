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
from pytest_smallmodel.common.results import Step, TokenLogprob
from pytest_smallmodel.goldens.records import GoldenKind, GoldenRecord

FORMAT_VERSION = 1
_KINDS: tuple[GoldenKind, ...] = ("generation", "extraction", "label", "embedding", "text", "value")


# -- file format ---------------------------------------------------------------------------------


class _Inline:
    """Render this value on a single line (steps, settings, token arrays)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _scalar(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # inf logprob from a grammar-masked step: JSON has no infinity
        return json.dumps(str(value))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return _scalar(value)


def _render(value: Any, indent: int) -> str:
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, _Inline):
        return _inline(value.value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{_scalar(k)}: {_render(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value or all(isinstance(v, int | float | bool) or v is None for v in value):
            return _inline(value)
        return "[\n" + ",\n".join(f"{inner}{_render(v, indent + 1)}" for v in value) + f"\n{pad}]"
    return _scalar(value)


def _lines(text: str) -> list[str]:
    # split("\n") and "\n".join() are exact inverses, so a golden restores the text byte for byte.
    return text.split("\n")


def _request_for_file(request: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in request.items():
        if key == "prompt":
            shown[key] = _lines(str(value))
        elif key in ("prompt_tokens", "settings", "stop", "labels"):
            shown[key] = _Inline(value)
        else:
            shown[key] = value
    return shown


def _step_for_file(step: Step) -> _Inline:
    return _Inline(
        {
            "token": step.token,
            "text": step.text,
            "logprob": step.logprob,
            "top": [[t.token, t.text, t.logprob] for t in step.top],
        }
    )


def serialize_record(record: GoldenRecord) -> str:
    """The golden file's text: output first (as lines), then the record. Same record, same bytes."""
    document: dict[str, Any] = {}
    if record.kind in ("generation", "extraction", "text"):
        document["text"] = _lines(record.text or "")
    elif record.kind == "label":
        document["label"] = record.label
    elif record.kind == "value":
        document["value"] = record.value
    document["golden_format"] = FORMAT_VERSION
    document["kind"] = record.kind
    if record.kind in ("text", "value"):
        return _render(document, 0) + "\n"
    document["model"] = record.model
    document["sha256"] = record.sha256
    document["request"] = _request_for_file(record.request or {})
    if record.kind in ("generation", "extraction"):
        document["finish_reason"] = record.finish_reason
        document["tokens"] = _Inline(list(record.tokens))
        document["steps"] = [_step_for_file(step) for step in record.steps]
    elif record.kind == "label":
        document["logprobs"] = _Inline(dict(record.label_logprobs or {}))
    elif record.kind == "embedding":
        document["dimensions"] = len(record.vector or ())
        document["vector"] = _Inline(list(record.vector or ()))
    document["fingerprint"] = record.fingerprint
    return _render(document, 0) + "\n"


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


def _number(value: str | float) -> float:
    return float(value)  # the schema admits numbers and "inf" / "-inf" / "nan" only


def _step(data: Mapping[str, Any]) -> Step:
    return Step(
        data["token"],
        data["text"],
        _number(data["logprob"]),
        tuple(TokenLogprob(token, text, _number(logprob)) for token, text, logprob in data["top"]),
    )


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
    kind = data.get("kind")
    if kind not in _KINDS:
        raise _invalid(path, f"unknown kind {kind!r} (expected one of {', '.join(_KINDS)})")
    problem = _schema_problem_of(text)
    if problem is not None:
        raise _invalid(path, problem)
    if kind == "text":
        return GoldenRecord(kind="text", text="\n".join(data["text"]))
    if kind == "value":
        return GoldenRecord(kind="value", value=data["value"])
    request = dict(data["request"])
    if "prompt" in request:
        request["prompt"] = "\n".join(request["prompt"])
    common: dict[str, Any] = {
        "model": data["model"],
        "sha256": data["sha256"],
        "request": request,
        "fingerprint": data["fingerprint"],
    }
    if kind in ("generation", "extraction"):
        tokens = tuple(data["tokens"])
        steps = tuple(_step(step) for step in data["steps"])
        if [s.token for s in steps] != list(tokens):
            raise _invalid(path, "'tokens' and the tokens of 'steps' disagree")
        return GoldenRecord(
            kind=kind,
            text="\n".join(data["text"]),
            tokens=tokens,
            finish_reason=data["finish_reason"],
            steps=steps,
            **common,
        )
    if kind == "label":
        return GoldenRecord(
            kind="label",
            label=data["label"],
            label_logprobs={str(k): _number(v) for k, v in data["logprobs"].items()},
            **common,
        )
    vector = tuple(float(x) for x in data["vector"])
    if data["dimensions"] != len(vector):
        raise _invalid(path, f"'dimensions' does not match the vector's length {len(vector)}")
    return GoldenRecord(kind="embedding", vector=vector, **common)


__all__ = ["FORMAT_VERSION", "parse_golden", "serialize_record"]
