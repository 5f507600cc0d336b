"""How a plain value a test asserted is judged: equal as JSON reads it back, or a mismatch with
a diff of its pretty-printed lines and the fields that changed."""

from __future__ import annotations

from pytest_smallmodel.drift.kinds.base import PlainKind
from pytest_smallmodel.drift.text import OUTPUT_DIFF, deepdiff_lines, pretty, unified
from pytest_smallmodel.drift.verdict import Reason
from pytest_smallmodel.goldens.records import GoldenRecord


class ValueKind(PlainKind):
    kind = "value"
    compared = "value"
    differs = Reason.VALUE_DIFFERS

    def summary(self, record: GoldenRecord) -> list[str]:
        return pretty(record.value)

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified(self.summary(golden), self.summary(current))]

    def changed_fields(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return deepdiff_lines(golden.value, current.value)


KIND = ValueKind()
