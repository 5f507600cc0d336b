"""The pieces every golden kind's document is made of: text as lines, values kept on one line,
decoding steps, numbers that may be infinite, and the quoted text of a problem.

``file_format`` renders and reads the whole document; each kind's module in ``goldens/kinds/``
builds its own fields from these, so that all kinds write the same JSON for the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import Step
    from pytest_smallmodel.goldens.records import GoldenRecord


class DocumentProblem(ValueError):
    """What a kind found wrong in its fields of a golden document (``file_format`` names the
    file and how to fix it)."""


class GoldenFiles(Protocol):
    """What ``file_format`` hands each kind: its own writer and reader of a whole golden, for a
    kind whose document holds other goldens' (an evaluation's cases hold model results)."""

    def document(self, record: GoldenRecord) -> dict[str, Any]:
        """The record's document, as ``serialize_record`` renders it."""

    def parse(self, text: str) -> GoldenRecord:
        """A golden's text read back (a ``GoldenError`` naming what is wrong)."""


class Inline:
    """Render this value on a single line (steps, settings, token arrays)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def scalar(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # inf logprob from a grammar-masked step: JSON has no infinity
        return json.dumps(str(value))


def inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{scalar(k)}: {inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    return scalar(value)


def render(value: Any, indent: int) -> str:
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, Inline):
        return inline(value.value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{scalar(k)}: {render(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value or all(isinstance(v, int | float | bool) or v is None for v in value):
            return inline(value)
        return "[\n" + ",\n".join(f"{inner}{render(v, indent + 1)}" for v in value) + f"\n{pad}]"
    return scalar(value)


def lines(text: str) -> list[str]:
    # split("\n") and "\n".join() are exact inverses, so a golden restores the text byte for byte.
    return text.split("\n")


def joined(document_lines: list[str]) -> str:
    return "\n".join(document_lines)


def step_for_file(step: Step) -> Inline:
    return Inline(
        {
            "token": step.token,
            "text": step.text,
            "logprob": step.logprob,
            "top": [[t.token, t.text, t.logprob] for t in step.top],
        }
    )


def number(value: str | float) -> float:
    return float(value)  # the schema admits numbers and "inf" / "-inf" / "nan" only


def quoted(text: str, limit: int = 80) -> str:
    """``text`` as a JSON string for a message, shortened past ``limit`` characters."""
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= limit else shown[: limit - 4] + '…"'
