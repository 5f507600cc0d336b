"""The interval and test formulas against scipy's binomtest."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from pytest_smallmodel.evaluation.stats import (
    Estimate,
    EvaluationError,
    mcnemar_exact,
    wilson_interval,
)


@pytest.mark.parametrize("total", [1, 2, 5, 12, 40, 97, 400])
def test_wilson_interval_matches_scipy(total: int) -> None:
    for successes in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        ours = wilson_interval(successes, total)
        theirs = binomtest(successes, total).proportion_ci(0.95, method="wilson")
        assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-9), (successes, total)


@pytest.mark.parametrize(
    ("only_first", "only_second"), [(0, 0), (0, 1), (1, 0), (3, 9), (7, 7), (12, 2), (0, 25)]
)
def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs(
    only_first: int, only_second: int
) -> None:
    expected = (
        1.0
        if only_first + only_second == 0
        else binomtest(only_first, only_first + only_second, 0.5).pvalue
    )
    assert mcnemar_exact(only_first, only_second) == pytest.approx(expected, rel=1e-9)


def test_an_interval_over_no_cases_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="needs at least one case"):
        wilson_interval(0, 0)
    empty = Estimate("recall of 'x'", 0, 0)
    with pytest.raises(EvaluationError, match="no cases were scored"):
        _ = empty.estimate
    with pytest.raises(EvaluationError, match="needs at least one case"):
        _ = empty.lower
    assert "not measured" in empty.describe()


def test_a_gate_against_a_non_finite_threshold_is_an_error() -> None:
    lower = Estimate("accuracy", 30, 40).lower
    assert lower >= 0.5 and not lower >= 0.9
    for threshold in (math.inf, -math.inf, math.nan):
        with pytest.raises(EvaluationError, match="is not a finite number"):
            _ = lower >= threshold
    with pytest.raises(EvaluationError, match="compares a figure with a number"):
        _ = lower >= "0.8"  # type: ignore[operator]
