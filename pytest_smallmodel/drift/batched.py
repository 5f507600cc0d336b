"""Tolerance mode at prefill speed: check a golden with one batched teacher-forced pass.

When only the runtime fingerprint changed since a golden was recorded (rule 4 of drift.py), the
test passes if every golden token stays within ``tolerance`` nats of the live runtime's best
token. That rule needs this runtime's logits at each golden position, not this runtime's own
greedy output, so the engine evaluates the prompt plus the golden tokens in one batched pass
(``LlamaRuntime.verify``) before decoding anything. If the rule holds, the result *is* the
golden's tokens and no decoding happens; if it does not, the engine decodes incrementally and
the comparison explains the divergence exactly as without this pass. Why a batched pass is sound
here and not for exact comparison: docs/drift.md.

The engine asks a ``GoldenSource`` (set by the plugin for tests that use the ``golden`` fixture)
for the goldens of the running test; which of them apply is decided by ``drift.compare`` itself,
so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.common.results import (
    BatchedCheck,
    Generation,
    Provenance,
    Request,
    ScoredStep,
    Timings,
)
from pytest_smallmodel.drift.kinds import KINDS
from pytest_smallmodel.drift.rules import DriftPolicy, compare
from pytest_smallmodel.drift.verdict import Outcome
from pytest_smallmodel.goldens.records import GoldenRecord

# (display path, parsed golden) for each golden file of the running test.
GoldenLoader = Callable[[], Sequence[tuple[str, GoldenRecord]]]


def judge(
    scored: Sequence[ScoredStep],
    golden_tokens: Sequence[int],
    *,
    tolerance: float,
    path: str,
    incremental: bool = False,
) -> BatchedCheck:
    """Rule 4 on the batched pass: every golden token within ``tolerance`` nats of the best."""
    tokens = tuple(golden_tokens)
    if not scored:
        return BatchedCheck(
            path, tokens, False, tolerance, 0, 0.0, 0, "nothing was scored", incremental
        )
    worst = max(scored, key=lambda step: step.gap)
    problem = None
    if len(scored) < len(tokens):
        problem = (
            f"stopped at step {len(scored) - 1}: this run cannot produce the golden token "
            f"{scored[-1].golden.text!r} there (grammar)"
        )
    elif worst.gap > tolerance:
        problem = (
            f"at step {worst.index} the golden token {worst.golden.text!r} is {worst.gap:.4f} "
            f"nats below the best token {worst.best.text!r}"
        )
    return BatchedCheck(
        golden_path=path,
        tokens=tokens,
        passed=problem is None,
        tolerance=tolerance,
        steps_checked=len(scored),
        max_gap=worst.gap,
        worst_step=worst.index,
        problem=problem,
        incremental=incremental,
    )


@dataclass
class GoldenSource:
    """The running test's goldens (read once, on first use) and the session's drift policy."""

    load: GoldenLoader
    policy: DriftPolicy
    _records: Sequence[tuple[str, GoldenRecord]] | None = field(default=None, repr=False)
    # The engine judges its batched pass through the source it is handed (it imports no drift).
    judge = staticmethod(judge)

    def records(self) -> Sequence[tuple[str, GoldenRecord]]:
        if self._records is None:
            self._records = self.load()
        return self._records

    def candidate(
        self, *, model: str, sha256: str, request: Request, fingerprint: Mapping[str, Any]
    ) -> tuple[str, GoldenRecord] | None:
        """The golden this request will be compared with in tolerance mode, if exactly one
        token sequence qualifies (two goldens of one request that disagree: decode instead)."""
        if self.policy.strict:
            return None
        found = [
            (path, golden)
            for path, golden in self.records()
            if _in_tolerance_mode(golden, path, model, sha256, request, fingerprint, self.policy)
        ]
        if len({golden.tokens for _, golden in found}) != 1:
            return None
        return found[0]


def _in_tolerance_mode(
    golden: GoldenRecord,
    path: str,
    model: str,
    sha256: str,
    request: Request,
    fingerprint: Mapping[str, Any],
    policy: DriftPolicy,
) -> bool:
    """Whether comparing a result of ``request`` with ``golden`` would apply rule 4.

    Asks ``compare`` with an empty result of this request: with the same model and request and
    a changed fingerprint it reports drift that needs teacher forcing (and names the changed
    fields); any other rule gives another outcome or no changed fields.
    """
    if not golden.tokens:
        return False
    if golden.sha256 != sha256 or (golden.request or {}).get("kind") != request.kind:
        return False
    empty = Generation(
        "",
        tokens=(),
        steps=(),
        finish_reason="length",
        timings=Timings(0.0, 0.0, 0),
        provenance=Provenance(model, sha256, request, fingerprint),
    )
    live = KINDS[golden.kind].forced_result(empty)
    if live is None:  # not compared token by token
        return False
    verdict = compare(golden, live, policy=policy, golden_path=path)
    return verdict.outcome is Outcome.DRIFT and bool(verdict.changed)
