"""The pure half of calibration and triage: measured gaps -> tolerance, near-ties, a label."""

from __future__ import annotations

import math

import pytest

from pytest_smallmodel.common.results import Step, TokenLogprob
from pytest_smallmodel.drift.calibration import (
    SAFETY_FACTOR,
    TOLERANCE_FLOOR,
    Measurement,
    TriageLabel,
    calibrate,
    percentile,
    recommend,
    triage,
)
from pytest_smallmodel.goldens.records import GoldenRecord


def generation(*margins: float) -> GoldenRecord:
    """A golden whose step i has top-1 over top-2 margin ``margins[i]``."""
    steps = tuple(
        Step(
            10 + i,
            f"t{i}",
            -0.1,
            (TokenLogprob(10 + i, f"t{i}", -0.1), TokenLogprob(99, "x", -0.1 - m)),
        )
        for i, m in enumerate(margins)
    )
    return GoldenRecord(
        kind="generation", model="m", tokens=tuple(s.token for s in steps), steps=steps
    )


def label(scores: dict[str, float]) -> GoldenRecord:
    return GoldenRecord(
        kind="label", model="m", label=max(scores, key=lambda k: scores[k]), label_logprobs=scores
    )


def test_recommendation_is_the_largest_gap_times_the_factor_rounded_up_with_a_floor() -> None:
    assert recommend(0.0) == TOLERANCE_FLOOR
    assert recommend(0.3) == pytest.approx(0.3 * SAFETY_FACTOR)
    assert recommend(0.3331) == pytest.approx(math.ceil(0.3331 * SAFETY_FACTOR * 100) / 100)
    assert recommend(0.3331) >= 0.3331 * SAFETY_FACTOR


def test_percentile_interpolates_like_numpy() -> None:
    values = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.0
    assert percentile(values, 99) == pytest.approx(4 - 0.04)
    assert percentile([], 99) == 0.0


def test_calibration_summarises_gaps_fragile_goldens_and_todays_failures() -> None:
    records = [
        ("g/a.json", generation(2.0, 0.05, 1.5)),
        ("g/b.json", label({"yes": -0.1, "no": -3.0})),
    ]
    measurements = [
        Measurement("g/a.json", "batched pass", gaps=(0.0, 0.2, 0.0), worst_step=1, identical=True),
        Measurement("g/a.json", "flash", gaps=(0.0, 0.4, 0.0), worst_step=1, identical=False),
        Measurement("g/b.json", "batched pass", gaps=(0.0,), identical=True),
        Measurement("g/b.json", "flash", error="could not load"),
    ]
    result = calibrate("m", records, measurements, current_tolerance=0.3)
    assert result.max_gap == pytest.approx(0.4)
    assert result.recommended == pytest.approx(0.8)
    assert result.steps == 7  # the errored measurement adds nothing
    assert result.identical_share == pytest.approx(0.5)  # a flipped under flash, b never
    assert result.failing_now == ("g/a.json",)
    assert result.worst is not None and result.worst.variant == "flash"
    fragile = result.fragile
    assert [(f.golden, f.step) for f in fragile] == [("g/a.json", 1)]  # 0.05 < 0.4; b's 2.9 not
    assert fragile[0].top[0] == ("t1", -0.1)
    data = result.to_dict()
    assert data["recommended_tolerance"] == pytest.approx(0.8)
    assert data["fragile"][0]["step"] == 1


def test_triage_is_numerical_within_the_benign_spread_and_behavioural_beyond() -> None:
    benign = [
        Measurement("g", "flash", gaps=(0.1, 0.6)),
        Measurement("g", "threads=1", gaps=(0.0,)),
    ]
    inside = triage(0.6 * SAFETY_FACTOR, 3, benign)
    assert inside.label is TriageLabel.NUMERICAL and inside.benign_gap == pytest.approx(0.6)
    beyond = triage(0.6 * SAFETY_FACTOR + 0.01, 3, benign)
    assert beyond.label is TriageLabel.BEHAVIOURAL and beyond.step == 3
    assert beyond.variants == ("flash", "threads=1")
    assert triage(5.0, 1, [Measurement("g", "flash", error="x")]).label is TriageLabel.UNDECIDED
