"""What a golden of each kind holds and how its part of the file reads: one module per kind.

Every kind implements ``KindFormat`` and is registered once in ``FORMATS``; ``file_format``
writes the envelope (format version, kind, model, request, fingerprint) and asks the kind for
the rest, ``record_of`` asks each kind in turn whether it stores a live value. How a kind is
compared, explained and replayed is its other half, ``drift/kinds/`` (the comparison's data,
``drift.verdict``, lives above this folder). A new kind: one module here, one in
``drift/kinds/``, a line in each registry and its part of ``golden.schema.json``
(``tests/goldens/test_golden_kinds.py`` checks that they agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pytest_smallmodel.goldens.document import GoldenFiles
from pytest_smallmodel.goldens.kinds import (
    embedding,
    evaluation,
    extraction,
    generation,
    label,
    text,
    value,
)
from pytest_smallmodel.goldens.records import GoldenRecord


class KindFormat(Protocol):
    """One kind of golden: which live values it stores, and its fields of the golden file."""

    @property
    def kind(self) -> str:
        """The file's ``kind`` and the key in ``FORMATS``."""

    @property
    def model_result(self) -> bool:
        """A model made it: the file names the model, the request and the fingerprint."""

    @property
    def stores(self) -> tuple[type, ...]:
        """The live values a test asserted that it stores (asked in registry order, so a kind
        may take what a later one would too)."""

    def record(self, value: Any) -> GoldenRecord:
        """The record a live value of this kind is stored as."""

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        """The fields a reviewer reads first, before the format version (``files``: the whole
        file format, for a kind that holds other goldens)."""

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        """The kind's own fields after the kind (a model result's: between the request and the
        fingerprint)."""

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        """The record of a schema-valid document (``common``: model, sha256, request and
        fingerprint as read); a ``DocumentProblem`` when two of its fields disagree."""

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        """What in the record does not follow from what is compared, or None."""


# The kinds a model call is stored as (an evaluation's cases hold one each).
_MODEL_RESULTS: tuple[KindFormat, ...] = (
    generation.FORMAT,
    extraction.ExtractionFormat(generation.FORMAT),  # read and checked as a generation
    label.FORMAT,
    embedding.FORMAT,
)
# Registry order is the order ``record_of`` asks in and the order errors list the kinds.
FORMATS: Mapping[str, KindFormat] = {
    kind.kind: kind
    for kind in (
        *_MODEL_RESULTS,
        # Before text and value, which would take a report as a plain value.
        evaluation.EvaluationFormat(_MODEL_RESULTS),
        text.FORMAT,
        value.FORMAT,
    )
}


def record_of(value: object) -> GoldenRecord:
    """The golden record a live result (or a plain value) would be stored as."""
    kind = next(kind for kind in FORMATS.values() if isinstance(value, kind.stores))
    return kind.record(value)


__all__ = ["FORMATS", "KindFormat", "record_of"]
