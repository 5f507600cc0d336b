"""Writing one scalar key of one model's spec into pyproject.toml, and nothing else.

``smallmodel calibrate --write`` sets each calibrated model's ``tolerance``. A TOML round trip
would reformat the file (comments, order, quoting), so the edit is textual: a model declared as a
one-line inline table (``name = { ... }`` under ``[tool.smallmodel.models]``) gets the key inside
its braces, a model declared as a table (``[tool.smallmodel.models.name]``) gets the key's line
replaced or added under the header. Every other byte stays. The result is parsed again and must
equal the original with only that key changed, else nothing is written. The write is atomic.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_bytes
from pytest_smallmodel.common.errors import ConfigError

_HEADER_RE = re.compile(r"^\s*\[(?P<name>[^\[\]]+)\]\s*(#.*)?$")
MODELS_TABLE = "tool.smallmodel.models"


def set_model_key(pyproject: Path, model: str, key: str, value: float) -> None:
    """Set ``key = value`` in model ``model``'s spec in ``pyproject``, keeping every other byte."""
    text = Path(pyproject).read_bytes().decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    edited = _edited(text, model, key, repr(float(value)), newline)
    _check(pyproject, text, edited, model, key, value)
    atomic_write_bytes(Path(pyproject), edited.encode("utf-8"))


def _table_at(line: str) -> str | None:
    """The table a ``[header]`` line opens (quotes and spaces dropped); None for other lines."""
    body = line.rstrip("\r\n")
    header = _HEADER_RE.match(body)
    if header is None or body.lstrip().startswith("[["):
        return None
    return header["name"].strip().replace(" ", "").replace('"', "")


def _edited(text: str, model: str, key: str, value: str, newline: str) -> str:
    """``text`` with ``key = value`` in ``model``'s spec; ``text`` itself where no form this
    edit knows declares it (``_check`` then says to set it by hand)."""
    lines = text.splitlines(keepends=True)
    name = rf"(?:{re.escape(model)}|\"{re.escape(model)}\")"
    entry_re = re.compile(
        rf"^(?P<lead>\s*{name}\s*=\s*\{{)(?P<body>[^{{}}#]*)(?P<tail>\}}\s*(#.*)?)$"
    )
    table: str | None = None
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if (opened := _table_at(line)) is not None:
            table = opened
            if table == f"{MODELS_TABLE}.{model}":
                return _set_in_table(lines, index, key, value, newline)
            continue
        match = entry_re.match(body) if table == MODELS_TABLE else None
        if match is not None:
            inner = _set_inline(match["body"], key, value)
            lines[index] = f"{match['lead']}{inner}{match['tail']}{line[len(body) :]}"
            return "".join(lines)
    return text


def _set_inline(inner: str, key: str, value: str) -> str:
    """The body of an inline table with ``key``'s value replaced, or the key appended."""
    key_re = re.compile(
        rf"(?P<lead>(^|,)\s*{re.escape(key)}\s*=\s*)(?P<value>[^,]*?)(?P<end>\s*(,|$))"
    )
    if key_re.search(inner):
        return key_re.sub(lambda m: f"{m['lead']}{value}{m['end']}", inner, count=1)
    if inner.strip():
        return f"{inner.rstrip()}, {key} = {value} "
    return f" {key} = {value} "


def _set_in_table(lines: list[str], header_at: int, key: str, value: str, newline: str) -> str:
    """The key's line in the table whose header is at ``header_at`` replaced, or added after
    the header."""
    key_re = re.compile(
        rf"^(?P<lead>\s*{re.escape(key)}\s*=\s*)(?P<value>[^#\r\n]*?)(?P<tail>\s*(#.*)?)$"
    )
    for index in range(header_at + 1, len(lines)):
        body = lines[index].rstrip("\r\n")
        if body.lstrip().startswith("["):
            break
        match = key_re.match(body)
        if match is not None:
            lines[index] = f"{match['lead']}{value}{match['tail']}{lines[index][len(body) :]}"
            return "".join(lines)
    if not lines[header_at].endswith(("\n", "\r")):
        lines[header_at] += newline
    lines.insert(header_at + 1, f"{key} = {value}{newline}")
    return "".join(lines)


def _check(pyproject: Path, before: str, after: str, model: str, key: str, value: float) -> None:
    try:
        old = tomllib.loads(before)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{pyproject} is not valid TOML ({error}): fix it first") from None
    try:
        new: dict[str, Any] | None = tomllib.loads(after)
    except tomllib.TOMLDecodeError:
        new = None
    expected = _with_key(old, model, key, value)
    if expected is None or new != expected:
        raise ConfigError(
            f"{pyproject}: could not set {key} in [{MODELS_TABLE}] {model} without changing "
            "anything else (is the model declared some other way, e.g. as a dotted key or a "
            f"multi-line inline table?): add {key} = {value} to its spec by hand"
        )


def _with_key(data: dict[str, Any], model: str, key: str, value: float) -> dict[str, Any] | None:
    """``data`` with ``key = value`` in ``model``'s spec; None where it declares no such model."""
    tool = dict(data.get("tool", {}))
    smallmodel = dict(tool.get("smallmodel", {}))
    models = dict(smallmodel.get("models", {}))
    if not isinstance(models.get(model), dict):
        return None
    models[model] = {**models[model], key: float(value)}
    smallmodel["models"] = models
    tool["smallmodel"] = smallmodel
    return {**data, "tool": tool}


__all__ = ["set_model_key"]
