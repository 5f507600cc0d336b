"""How a plain value a test asserted is judged: equal as JSON reads it back, or a mismatch with
a diff of its pretty-printed lines and the fields that changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_smallmodel.common.results import Generation
from pytest_smallmodel.drift.text import OUTPUT_DIFF, deepdiff_lines, pretty, unified
from pytest_smallmodel.drift.verdict import Outcome, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer


class ValueKind:
    kind = "value"
    shared_wording = True
    requests: tuple[str, ...] = ()

    def compare(self, check: Check) -> Verdict:
        if check.golden.value == check.current.value:
            return check.identical()
        return check.decide(Outcome.MISMATCH, False, Reason.VALUE_DIFFERS)

    def forced_result(self, generation: Generation) -> object | None:
        return None

    def headline(self, verdict: Verdict) -> str:
        return "value differs from the golden"

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        golden, current = verdict.golden, verdict.current
        assert golden is not None and current is not None
        return [
            "diff (golden -> this run):",
            *self.diff(golden, current),
            *deepdiff_lines(golden.value, current.value),
        ]

    def summary(self, record: GoldenRecord) -> list[str]:
        return pretty(record.value)

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified(self.summary(golden), self.summary(current))]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        raise AssertionError("a plain value has no request (requests = ())")


KIND = ValueKind()
