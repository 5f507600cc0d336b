"""Writing one scalar key of ``[tool.smallmodel]`` into pyproject.toml, and nothing else.

``smallmodel calibrate --write`` sets ``tolerance``. A TOML round trip would reformat the file
(comments, order, quoting), so the edit is textual: the key's line inside the table is replaced,
or a line is added under the table's header (or a new ``[tool.smallmodel]`` table before its
first sub-table); every other byte stays. The result is parsed again and must equal the
original with only that key changed, else nothing is written. The write is atomic.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_bytes
from pytest_smallmodel.common.errors import ConfigError

_HEADER_RE = re.compile(r"^\s*\[(?P<name>[^\[\]]+)\]\s*(#.*)?$")


def set_smallmodel_key(pyproject: Path, key: str, value: float) -> None:
    """Set ``[tool.smallmodel] key = value`` in ``pyproject``, keeping every other byte."""
    raw = Path(pyproject).read_bytes()
    text = raw.decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    edited = _edited(text, key, _toml_number(value), newline)
    _check(pyproject, text, edited, key, value)
    atomic_write_bytes(Path(pyproject), edited.encode("utf-8"))


def _toml_number(value: float) -> str:
    return repr(float(value))


def _edited(text: str, key: str, value: str, newline: str) -> str:
    lines = text.splitlines(keepends=True)
    table: str | None = None
    header_at: int | None = None
    first_subtable: int | None = None
    key_re = re.compile(
        rf"^(?P<lead>\s*{re.escape(key)}\s*=\s*)(?P<value>[^#\r\n]*?)(?P<tail>\s*(#.*)?)$"
    )
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        header = _HEADER_RE.match(body)
        if header is not None and not body.lstrip().startswith("[["):
            table = header["name"].strip().replace(" ", "")
            if table == "tool.smallmodel":
                header_at = index
            elif table.startswith("tool.smallmodel.") and first_subtable is None:
                first_subtable = index
            continue
        if table == "tool.smallmodel":
            match = key_re.match(body)
            if match is not None:
                ending = line[len(body) :]
                lines[index] = f"{match['lead']}{value}{match['tail']}{ending}"
                return "".join(lines)
    entry = f"{key} = {value}{newline}"
    if header_at is not None:
        lines.insert(header_at + 1, entry)
        return "".join(lines)
    block = f"[tool.smallmodel]{newline}{entry}{newline}"
    if first_subtable is not None:
        lines.insert(first_subtable, block)
        return "".join(lines)
    tail = "" if not text or text.endswith(("\n", "\r\n")) else newline
    return text + tail + newline + block.rstrip("\r\n") + newline


def _check(pyproject: Path, before: str, after: str, key: str, value: float) -> None:
    try:
        old = tomllib.loads(before)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{pyproject} is not valid TOML ({error}): fix it first") from None
    try:
        new: dict[str, Any] | None = tomllib.loads(after)
    except tomllib.TOMLDecodeError:
        new = None
    if new != _with_key(old, key, value):
        raise ConfigError(
            f"{pyproject}: could not set [tool.smallmodel] {key} without changing anything else "
            f"(is {key} set some other way, e.g. as a dotted key or an inline table?): set "
            f"{key} = {value} by hand"
        )


def _with_key(data: dict[str, Any], key: str, value: float) -> dict[str, Any]:
    tool = dict(data.get("tool", {}))
    table = dict(tool.get("smallmodel", {}))
    table[key] = float(value)
    tool["smallmodel"] = table
    return {**data, "tool": tool}


__all__ = ["set_smallmodel_key"]
