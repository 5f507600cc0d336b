"""``--smallmodel-triage``: is a failing golden's departure numerical noise or changed behaviour?

A golden that fails in tolerance mode (or in exact mode, where nothing recorded changed) is
replayed on the pinned file under the benign matrix of ``engine/variants.py`` before the report
is written; ``drift/calibration.triage`` compares this run's gap with the largest benign gap of
the same golden and the verdict carries the label (``Verdict.triage``). Passing goldens are
never replayed. The loads stay open in one pool for the session, so a second failing golden of
the same model costs its replays only.
"""

from __future__ import annotations

from dataclasses import replace

from pytest_smallmodel.common.errors import SmallModelError
from pytest_smallmodel.drift.calibration import Triage, TriageLabel, triage
from pytest_smallmodel.drift.verdict import Mode, Reason, Verdict
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.registry import ModelRegistry
from pytest_smallmodel.engine.variants import Replayer

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


class Triager:
    """Labels the session's failing verdicts; ``close`` ends the replays' loads."""

    def __init__(self, registry: ModelRegistry, *, server: bool = True) -> None:
        self.registry = registry
        self.server = server
        self.pool = ModelPool()

    def __call__(self, verdict: Verdict) -> Verdict:
        if not needs_triage(verdict):
            return verdict
        golden = verdict.golden
        assert golden is not None and golden.model is not None
        gap, step = run_gap(verdict)
        try:
            spec = self.registry.base_spec(golden.model)
        except SmallModelError as error:
            why = f"the pinned file cannot be loaded here: {str(error).splitlines()[0]}"
            return replace(
                verdict, triage=Triage(TriageLabel.UNDECIDED, None, gap, step, (), (why,))
            )
        replayer = Replayer(spec, server=self.server, pool=self.pool)
        measurements = replayer.replay([(verdict.golden_path, golden)])
        unavailable = [u.describe() for u in replayer.unavailable]
        return replace(verdict, triage=triage(gap, step, measurements, unavailable=unavailable))

    def close(self) -> None:
        self.pool.close()


__all__ = ["Triager", "needs_triage", "run_gap"]
