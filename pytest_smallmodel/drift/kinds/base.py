"""What a kind's comparison rule is handed, and what its replay talks to.

``Check`` is the shared part of every comparison (``drift.rules``): it has decided the mode
(exact, strict or tolerance) from the model, the request and the fingerprint, and it turns what
a kind found into the ``Verdict``. ``Replayer`` is the few methods of the model handle a kind
re-issues a stored request through, so that no kind imports the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import BatchedCheck
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
