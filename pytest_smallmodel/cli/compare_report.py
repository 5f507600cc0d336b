"""What ``smallmodel compare`` found, as data: one ``CaseResult`` per golden, one
``AccuracyComparison`` per evaluation golden (the swap decision with ground truth), the suite's
``Figures`` (OLD's and NEW's speed side by side), the ``GateResult``s of ``--fail-under`` and
``--fail-if-worse``, and the ``CompareReport`` that ``compare_render`` renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_smallmodel.drift.verdict import Verdict
from pytest_smallmodel.evaluation.stats import Estimate, mcnemar_exact

# McNemar's p-value under which --fail-if-worse calls NEW significantly worse.
SIGNIFICANCE = 0.05
PairOutcome = Literal["both right", "won", "lost", "both wrong"]


@dataclass(frozen=True)
class Divergence:
    """The first step where OLD's and NEW's tokens differ (``None`` tokens: that run ended)."""

    step: int
    old_token: str | None
    new_token: str | None
    old_margin: float | None  # golden run: OLD's token over NEW's token (stored top-k)
    new_margin: float | None  # this run: NEW's token over OLD's token (NEW's top-k)


@dataclass(frozen=True)
class CaseResult:
    golden: str
    kind: str
    identical: bool
    rerendered: bool = False
    error: str | None = None
    corrupt: bool = False  # the golden does not follow from its tokens: ``error`` says where
    old_text: str = ""
    new_text: str = ""
    divergence: Divergence | None = None
    step_gaps: tuple[float, ...] = ()
    old_steps: tuple[tuple[str, float], ...] = ()
    new_steps: tuple[tuple[str, float], ...] = ()
    old_label: str | None = None
    new_label: str | None = None
    old_label_logprobs: Mapping[str, float] | None = None
    new_label_logprobs: Mapping[str, float] | None = None
    fields_total: int = 0
    fields_agreeing: int = 0
    fields_changed: tuple[str, ...] = ()
    cosine: float | None = None
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    # The drift decision on NEW's result against OLD's golden, as `smallmodel review` and the
    # pending golden written by --update see it (None: the replay failed).
    verdict: Verdict | None = None


@dataclass(frozen=True)
class PairedCase:
    """One labelled case scored for OLD (its stored call) and NEW (the call replayed)."""

    id: str
    expected: str  # as the case describes it
    old_output: Any
    new_output: Any
    old_correct: bool
    new_correct: bool
    error: str | None = None  # NEW's replay failed (counted as wrong)
    label: str | None = None  # the expected label, for a label case (the confusion matrices)

    @property
    def outcome(self) -> PairOutcome:
        if self.old_correct == self.new_correct:
            return "both right" if self.new_correct else "both wrong"
        return "won" if self.new_correct else "lost"


@dataclass(frozen=True)
class AccuracyComparison:
    """An evaluation golden replayed on NEW and scored against its expected values."""

    golden: str
    cases: tuple[PairedCase, ...]
    not_replayed: tuple[str, ...] = ()  # no stored model call (the task raised or made none)
    labels: tuple[str, ...] = ()  # the confusion matrices' labels (label cases only)

    def _ids(self, outcome: PairOutcome) -> tuple[str, ...]:
        return tuple(case.id for case in self.cases if case.outcome == outcome)

    @property
    def wins(self) -> tuple[str, ...]:
        return self._ids("won")

    @property
    def losses(self) -> tuple[str, ...]:
        return self._ids("lost")

    @property
    def both_wrong(self) -> tuple[str, ...]:
        return self._ids("both wrong")

    @property
    def old_accuracy(self) -> Estimate:
        return Estimate("OLD accuracy", sum(c.old_correct for c in self.cases), len(self.cases))

    @property
    def new_accuracy(self) -> Estimate:
        return Estimate("NEW accuracy", sum(c.new_correct for c in self.cases), len(self.cases))

    @property
    def p_value(self) -> float:
        """Exact McNemar test on the discordant cases: are OLD and NEW equally accurate?"""
        return mcnemar_exact(len(self.losses), len(self.wins))

    @property
    def significantly_worse(self) -> bool:
        return len(self.losses) > len(self.wins) and self.p_value < SIGNIFICANCE

    def confusion(self, side: Literal["old", "new"]) -> dict[str, dict[str, int]]:
        """expected label -> the label OLD (or NEW) gave -> cases."""
        table: dict[str, dict[str, int]] = {label: {} for label in self.labels}
        for case in self.cases:
            if case.label is None:
                continue
            got = case.old_output if side == "old" else case.new_output
            shown = str(got) if isinstance(got, str) else "(error)"
            row = table.setdefault(case.label, {})
            row[shown] = row.get(shown, 0) + 1
        return table


@dataclass(frozen=True)
class GateResult:
    """``--fail-under`` or ``--fail-if-worse`` on one evaluation golden (or on none)."""

    gate: str  # "--fail-under 0.8", "--fail-if-worse"
    golden: str | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Figures:
    cases: int
    identical: int
    errors: int
    labels: int
    labels_agreeing: int
    fields: int
    fields_agreeing: int
    extraction_cases: int
    divergence_steps: int
    divergence_mean: float | None
    divergence_max: float | None
    rerendered: int
    embeddings: int
    embedding_cosine_min: float | None
    new_tokens_per_second: float | None
    new_load_seconds: float
    new_peak_rss_mib: float
    new_latency_p50_ms: float | None = None  # per replayed call, the first (warm-up) left out
    new_latency_p95_ms: float | None = None
    # OLD, measured by replaying the same requests on OLD when its file is present (None: not)
    old_tokens_per_second: float | None = None
    old_load_seconds: float | None = None
    old_peak_rss_mib: float | None = None
    old_latency_p50_ms: float | None = None
    old_latency_p95_ms: float | None = None
    old_not_measured: str | None = None  # why OLD was not measured, when it was not
    # "worker": each model's own engine worker's peak (VmHWM); "process": this process's and
    # its finished children's peak, all models together
    peak_memory: str = "process"

    @property
    def identical_share(self) -> float:
        return self.identical / self.cases if self.cases else 0.0


@dataclass
class CompareReport:
    old: str
    new: str
    new_sha256: str
    cases: list[CaseResult]
    figures: Figures
    skipped: list[str] = field(default_factory=list)
    pending_written: list[str] = field(default_factory=list)
    accuracy: list[AccuracyComparison] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[GateResult]:
        return [gate for gate in self.gates if not gate.passed]

    @property
    def unusable(self) -> list[str]:
        """Goldens that could not be read or do not follow from their tokens: the comparison
        cannot vouch for them, so it fails (exit 1) after reporting."""
        return [*self.skipped, *(case.error or "" for case in self.cases if case.corrupt)]
