"""Which failures --smallmodel-triage replays, and the gap it compares (no model needed)."""

from __future__ import annotations

import pytest

from pytest_smallmodel.common.results import ScoredStep, TokenLogprob
from pytest_smallmodel.drift.triage import needs_triage, run_gap
from pytest_smallmodel.drift.verdict import (
    Forcing,
    LabelScores,
    Mode,
    Outcome,
    Reason,
    Verdict,
)
from pytest_smallmodel.goldens.records import GoldenRecord

GOLDEN = GoldenRecord(kind="generation", model="m", sha256="0" * 64)


def verdict(reason: Reason, mode: Mode | None, *, passed: bool = False, **found: object) -> Verdict:
    outcome = Outcome.TOLERATED if passed else Outcome.DRIFT
    return Verdict(outcome, passed, "g.json", reason, golden=GOLDEN, mode=mode, **found)  # type: ignore[arg-type]


def scored(index: int, gap: float) -> ScoredStep:
    golden, best = TokenLogprob(1, "a", -0.5 - gap), TokenLogprob(2, "b", -0.5)
    return ScoredStep(index, golden, best, (best, golden))


def test_only_failures_a_gap_can_explain_are_replayed() -> None:
    assert needs_triage(verdict(Reason.BEYOND_TOLERANCE, Mode.TOLERANCE))
    assert needs_triage(verdict(Reason.TOKENS_DIFFER, Mode.EXACT))
    assert needs_triage(verdict(Reason.LABEL_CHANGED, Mode.EXACT))
    assert not needs_triage(verdict(Reason.WITHIN_TOLERANCE, Mode.TOLERANCE, passed=True))
    assert not needs_triage(verdict(Reason.TOKENS_DIFFER, Mode.STRICT))
    assert not needs_triage(verdict(Reason.MODEL_CHANGED, None))
    assert not needs_triage(verdict(Reason.GOLDEN_ENDED, Mode.TOLERANCE))


def test_the_run_gap_is_the_largest_forced_gap_or_the_label_margin() -> None:
    forcing = Forcing((scored(3, 0.2), scored(4, 1.7), scored(5, 0.4)), 1.0)
    gap, step = run_gap(verdict(Reason.BEYOND_TOLERANCE, Mode.TOLERANCE, forcing=forcing))
    assert (gap, step) == (pytest.approx(1.7), 4)
    labels = LabelScores("yes", "no", {"yes": -1.0}, {"yes": -2.0, "no": -0.5}, 1.5)
    assert run_gap(verdict(Reason.LABEL_CHANGED, Mode.EXACT, labels=labels)) == (1.5, None)
