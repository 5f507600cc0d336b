"""What comparing an evaluation golden found, as data: the cases whose output or verdict
changed (by id), those that changed within tolerance, cases added, removed or redefined, and
the metrics that moved, each with both intervals. ``evaluation_rules`` builds it and words it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_smallmodel.drift.verdict import Verdict


@dataclass(frozen=True)
class CaseChange:
    id: str
    golden_output: Any
    output: Any
    golden_verdict: str  # correct / wrong / error
    verdict: str
    # The comparison of the case's model call with its stored one (None: no call stored)
    call: Verdict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "golden_output": self.golden_output,
            "output": self.output,
            "golden_verdict": self.golden_verdict,
            "verdict": self.verdict,
            "call_outcome": self.call.outcome.value if self.call is not None else None,
        }


@dataclass(frozen=True)
class MetricChange:
    """A proportion that moved: ``golden`` and ``current`` hold successes, total, estimate,
    lower and upper (an F1, which has no interval, is left out)."""

    name: str
    golden: Mapping[str, Any]
    current: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "golden": dict(self.golden), "current": dict(self.current)}


@dataclass(frozen=True)
class EvaluationDrift:
    changed: tuple[CaseChange, ...]  # different output or verdict, not tolerated
    tolerated: tuple[CaseChange, ...]  # different output, the call within tolerance
    added: tuple[str, ...]
    removed: tuple[str, ...]
    redefined: tuple[str, ...]  # same id, another input or expected value
    metrics: tuple[MetricChange, ...]
    cases: int  # in this run

    @property
    def flipped(self) -> tuple[CaseChange, ...]:
        """Changed cases whose verdict changed (correct <-> wrong <-> error)."""
        return tuple(c for c in self.changed if c.golden_verdict != c.verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": [c.to_dict() for c in self.changed],
            "tolerated": [c.to_dict() for c in self.tolerated],
            "added": list(self.added),
            "removed": list(self.removed),
            "redefined": list(self.redefined),
            "metrics": [m.to_dict() for m in self.metrics],
        }
