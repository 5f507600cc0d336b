"""How a plain string a test asserted is judged: equal, or a mismatch with a line diff."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_smallmodel.common.results import Generation
from pytest_smallmodel.drift.text import OUTPUT_DIFF, unified_text
from pytest_smallmodel.drift.verdict import Outcome, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer


class TextKind:
    kind = "text"
    shared_wording = True
    requests: tuple[str, ...] = ()

    def compare(self, check: Check) -> Verdict:
        if check.golden.text == check.current.text:
            return check.identical()
        return check.decide(Outcome.MISMATCH, False, Reason.VALUE_DIFFERS)

    def forced_result(self, generation: Generation) -> object | None:
        return None

    def headline(self, verdict: Verdict) -> str:
        return "value differs from the golden"

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        golden, current = verdict.golden, verdict.current
        assert golden is not None and current is not None
        return ["diff (golden -> this run):", *self.diff(golden, current)]

    def summary(self, record: GoldenRecord) -> list[str]:
        return (record.text or "").split("\n")

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified_text(golden.text, current.text)]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        raise AssertionError("a plain value has no request (requests = ())")


KIND = TextKind()
