"""A golden comparison's decision as data: what was compared, what differed, by how much.

``rules.compare`` makes a ``Verdict``; it carries no prose and imports none. ``explanation``
renders it as the text a failing test shows (``explanation.headline`` and ``explanation.lines``),
``reports`` as the terminal summary, Markdown and JSON, and ``smallmodel review`` and
``compare`` reuse the same data. ``Verdict.to_dict`` is the structured form the JSON report
writes (``report.schema.json``), with the headline the renderer wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # data only: a verdict holds these, it builds none of them
    from pytest_smallmodel.common.results import BatchedCheck, ScoredStep, Step
    from pytest_smallmodel.drift.calibration import Triage
    from pytest_smallmodel.drift.topk import TopKAgreement
    from pytest_smallmodel.goldens.records import GoldenRecord


class Outcome(StrEnum):
    IDENTICAL = "identical"
    IDENTICAL_NEW_FINGERPRINT = "identical under a changed fingerprint"
    TOLERATED = "passed within tolerance"
    REWRITTEN = "rewritten by --snapshot-update"
    MODEL_CHANGED = "model changed"
    REQUEST_CHANGED = "request changed"
    DRIFT = "drift"
    MISMATCH = "mismatch"
    CORRUPT = "corrupt golden"
    MISSING = "missing golden"
    WRITE_FAILED = "golden not written"


class Reason(StrEnum):
    """Which rule decided, finer than the outcome (the headline says it in words)."""

    IDENTICAL = "identical"
    KIND_CHANGED = "kind changed"
    MODEL_CHANGED = "model changed"
    REQUEST_CHANGED = "request changed"
    TOKENS_DIFFER = "tokens differ"
    NOT_SCORABLE = "cannot be teacher-forced"
    GOLDEN_ENDED = "golden ended first"
    FORCING_STOPPED = "teacher forcing stopped"
    WITHIN_TOLERANCE = "within tolerance"
    BEYOND_TOLERANCE = "beyond tolerance"
    LABEL_CHANGED = "label changed"
    DIMENSIONS_CHANGED = "embedding dimensions changed"
    EMBEDDING_DIFFERS = "embedding differs"
    VALUE_DIFFERS = "value differs"
    CASES_CHANGED = "evaluation cases changed"
    BATCHED_PASS = "batched pass within tolerance"
    BATCHED_OUTSIDE_TOLERANCE = "batched pass outside tolerance mode"
    CORRUPT = "corrupt golden"
    MISSING = "missing golden"


class Mode(StrEnum):
    """How the comparison was made, once model and request were found unchanged."""

    EXACT = "exact"
    STRICT = "strict"
    TOLERANCE = "tolerance"


class PromptChange(StrEnum):
    """The prompt's token ids changed for unchanged input: a runtime change, not the test's."""

    TOKEN_IDS = "token ids"
    RENDERED_CHAT = "rendered chat"


@dataclass(frozen=True)
class FieldChange:
    """One fingerprint field (or pseudo-field) that differs, with display values."""

    path: str
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class Divergence:
    """The first step where this run's tokens leave the golden's."""

    step: int
    char_offset: int  # in the golden text
    golden_step: Step | None  # None: the golden ended here
    live_step: Step | None  # None: this run ended here
    golden_now: float | None  # the golden token's logprob in this run
    actual_then: float | None  # this run's token's logprob in the golden run

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "char_offset": self.char_offset,
            "golden_token": _token_dict(self.golden_step),
            "actual_token": _token_dict(self.live_step),
            "golden_logprob_this_run": self.golden_now,
            "actual_logprob_golden_run": self.actual_then,
            "margin_this_run": (
                self.live_step.logprob - self.golden_now
                if self.live_step is not None and self.golden_now is not None
                else None
            ),
            "margin_golden_run": (
                self.golden_step.logprob - self.actual_then
                if self.golden_step is not None and self.actual_then is not None
                else None
            ),
        }


@dataclass(frozen=True)
class Forcing:
    """The golden tokens teacher-forced through this run from the divergence on."""

    steps: tuple[ScoredStep, ...]
    tolerance: float

    @property
    def worst(self) -> ScoredStep:
        return max(self.steps, key=lambda s: s.gap)

    @property
    def above(self) -> tuple[ScoredStep, ...]:
        return tuple(s for s in self.steps if s.gap > self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "from_step": self.steps[0].index,
            "steps": len(self.steps),
            "max_gap": worst.gap,
            "max_gap_step": worst.index,
            "steps_above_tolerance": [s.index for s in self.above],
        }


@dataclass(frozen=True)
class LabelScores:
    """Each label's total logprob in the golden run and this run."""

    golden_label: str
    current_label: str
    golden_logprobs: Mapping[str, float]
    current_logprobs: Mapping[str, float]
    margin: float  # the chosen label over the golden label, this run

    def to_dict(self) -> dict[str, Any]:
        return {
            "golden_label": self.golden_label,
            "current_label": self.current_label,
            "golden_logprobs": dict(self.golden_logprobs),
            "current_logprobs": dict(self.current_logprobs),
            "margin": _finite(self.margin),
        }


@dataclass(frozen=True)
class EmbeddingScores:
    golden_dimensions: int
    dimensions: int
    cosine: float | None  # None when the dimensions differ
    max_abs_difference: float | None
    min_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "golden_dimensions": self.golden_dimensions,
            "dimensions": self.dimensions,
            "cosine": self.cosine,
            "max_abs_difference": self.max_abs_difference,
            "min_cosine": self.min_cosine,
        }


# -- an evaluation golden: its cases and metrics (drift/kinds/evaluation.py decides) ----------


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


@dataclass(frozen=True)
class Verdict:
    """The outcome of one golden comparison, with everything a reviewer needs to decide."""

    outcome: Outcome
    passed: bool
    golden_path: str
    reason: Reason
    golden: GoldenRecord | None = None
    current: GoldenRecord | None = None
    mode: Mode | None = None  # None: decided before the fingerprint was compared
    tolerance: float | None = None
    min_cosine: float | None = None
    changed: tuple[FieldChange, ...] = ()
    prompt_change: PromptChange | None = None
    divergence: Divergence | None = None
    forcing: Forcing | None = None
    labels: LabelScores | None = None
    embedding: EmbeddingScores | None = None
    problem: str | None = None  # why a corrupt golden cannot be read
    # The engine's one batched teacher-forced pass over the golden tokens (tolerance mode):
    # passed, the engine returned the golden's tokens; failed, it decoded and this is why.
    batched: BatchedCheck | None = None
    # The golden's stored top-k against this run's at the same contexts (KL over the shared
    # support, top-token agreement): generations and extractions whose steps kept a top-k.
    agreement: TopKAgreement | None = None
    # --smallmodel-triage: this failure replayed under the benign runtime variants
    triage: Triage | None = None
    evaluation: EvaluationDrift | None = None  # an evaluation golden's cases and metrics

    @property
    def model(self) -> str | None:
        current = self.current
        return current.model_ref if current and current.sha256 else None

    @property
    def current_engine(self) -> str | None:
        """What ran the model in this run (``llama-cpp-python``, ``llama-server``, ``openai``)."""
        if self.current is None or self.current.fingerprint is None:
            return None
        return str(self.current.engine)

    @property
    def model_identity(self) -> str | None:
        """``unverified`` when a running server made this result: it cannot prove it serves the
        pinned file; ``verified`` when the harness loaded the verified file itself."""
        if self.current is None or self.current.fingerprint is None:
            return None
        return str(self.current.fingerprint.get("identity", "verified"))

    def to_dict(self, headline: str) -> dict[str, Any]:
        """The decision as JSON-ready data (the JSON report's ``verdict`` objects), with its
        ``headline`` as ``explanation.headline`` wrote it."""
        return {
            "outcome": self.outcome.value,
            "passed": self.passed,
            "reason": self.reason.value,
            "golden": self.golden_path,
            "model": self.model,
            "engine": self.current_engine,
            "model_identity": self.model_identity,
            "golden_model": (
                self.golden.model_ref if self.golden is not None and self.golden.sha256 else None
            ),
            "mode": self.mode.value if self.mode is not None else None,
            "tolerance": self.tolerance,
            "headline": headline,
            "changed": [{"path": c.path, "old": c.old, "new": c.new} for c in self.changed],
            "prompt_change": self.prompt_change.value if self.prompt_change else None,
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "teacher_forcing": self.forcing.to_dict() if self.forcing else None,
            "labels": self.labels.to_dict() if self.labels else None,
            "embedding": self.embedding.to_dict() if self.embedding else None,
            "problem": self.problem,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "batched_check": (
                {
                    "passed": self.batched.passed,
                    "steps_checked": self.batched.steps_checked,
                    "max_gap": self.batched.max_gap,
                    "worst_step": self.batched.worst_step,
                    "problem": self.batched.problem,
                    "incremental": self.batched.incremental,
                }
                if self.batched is not None
                else None
            ),
            "topk_agreement": self.agreement.to_dict() if self.agreement is not None else None,
            "triage": self.triage.to_dict() if self.triage is not None else None,
        }


def _token_dict(step: Step | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"id": step.token, "text": step.text, "logprob": step.logprob}


def _finite(value: float) -> float | None:
    return value if value not in (float("inf"), float("-inf")) and value == value else None
