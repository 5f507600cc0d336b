"""What a kind's comparison rule is handed, and what its replay talks to.

``Check`` is the shared part of every comparison (``drift.rules``): it has decided the mode
(exact, strict or tolerance) from the model, the request and the fingerprint, and it turns what
a kind found into the ``Verdict``. ``Replayer`` is the few methods of the model handle a kind
re-issues a stored request through, so that no kind imports the engine. ``KindDefaults`` and
``PlainKind`` are what kinds answer alike, written once.

This module imports nothing of the package at run time (its names are types only), so a kind
importing its bases adds no step to the chain of imports that run (``tests/test_architecture``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import BatchedCheck, Generation
    from pytest_smallmodel.drift.verdict import FieldChange, Mode, Outcome, Reason, Verdict
    from pytest_smallmodel.goldens.records import GoldenRecord


class Check(Protocol):
    """One comparison of a golden with a live result, as far as the shared rules took it."""

    @property
    def golden(self) -> GoldenRecord: ...

    @property
    def current(self) -> GoldenRecord:
        """The live result as the record it would be stored as."""

    @property
    def live(self) -> object:
        """The live result itself (a generation's scorer, batched check and full steps)."""

    @property
    def golden_path(self) -> str: ...

    @property
    def mode(self) -> Mode | None: ...

    @property
    def tolerant(self) -> bool:
        """Tolerance mode: only the fingerprint changed, and not --smallmodel-strict."""

    @property
    def tolerance(self) -> float: ...

    @property
    def min_cosine(self) -> float: ...

    @property
    def strict(self) -> bool:
        """--smallmodel-strict: a changed fingerprint requires identical output too."""

    def fingerprint_changes(self) -> tuple[FieldChange, ...]:
        """What changed in the fingerprint (and the prompt's token ids) since the golden."""

    def compare_nested(self, golden: GoldenRecord, live: object, golden_path: str) -> Verdict:
        """The whole comparison of a golden that this one holds (an evaluation's case calls),
        under the same policy."""

    def identical(self) -> Verdict: ...

    def decide(self, outcome: Outcome, passed: bool, reason: Reason, **found: Any) -> Verdict: ...

    def not_tolerated(self) -> Outcome:
        """A difference outside tolerance mode: a mismatch, or drift if the fingerprint moved."""

    def judge(self, within: bool, outside_tolerance_mode: Reason, **found: Any) -> Verdict:
        """A difference: it fails outside tolerance mode; in tolerance mode it passes
        ``within`` the tolerance and drifts beyond it."""

    def corrupt(self, problem: str) -> Verdict:
        """The golden cannot be used: what it says does not follow from what is compared."""

    def batched_check(self) -> BatchedCheck | None:
        """The engine's batched teacher-forced check of this golden's tokens, if it made one."""


# The headline of any verdict (``explanation.headline``), handed to a kind's evidence: an
# evaluation's lists the verdict of each case's call.
Describe = Callable[["Verdict"], str]


class Replayer(Protocol):
    """The model handle's methods a stored request is sent again through."""

    def generate(
        self, prompt: str, *, max_tokens: int, stop: str | Sequence[str] | None = None
    ) -> object: ...

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None = None,
    ) -> object: ...

    def extract(
        self,
        prompt_or_messages: str | Sequence[Mapping[str, Any]],
        schema: Mapping[str, Any],
        *,
        max_tokens: int,
    ) -> object: ...

    def classify(
        self, prompt_or_messages: str | Sequence[Mapping[str, Any]], labels: Sequence[str]
    ) -> object: ...

    def embed(self, text: str) -> object: ...


class KindDefaults:
    """What a kind (``drift.kinds.GoldenKindHandler``) answers unless it says otherwise."""

    # Only an evaluation words the shared reasons itself (it counts its cases in each).
    shared_wording = True
    # A plain value or an evaluation has no request of its own to send again.
    requests: tuple[str, ...] = ()

    def forced_result(self, generation: Generation) -> object | None:
        # Only a generation's tokens (and an extraction's, which is one) stand for its result.
        return None


class PlainKind(KindDefaults):
    """A plain value a test asserted (``text``, ``value``): no model made it, so it is equal to
    its golden or differs, whatever ran the test, and there is no request to replay.

    A subclass names the record's field it compares, the reason a difference is given, and how
    the value reads (``summary``, ``diff``, and ``changed_fields`` under the diff).
    """

    compared: str  # the GoldenRecord field
    differs: Reason

    def compare(self, check: Check) -> Verdict:
        if getattr(check.golden, self.compared) == getattr(check.current, self.compared):
            return check.identical()
        # A plain value has no fingerprint that could have moved: this is a mismatch.
        return check.decide(check.not_tolerated(), False, self.differs)

    def headline(self, verdict: Verdict) -> str:
        return "value differs from the golden"

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        golden, current = verdict.golden, verdict.current
        assert golden is not None and current is not None
        return [
            "diff (golden -> this run):",
            *self.diff(golden, current),
            *self.changed_fields(golden, current),
        ]

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        raise NotImplementedError

    def changed_fields(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return []  # the diff says all

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        raise AssertionError("a plain value has no request (requests = ())")
