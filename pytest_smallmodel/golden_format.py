"""The golden file format: one reviewable JSON document per assertion (docs/drift.md, "Files").

``serialize_record`` writes a ``GoldenRecord`` (output first, as lines, then the record; the same
record always gives the same bytes) and ``parse_golden`` reads one back, turning every problem
into a ``GoldenError`` that names the file and the field. Pure: no pytest, no syrupy, so the
CLI (``smallmodel review``, ``smallmodel compare``) reads goldens without loading pytest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.errors import GoldenError
from pytest_smallmodel.records import GoldenKind, GoldenRecord
from pytest_smallmodel.results import Step, TokenLogprob

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


class _Reader:
    """Typed access to a parsed golden that turns every surprise into a GoldenError."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, problem: str) -> GoldenError:
        return GoldenError(
            f"golden {self.path} is invalid: {problem}; run `pytest --snapshot-update` to "
            "replace it with this run's result"
        )

    def field(
        self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = ""
    ) -> Any:
        if key not in data:
            raise self.error(f"missing field {where}{key!r}")
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.error(f"field {where}{key!r} has the wrong type ({type(value).__name__})")
        return value

    def lines(self, data: Mapping[str, Any], key: str, where: str = "") -> str:
        value = self.field(data, key, list, where)
        if not all(isinstance(line, str) for line in value):
            raise self.error(f"field {where}{key!r} must be a list of strings (lines)")
        return "\n".join(value)

    def ints(self, data: Mapping[str, Any], key: str, where: str = "") -> tuple[int, ...]:
        value = self.field(data, key, list, where)
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
            raise self.error(f"field {where}{key!r} must be a list of token ids")
        return tuple(value)

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(f"{where} must be a number")
        try:
            return float(value)
        except ValueError:
            raise self.error(f"{where} must be a number") from None

    def token(self, value: Any, where: str) -> TokenLogprob:
        if not (isinstance(value, list) and len(value) == 3):
            raise self.error(f"{where} must be [token id, text, logprob]")
        token, text, logprob = value
        if not isinstance(token, int) or not isinstance(text, str):
            raise self.error(f"{where} must be [token id, text, logprob]")
        return TokenLogprob(token, text, self.number(logprob, where))

    def step(self, value: Any, index: int) -> Step:
        where = f"steps[{index}]."
        if not isinstance(value, dict):
            raise self.error(f"steps[{index}] must be an object")
        token = self.field(value, "token", int, where)
        text = self.field(value, "text", str, where)
        logprob = self.number(
            self.field(value, "logprob", (int, float, str), where), f"{where}logprob"
        )
        top = self.field(value, "top", list, where)
        return Step(
            token,
            text,
            logprob,
            tuple(self.token(t, f"{where}top[{i}]") for i, t in enumerate(top)),
        )


class NewerGoldenError(GoldenError):
    """A golden of a format newer than this version reads: only upgrading can compare it."""


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse_golden(text: str, *, path: str) -> GoldenRecord:
    """Read a golden file's text; any problem raises GoldenError naming ``path`` and the problem."""
    reader = _Reader(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise reader.error("it is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise reader.error(
            f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise reader.error("the top level must be a JSON object")
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
            raise reader.error(
                f"format version {version} is not supported (this pytest-smallmodel reads "
                f"version {FORMAT_VERSION})"
            )
        raise reader.error("missing or invalid 'golden_format' version")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise reader.error(f"unknown kind {kind!r} (expected one of {', '.join(_KINDS)})")
    if kind == "text":
        return GoldenRecord(kind="text", text=reader.lines(data, "text"))
    if kind == "value":
        if "value" not in data:
            raise reader.error("missing field 'value'")
        return GoldenRecord(kind="value", value=data["value"])
    request = dict(reader.field(data, "request", dict))
    if "prompt" in request:
        request["prompt"] = reader.lines(request, "prompt", "request.")
    common: dict[str, Any] = {
        "model": reader.field(data, "model", str),
        "sha256": reader.field(data, "sha256", str),
        "request": request,
        "fingerprint": reader.field(data, "fingerprint", dict),
    }
    reader.ints(request, "prompt_tokens", "request.")
    if kind in ("generation", "extraction"):
        tokens = reader.ints(data, "tokens")
        steps = tuple(reader.step(s, i) for i, s in enumerate(reader.field(data, "steps", list)))
        if len(steps) != len(tokens) or any(
            s.token != t for s, t in zip(steps, tokens, strict=True)
        ):
            raise reader.error("'tokens' and the tokens of 'steps' disagree")
        finish = reader.field(data, "finish_reason", str)
        if finish not in ("stop", "length"):
            raise reader.error(f"finish_reason {finish!r} is not 'stop' or 'length'")
        return GoldenRecord(
            kind=kind,
            text=reader.lines(data, "text"),
            tokens=tokens,
            finish_reason=finish,
            steps=steps,
            **common,
        )
    if kind == "label":
        logprobs = reader.field(data, "logprobs", dict)
        return GoldenRecord(
            kind="label",
            label=reader.field(data, "label", str),
            label_logprobs={
                str(k): reader.number(v, f"logprobs[{k!r}]") for k, v in logprobs.items()
            },
            **common,
        )
    vector = reader.field(data, "vector", list)
    numbers = tuple(reader.number(x, f"vector[{i}]") for i, x in enumerate(vector))
    if data.get("dimensions") != len(numbers):
        raise reader.error(f"'dimensions' does not match the vector's length {len(numbers)}")
    return GoldenRecord(kind="embedding", vector=numbers, **common)


__all__ = ["FORMAT_VERSION", "parse_golden", "serialize_record"]
