"""The interval and test formulas, written out (tests compare them with scipy's binomtest).

Wilson's score interval stays inside [0, 1] and behaves at 0 and n successes, where the normal
approximation does not; the exact McNemar test is the two-sided binomial test on the discordant
pairs, the paired comparison of two models scored on the same cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_smallmodel.common.errors import SmallModelError

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


class EvaluationError(SmallModelError):
    """An evaluation was asked for something it cannot give (no cases, a figure not measured,
    a threshold that is not a finite number): the message says which and why."""

    exit_code = 1


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The score interval of a binomial proportion ``successes / total`` (95 % by default)."""
    if total <= 0:
        raise EvaluationError("an interval needs at least one case; this figure has none")
    if not 0 <= successes <= total:
        raise EvaluationError(f"{successes} successes out of {total} is not a proportion")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided p-value that two paired classifiers are equally accurate, from the cases only
    the first got right and those only the second got right (ties carry no information)."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
    return float(min(1.0, 2 * tail))


@dataclass(frozen=True)
class Estimate:
    """A proportion with its 95 % Wilson interval; ``.lower`` and ``.upper`` are ``Figure``s, so
    a gate written as ``assert estimate.lower >= 0.8`` fails with the whole story."""

    name: str
    successes: int
    total: int

    @property
    def estimate(self) -> Figure:
        if self.total == 0:
            raise EvaluationError(f"{self.name}: no cases were scored, so there is no estimate")
        return Figure(self.successes / self.total, self, "estimate")

    @property
    def lower(self) -> Figure:
        return Figure(wilson_interval(self.successes, self.total)[0], self, "lower")

    @property
    def upper(self) -> Figure:
        return Figure(wilson_interval(self.successes, self.total)[1], self, "upper")

    def describe(self) -> str:
        if self.total == 0:
            return f"{self.name}: not measured (no cases)"
        low, high = wilson_interval(self.successes, self.total)
        return (
            f"{self.name} {self.successes / self.total:.3f} ({self.successes}/{self.total}; "
            f"95 % interval {low:.3f}-{high:.3f})"
        )

    def to_dict(self) -> dict[str, object]:
        if self.total == 0:
            return {"successes": 0, "total": 0}
        low, high = wilson_interval(self.successes, self.total)
        return {
            "successes": self.successes,
            "total": self.total,
            "estimate": self.successes / self.total,
            "lower": low,
            "upper": high,
        }


class Figure(float):
    """A number from an evaluation that remembers where it came from (``source``, which has a
    ``describe()``), so that a failed gate can print the figure, its interval and the cases
    behind it (the pytest plugin's ``pytest_assertrepr_compare``). Comparing it with a
    threshold that is not a finite number is an error, never a silent pass."""

    source: object
    part: str

    def __new__(cls, value: float, source: object, part: str) -> Figure:
        figure = super().__new__(cls, value)
        figure.source = source
        figure.part = part
        return figure

    def _threshold(self, other: object) -> float:
        if isinstance(other, bool) or not isinstance(other, int | float):
            raise EvaluationError(f"a gate compares a figure with a number, not {other!r}")
        if not math.isfinite(other):
            raise EvaluationError(
                f"the threshold {other!r} for {self.part} is not a finite number: a gate "
                "against it could never fail"
            )
        return float(other)

    def __ge__(self, other: object) -> bool:
        return float(self) >= self._threshold(other)

    def __gt__(self, other: object) -> bool:
        return float(self) > self._threshold(other)

    def __le__(self, other: object) -> bool:
        return float(self) <= self._threshold(other)

    def __lt__(self, other: object) -> bool:
        return float(self) < self._threshold(other)

    def __hash__(self) -> int:
        return float.__hash__(self)

    def __reduce__(self) -> tuple[object, ...]:
        return (float, (float(self),))
