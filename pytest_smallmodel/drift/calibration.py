"""From gaps measured under benign runtime variants to a tolerance, fragile goldens and a triage.

``engine/variants.py`` replays each golden's stored request under a matrix of runtime variants
that keep the request the same in meaning (threads, batch sizes, flash attention, repacking, the
batched pass against incremental decoding, llama-server) and records, per golden and variant, a
``Measurement``. This module turns those into decisions, as data: ``calibrate`` (the largest
benign gap, its percentiles, the recommended tolerance, the goldens that fail today's tolerance,
the near-ties) and ``triage`` (is a failing golden's gap within the benign spread measured here,
or beyond it). ``cli/calibrate.py`` and the drift report render them; nothing here prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pytest_smallmodel.goldens.records import GoldenRecord

# The recommended tolerance is the largest benign gap times this factor: a long suite meets the
# tail of the noise, not its median, and the measured matrix is a sample of what another runner
# does (the documented default 1.0 is the same factor over the largest gap it measured, 0.494).
SAFETY_FACTOR = 2.0
# Never recommend less: exp(-0.25) keeps a golden token at 78 % of the best token's probability,
# a choice a different rounding could make on a runner this machine cannot imitate.
TOLERANCE_FLOOR = 0.25


@dataclass(frozen=True)
class Measurement:
    """One golden replayed under one variant."""

    golden: str  # the golden's path, as reports name it
    variant: str
    gaps: tuple[float, ...] = ()  # per golden step (labels: the one label gap)
    worst_step: int | None = None  # where the largest gap is (None for labels)
    min_margin: float | None = None  # this run's smallest top-1 margin along the golden
    identical: bool | None = None  # greedy output (label) the same; None: not decoded
    mean_kl: float | None = None  # over the stored top-k, per step (drift/topk.py)
    max_kl: float | None = None
    error: str | None = None  # why it could not be measured

    @property
    def max_gap(self) -> float:
        return max(self.gaps, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "golden": self.golden,
            "variant": self.variant,
            "steps": len(self.gaps),
            "max_gap": self.max_gap if self.error is None else None,
            "worst_step": self.worst_step,
            "min_margin": _finite(self.min_margin),
            "identical": self.identical,
            "mean_kl": self.mean_kl,
            "max_kl": self.max_kl,
            "error": self.error,
        }


@dataclass(frozen=True)
class Fragile:
    """A golden that sits on a near-tie: its margin at ``step`` is below the benign noise."""

    golden: str
    margin: float
    step: int | None  # None: a label golden (the margin is between labels)
    top: tuple[tuple[str, float], ...]  # that step's top tokens (labels: every label) in the golden

    def to_dict(self) -> dict[str, Any]:
        return {
            "golden": self.golden,
            "margin": self.margin,
            "step": self.step,
            "top": [{"text": text, "logprob": logprob} for text, logprob in self.top],
        }


@dataclass(frozen=True)
class ModelCalibration:
    """What calibration found for one model's goldens."""

    model: str
    goldens: tuple[str, ...]
    measurements: tuple[Measurement, ...]
    current_tolerance: float
    recommended: float
    max_gap: float
    p999: float
    p99: float
    steps: int
    identical_share: float | None  # of goldens identical under every variant that decoded
    failing_now: tuple[str, ...]  # goldens with a benign gap above the current tolerance
    fragile: tuple[Fragile, ...]
    worst: Measurement | None
    safety_factor: float = SAFETY_FACTOR
    floor: float = TOLERANCE_FLOOR

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "model": self.model,
            "goldens": len(self.goldens),
            "steps": self.steps,
            "max_gap": self.max_gap,
            "p99.9": self.p999,
            "p99": self.p99,
            "worst": (
                {"golden": worst.golden, "variant": worst.variant, "step": worst.worst_step}
                if worst is not None
                else None
            ),
            "identical_share": self.identical_share,
            "current_tolerance": self.current_tolerance,
            "recommended_tolerance": self.recommended,
            "safety_factor": self.safety_factor,
            "floor": self.floor,
            "failing_under_current_tolerance": list(self.failing_now),
            "fragile": [f.to_dict() for f in self.fragile],
            "measurements": [m.to_dict() for m in self.measurements],
        }


def recommend(max_gap: float) -> float:
    """The tolerance for a largest benign gap: ``SAFETY_FACTOR`` times it, rounded up to the
    hundredth, never below ``TOLERANCE_FLOOR``."""
    return max(TOLERANCE_FLOOR, math.ceil(max_gap * SAFETY_FACTOR * 100 - 1e-9) / 100)


def percentile(values: Sequence[float], point: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * point / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def calibrate(
    model: str,
    records: Sequence[tuple[str, GoldenRecord]],
    measurements: Sequence[Measurement],
    *,
    current_tolerance: float,
) -> ModelCalibration:
    """One model's recommendation from its goldens' measurements (errors are left out)."""
    usable = [m for m in measurements if m.error is None]
    gaps = [gap for m in usable for gap in m.gaps]
    max_gap = max(gaps, default=0.0)
    worst = max(usable, key=lambda m: m.max_gap, default=None)
    by_golden: dict[str, list[Measurement]] = {}
    for m in usable:
        by_golden.setdefault(m.golden, []).append(m)
    decided = {
        name: [m.identical for m in ms if m.identical is not None] for name, ms in by_golden.items()
    }
    judged = {name: all(flags) for name, flags in decided.items() if flags}
    failing = sorted(
        name for name, ms in by_golden.items() if max(m.max_gap for m in ms) > current_tolerance
    )
    return ModelCalibration(
        model=model,
        goldens=tuple(path for path, _ in records),
        measurements=tuple(measurements),
        current_tolerance=current_tolerance,
        recommended=recommend(max_gap),
        max_gap=max_gap,
        p999=percentile(gaps, 99.9),
        p99=percentile(gaps, 99),
        steps=len(gaps),
        identical_share=(sum(judged.values()) / len(judged)) if judged else None,
        failing_now=tuple(failing),
        fragile=tuple(fragile_goldens(records, noise=max_gap)),
        worst=worst if worst is not None and worst.max_gap > 0 else None,
    )


def fragile_goldens(records: Sequence[tuple[str, GoldenRecord]], *, noise: float) -> list[Fragile]:
    """Goldens whose own smallest margin (top-1 over top-2 in the golden run) is below ``noise``,
    the largest benign gap: a runner whose numbers move by that much may flip them."""
    found: list[Fragile] = []
    for path, record in records:
        near = near_tie(record)
        if near is not None and near[0] < noise:
            margin, step, top = near
            found.append(Fragile(path, margin, step, top))
    return sorted(found, key=lambda f: f.margin)


def near_tie(
    record: GoldenRecord,
) -> tuple[float, int | None, tuple[tuple[str, float], ...]] | None:
    """A golden's smallest margin, where it is and the top choices there (None: nothing to rate)."""
    if record.kind == "label" and record.label_logprobs:
        ranked = sorted(record.label_logprobs.items(), key=lambda item: -item[1])
        if len(ranked) < 2:
            return None
        return ranked[0][1] - ranked[1][1], None, tuple(ranked)
    steps = [(index, step) for index, step in enumerate(record.steps) if len(step.top) >= 2]
    if not steps:
        return None
    index, step = min(steps, key=lambda item: item[1].margin)
    return step.margin, index, tuple((t.text, t.logprob) for t in step.top)


# -- triage of a failing golden ------------------------------------------------------------------


class TriageLabel(StrEnum):
    NUMERICAL = "numerical"
    BEHAVIOURAL = "behavioural"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class Triage:
    """Whether a failing golden's departure is within the benign spread measured here."""

    label: TriageLabel
    benign_gap: float | None  # G: the largest gap of this golden under the benign variants
    run_gap: float  # H: this run's largest gap of the golden tokens
    step: int | None  # S: where this run departs most (None for labels)
    variants: tuple[str, ...]  # the variants that ran
    unavailable: tuple[str, ...] = ()  # "name: why" of those that could not
    measurements: tuple[Measurement, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label.value,
            "benign_gap": self.benign_gap,
            "run_gap": _finite(self.run_gap),
            "step": self.step,
            "variants": list(self.variants),
            "unavailable": list(self.unavailable),
        }


def triage(
    run_gap: float,
    step: int | None,
    measurements: Sequence[Measurement],
    *,
    unavailable: Sequence[str] = (),
) -> Triage:
    """Numerical when this run's gap H is within ``SAFETY_FACTOR`` times the largest benign gap
    G of the same golden (the margin calibration recommends over the same noise); behavioural
    when it departs beyond that; undecided when no variant could be measured."""
    usable = [m for m in measurements if m.error is None]
    variants = tuple(dict.fromkeys(m.variant for m in usable))
    if not usable:
        return Triage(TriageLabel.UNDECIDED, None, run_gap, step, (), tuple(unavailable))
    benign = max(m.max_gap for m in usable)
    label = TriageLabel.NUMERICAL if run_gap <= benign * SAFETY_FACTOR else TriageLabel.BEHAVIOURAL
    return Triage(label, benign, run_gap, step, variants, tuple(unavailable), tuple(measurements))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


__all__ = [
    "SAFETY_FACTOR",
    "TOLERANCE_FLOOR",
    "Fragile",
    "Measurement",
    "ModelCalibration",
    "Triage",
    "TriageLabel",
    "calibrate",
    "fragile_goldens",
    "near_tie",
    "percentile",
    "recommend",
    "triage",
]
