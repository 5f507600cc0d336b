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
from pytest_smallmodel.common.results import Step, TokenLogprob, cut_at_stop
from pytest_smallmodel.goldens import evaluation_record
from pytest_smallmodel.goldens.records import LOGPROB_DECIMALS, GoldenKind, GoldenRecord

FORMAT_VERSION = 1
_KINDS: tuple[GoldenKind, ...] = (
    *("generation", "extraction", "label", "embedding", "text", "value", "evaluation"),
)


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
    return _render(_document(record), 0) + "\n"


def _document(record: GoldenRecord) -> dict[str, Any]:
    if record.kind == "evaluation":
        return {**evaluation_record.document(record, _document), "golden_format": FORMAT_VERSION}
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
        return document
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
    return document


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
    if kind == "evaluation":
        return evaluation_record.parse(
            data,
            invalid=lambda problem: _invalid(path, problem),
            parse_result=lambda nested: parse_golden(nested, path=f"{path} (a case)"),
        )
    request = dict(data["request"])
    if "prompt" in request:
        request["prompt"] = "\n".join(request["prompt"])
    common: dict[str, Any] = {
        "model": data["model"],
        "sha256": data["sha256"],
        "request": request,
        "fingerprint": data["fingerprint"],
    }
    record = _model_record(kind, data, common, path)
    problem = consistency_problem(record)
    if problem is not None:
        raise _invalid(path, problem)
    return record


def _model_record(
    kind: GoldenKind, data: Mapping[str, Any], common: Mapping[str, Any], path: str
) -> GoldenRecord:
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


# -- consistency: what a reviewer reads must follow from what is compared -------------------------

# A token's piece as the engine writes it: undecodable bytes of a split character as \xNN.
_BYTE_ESCAPE_RE = re.compile(r"\\x([0-9a-f]{2})")
# Control tokens (<|im_end|>, </s>) have a piece but no text: detokenizing leaves them out.
_CONTROL_PIECE_RE = re.compile(r"^<[^<>\s]+>$")
# Label logprobs are stored rounded: two stored values may differ by up to one unit of the
# last decimal from the order of the unrounded ones that chose the label.
_ROUNDING_SLACK = 2 * 10.0**-LOGPROB_DECIMALS


def consistency_problem(record: GoldenRecord) -> str | None:
    """What in a model result's golden does not follow from its tokens and scores, or None.

    Comparisons read token ids, label scores and vectors; a reviewer reads the text, the step
    texts, the label and the fields. A hand edit of the latter would pass unnoticed, so the
    golden must be one that a model could have written. The checks need no model: the text
    is what detokenizing the step pieces gives, each token id has one piece wherever it is
    named, the label is the best scored one, the model fields agree with the fingerprint.
    ``drift.text_problem`` adds what only the model can tell (the pieces of its token ids).
    """
    for key in ("model", "sha256"):
        recorded = (record.fingerprint or {}).get(key)
        if recorded is not None and recorded != getattr(record, key):
            return (
                f"field {key!r} is {getattr(record, key)!r} but 'fingerprint.{key}' is "
                f"{recorded!r}: both name the model that made this result"
            )
    if record.kind in ("generation", "extraction"):
        return _pieces_problem(record) or _text_problem(record) or _fields_problem(record)
    if record.kind == "label":
        return _label_problem(record)
    return None


def _pieces_problem(record: GoldenRecord) -> str | None:
    seen: dict[int, tuple[str, str]] = {}
    for index, step in enumerate(record.steps):
        named = [(step.token, step.text, f"steps[{index}].text")]
        named += [(t.token, t.text, f"steps[{index}].top[{j}]") for j, t in enumerate(step.top)]
        for token, text, where in named:
            first = seen.setdefault(token, (text, where))
            if first[0] != text:
                return (
                    f"token {token} reads {text!r} in {where} but {first[0]!r} in {first[1]}: "
                    "a token id has one text"
                )
    return None


def _text_problem(record: GoldenRecord) -> str | None:
    candidates = _text_candidates(record, (record.request or {}).get("stop") or ())
    if (record.text or "") in candidates:
        return None
    shown = candidates[-1] if record.finish_reason == "stop" else candidates[0]
    return (
        f"field 'text' is {quoted(record.text or '')} but its tokens read {quoted(shown)} "
        "(the text of 'steps'): the text was edited apart from the tokens"
    )


def _text_candidates(record: GoldenRecord, stop: Sequence[str]) -> list[str]:
    """The texts the engine can have made of these steps: it leaves out a final end token, and
    control tokens elsewhere; it decodes the bytes of split characters together."""
    pieces = [step.text for step in record.steps]
    ends = [False, True] if record.finish_reason == "stop" and pieces else [False]
    found: list[str] = []
    for drop_end in ends:
        kept = pieces[:-1] if drop_end else pieces
        for without_control in (False, True):
            chosen = [p for p in kept if not (without_control and _CONTROL_PIECE_RE.match(p))]
            joined = "".join(chosen)
            for text in (joined, _decode_escapes(joined)):
                cut = cut_at_stop(text, stop)
                if cut not in found:
                    found.append(cut)
    return found


def _decode_escapes(text: str) -> str:
    def byte(match: re.Match[str]) -> str:
        value = int(match.group(1), 16)
        # backslashreplace escapes only bytes that are not UTF-8 alone (0x80 and up); a lower
        # one is text that happens to look like an escape.
        return chr(0xDC00 + value) if value >= 0x80 else match.group(0)

    raw = _BYTE_ESCAPE_RE.sub(byte, text)
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _fields_problem(record: GoldenRecord) -> str | None:
    if record.kind != "extraction":
        return None
    try:
        json.loads(record.text or "")
    except json.JSONDecodeError as error:
        return (
            f"field 'text' of an extraction is not JSON ({error.msg} at column {error.colno}): "
            "an extraction's fields are its text parsed"
        )
    return None


def _label_problem(record: GoldenRecord) -> str | None:
    scores = dict(record.label_logprobs or {})
    labels = list((record.request or {}).get("labels") or scores)
    unknown = [name for name in scores if name not in labels]
    if unknown:
        return f"'logprobs' scores {unknown[0]!r}, which is not one of 'request.labels'"
    if record.label not in scores:
        choices = ", ".join(map(repr, scores)) or "(none)"
        return f"field 'label' is {record.label!r}, not one of the scored labels {choices}"
    best = max(scores, key=lambda name: scores[name])
    if scores[record.label] < scores[best] - _ROUNDING_SLACK:
        return (
            f"field 'label' is {record.label!r} (logprob {scores[record.label]}) but "
            f"{best!r} scores best ({scores[best]}): the label is the best scored one"
        )
    return None


def quoted(text: str, limit: int = 80) -> str:
    """``text`` as a JSON string for a message, shortened past ``limit`` characters."""
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= limit else shown[: limit - 4] + '…"'


__all__ = ["FORMAT_VERSION", "consistency_problem", "parse_golden", "quoted", "serialize_record"]
