"""How each kind of golden is compared, explained and replayed: one module per kind.

Every kind implements ``GoldenKindHandler`` and is registered once in ``KINDS`` (the same keys,
in the same order, as ``goldens.kinds.FORMATS``, its file half). ``drift.rules`` runs the shared
check (kind, model, request, fingerprint: the mode) and hands it to the kind's ``compare``;
``drift.explanation`` words the shared reasons and asks the kind for the rest; ``smallmodel
compare`` replays a stored request through the kind (``replay_request``).
``tests/goldens/test_golden_kinds.py`` checks the registries and ``golden.schema.json`` agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.drift.kinds import (
    embedding,
    evaluation,
    extraction,
    generation,
    label,
    text,
    value,
)

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import Generation
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer
    from pytest_smallmodel.drift.verdict import Verdict
    from pytest_smallmodel.goldens.records import GoldenRecord


class GoldenKindHandler(Protocol):
    """One kind of golden, from the comparison on."""

    @property
    def kind(self) -> str: ...

    @property
    def shared_wording(self) -> bool:
        """``explanation`` words the reasons every kind shares (identical, model or request
        changed); False: this kind's headline and evidence word them too (an evaluation counts
        its cases in each)."""

    @property
    def requests(self) -> tuple[str, ...]:
        """The request kinds (``Request.kind``) of its goldens that ``replay`` sends again."""

    def compare(self, check: Check) -> Verdict:
        """This kind's rule, once the shared check decided the mode (text and value: at once)."""

    def forced_result(self, generation: Generation) -> object | None:
        """The live result a generation of the golden's tokens stands for, when this kind is
        checked with the engine's batched teacher-forced pass (tolerance mode); else None."""

    def headline(self, verdict: Verdict) -> str:
        """The headline of a verdict this kind's rule decided."""

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        """The lines under it: the numbers and diffs that decided (``describe``: the headline
        of any verdict, for a kind whose verdict holds others)."""

    def summary(self, record: GoldenRecord) -> list[str]:
        """The output as lines, to diff against a golden of another kind."""

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        """The output diff against a result of the same kind, with its heading."""

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        """Send the stored request (one of ``requests``) to ``model`` again; the live result."""


# The order of goldens.kinds.FORMATS.
KINDS: Mapping[str, GoldenKindHandler] = {
    "generation": generation.KIND,
    "extraction": extraction.ExtractionKind(generation.KIND),  # judged as the generation it is
    "label": label.KIND,
    "embedding": embedding.KIND,
    "evaluation": evaluation.KIND,
    "text": text.KIND,
    "value": value.KIND,
}


def replay_request(model: Replayer, record: GoldenRecord) -> object:
    """Send a golden's stored request to ``model`` again, through its kind."""
    kind = KINDS[record.kind]
    request_kind = (record.request or {}).get("kind")
    if request_kind not in kind.requests:
        raise EngineError(f"golden request kind {request_kind!r} cannot be replayed")
    return kind.replay(model, record)


__all__ = ["KINDS", "GoldenKindHandler", "replay_request"]
