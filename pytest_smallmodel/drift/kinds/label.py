"""How a label is judged: the same label passes; in tolerance mode another one passes when it
beats the golden label by no more than the tolerance (in nats of total logprob)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pytest_smallmodel.drift.kinds.base import KindDefaults
from pytest_smallmodel.drift.text import OUTPUT_DIFF, lp, nats, unified
from pytest_smallmodel.drift.verdict import LabelScores, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer


class LabelKind(KindDefaults):
    kind = "label"
    requests = ("classify",)

    def compare(self, check: Check) -> Verdict:
        golden, current = check.golden, check.current
        if golden.label == current.label:
            return check.identical()
        old = dict(golden.label_logprobs or {})
        new = dict(current.label_logprobs or {})
        golden_now = new.get(golden.label or "")
        chosen_now = new.get(current.label or "")
        margin = (
            chosen_now - golden_now
            if golden_now is not None and chosen_now is not None
            else math.inf
        )
        scores = LabelScores(golden.label or "", current.label or "", old, new, margin)
        return check.judge(margin <= check.tolerance, Reason.LABEL_CHANGED, labels=scores)

    def headline(self, verdict: Verdict) -> str:
        labels = verdict.labels
        assert labels is not None
        old, new = labels.golden_label, labels.current_label
        tolerance = nats(verdict.tolerance or 0.0)
        if verdict.reason is Reason.LABEL_CHANGED:
            return f"label changed from {old!r} to {new!r}"
        if verdict.reason is Reason.WITHIN_TOLERANCE:
            return (
                f"passed within tolerance: this run chose {new!r} over the golden {old!r} by "
                f"{labels.margin:.4f} nats (tolerance {tolerance})"
            )
        return (
            f"drift beyond tolerance: label changed from {old!r} to {new!r} by "
            f"{labels.margin:.4f} nats (tolerance {tolerance})"
        )

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        labels = verdict.labels
        assert labels is not None
        old, new = labels.golden_logprobs, labels.current_logprobs
        lines = ["labels (logprob in the golden run -> this run):"]
        for name in new or old:
            marks = [
                mark
                for mark, label in (
                    ("golden", labels.golden_label),
                    ("this run", labels.current_label),
                )
                if label == name
            ]
            lines.append(
                f"  {name!r}: {lp(old.get(name))} -> {lp(new.get(name))}"
                + (f"  <- {' and '.join(marks)}" if marks else "")
            )
        lines.append(
            f"margin this run: {labels.current_label!r} is {labels.margin:.4f} nats above the "
            f"golden label {labels.golden_label!r}"
        )
        return lines

    def summary(self, record: GoldenRecord) -> list[str]:
        return [f"label: {record.label}"]

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified(self.summary(golden), self.summary(current))]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        return model.classify(record.prompt_source, (record.request or {})["labels"])


KIND = LabelKind()
