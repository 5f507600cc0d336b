"""Which failing verdicts ``--smallmodel-triage`` replays, and the gap it weighs for each.

The replaying is ``engine/variants.Triager``'s; the label it earns is ``calibration.triage``'s.
"""

from __future__ import annotations

from pytest_smallmodel.drift.verdict import Mode, Reason, Verdict

# Failures whose cause may be numerical: a difference the rules measured in nats. A changed
# model or request, a corrupt or missing golden, a golden that ended first are other causes.
_TRIAGED = {
    Mode.TOLERANCE: {Reason.BEYOND_TOLERANCE, Reason.LABEL_CHANGED},
    Mode.EXACT: {Reason.TOKENS_DIFFER, Reason.LABEL_CHANGED},
}


def needs_triage(verdict: Verdict) -> bool:
    if verdict.passed or verdict.mode is None or verdict.golden is None:
        return False
    return verdict.reason in _TRIAGED.get(verdict.mode, set())


def run_gap(verdict: Verdict) -> tuple[float, int | None]:
    """This run's largest gap of a golden token (label) to the best one, and its step."""
    if verdict.labels is not None:
        return verdict.labels.margin, None
    if verdict.forcing is not None:
        worst = verdict.forcing.worst
        return worst.gap, worst.index
    if verdict.batched is not None:
        return verdict.batched.max_gap, verdict.batched.worst_step
    return float("inf"), verdict.divergence.step if verdict.divergence else None


__all__ = ["needs_triage", "run_gap"]
