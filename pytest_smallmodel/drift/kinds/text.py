"""How a plain string a test asserted is judged: equal, or a mismatch with a line diff."""

from __future__ import annotations

from pytest_smallmodel.drift.kinds.base import PlainKind
from pytest_smallmodel.drift.text import OUTPUT_DIFF, unified_text
from pytest_smallmodel.drift.verdict import Reason
from pytest_smallmodel.goldens.records import GoldenRecord


class TextKind(PlainKind):
    kind = "text"
    compared = "text"
    differs = Reason.VALUE_DIFFERS

    def summary(self, record: GoldenRecord) -> list[str]:
        return (record.text or "").split("\n")

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified_text(golden.text, current.text)]


KIND = TextKind()
